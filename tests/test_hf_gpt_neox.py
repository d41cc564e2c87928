"""Our rotary GPT against Hugging Face GPT-NeoX: same weights must give the same logits."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from model_foundry.errors import UserError  # noqa: E402
from model_foundry.models import GPT, GPTConfig  # noqa: E402
from model_foundry.models.hf_gpt_neox import (gpt_config_from_hf_gpt_neox, gpt_config_to_hf_gpt_neox,  # noqa: E402
                                              gpt_state_dict_from_hf_gpt_neox, gpt_state_dict_to_hf_gpt_neox,
                                              head_by_head_order)
from tests.test_hf_parity import VOCAB, assert_same_state, batch, max_diff_at_real_positions, scramble  # noqa: E402, F401

NEOX = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 64,
        "vocab_size": VOCAB, "max_position_embeddings": 64, "use_parallel_residual": False,
        "tie_word_embeddings": True, "hidden_act": "gelu_new",
        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 1.0}}


@pytest.fixture
def hf_gpt_neox():
    config = transformers.GPTNeoXConfig(**NEOX, attn_implementation="eager")
    return scramble(transformers.GPTNeoXForCausalLM(config))


def ours_from_gpt_neox(hf_model) -> GPT:
    config = gpt_config_from_hf_gpt_neox(hf_model.config.to_dict())
    model = GPT(config)
    model.load_state_dict(gpt_state_dict_from_hf_gpt_neox(hf_model.state_dict(), config))
    return model.eval()


def test_the_fused_projection_goes_head_by_head():
    # 2 heads of 2 channels: ours is [q0 q1 | q2 q3 | k0 k1 | k2 k3 | v0 v1 | v2 v3] by row
    assert head_by_head_order(2, 2).tolist() == [0, 1, 4, 5, 8, 9, 2, 3, 6, 7, 10, 11]


@torch.no_grad()
def test_gpt_neox_weights_in_our_gpt_give_its_logits(hf_gpt_neox, batch):
    ids, mask, _ = batch
    ours = ours_from_gpt_neox(hf_gpt_neox)
    assert ours.config.positional == "rotary"
    expected = hf_gpt_neox(ids, attention_mask=mask).logits
    assert expected.std() > 0.5  # a meaningful scale for the tolerance below
    assert max_diff_at_real_positions(ours(ids, mask).logits, expected, mask) < 1e-4


@torch.no_grad()
def test_our_rotary_gpt_exports_to_gpt_neox(batch):
    ids, mask, _ = batch
    ours = scramble(GPT(GPTConfig(vocab_size=VOCAB, n_layer=2, n_head=4, n_embd=32, block_size=32, dropout=0.0,
                                  positional="rotary")))
    hf_config = transformers.GPTNeoXConfig(**gpt_config_to_hf_gpt_neox(ours.config), attn_implementation="eager")
    hf_model = transformers.GPTNeoXForCausalLM(hf_config)
    hf_model.load_state_dict(gpt_state_dict_to_hf_gpt_neox(ours.state_dict(), ours.config), strict=True)
    expected = ours(ids, mask).logits
    assert max_diff_at_real_positions(hf_model.eval()(ids, attention_mask=mask).logits, expected, mask) < 1e-4


def test_gpt_neox_state_dict_round_trip(hf_gpt_neox):
    config = gpt_config_from_hf_gpt_neox(hf_gpt_neox.config.to_dict())
    ours = gpt_state_dict_from_hf_gpt_neox(hf_gpt_neox.state_dict(), config)
    assert_same_state(gpt_state_dict_to_hf_gpt_neox(ours, config), hf_gpt_neox.state_dict())


@pytest.mark.parametrize(("change", "key"), [({"use_parallel_residual": True}, "use_parallel_residual"),
                                             ({"tie_word_embeddings": False}, "tie_word_embeddings"),
                                             ({"rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                                                   "partial_rotary_factor": 0.25}},
                                              "partial_rotary_factor")])
def test_a_gpt_neox_our_gpt_cannot_compute_is_refused_by_key(change, key):
    config = transformers.GPTNeoXConfig(**{**NEOX, **change}).to_dict()
    with pytest.raises(UserError, match=key):
        gpt_config_from_hf_gpt_neox(config)


def test_gpt_neox_defaults_left_out_of_config_json_are_read_as_gpt_neox_means_them():
    # config.json keeps only what differs from the class defaults: no use_parallel_residual means True
    with pytest.raises(UserError, match="use_parallel_residual"):
        gpt_config_from_hf_gpt_neox({k: v for k, v in NEOX.items() if k != "use_parallel_residual"})


def test_a_gpt_layout_gpt_neox_cannot_express_is_refused_by_key():
    with pytest.raises(UserError, match="norm_position"):
        gpt_config_to_hf_gpt_neox(GPTConfig(vocab_size=VOCAB, n_layer=1, n_head=2, n_embd=16, block_size=16,
                                            positional="rotary", norm_position="post"))
