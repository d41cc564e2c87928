"""Our GPT and BERT against Hugging Face GPT-2 and BERT: same weights must give the same logits."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from model_foundry.errors import UserError  # noqa: E402
from model_foundry.models import GPT, Bert  # noqa: E402
from model_foundry.models.hf_conversion import (bert_config_from_hf, bert_config_to_hf,  # noqa: E402
                                                bert_state_dict_from_hf_bert, bert_state_dict_to_hf_bert,
                                                gpt_config_from_hf, gpt_config_to_hf, gpt_state_dict_from_hf_gpt2,
                                                gpt_state_dict_to_hf_gpt2)

VOCAB, LENGTH = 101, 20


def scramble(model: torch.nn.Module) -> torch.nn.Module:
    """Large random weights everywhere (LayerNorms included), so logits differ by position and token
    and a mapping mistake cannot hide behind a near-zero initialisation."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.3)
    return model.eval()


@pytest.fixture
def hf_gpt2():
    config = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=VOCAB, n_positions=64,
                                     attn_implementation="eager")
    return scramble(transformers.GPT2LMHeadModel(config))


@pytest.fixture
def hf_bert():
    config = transformers.BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=64,
                                     attn_implementation="eager")
    return scramble(transformers.BertForMaskedLM(config))


@pytest.fixture
def batch():
    generator = torch.Generator().manual_seed(1)
    ids = torch.randint(0, VOCAB, (3, LENGTH), generator=generator)
    mask = torch.ones(3, LENGTH, dtype=torch.long)
    mask[1, 12:] = 0  # right padding
    mask[2, 5:] = 0
    types = torch.randint(0, 2, (3, LENGTH), generator=generator)
    return ids, mask, types


def ours_from_gpt2(hf_model) -> GPT:
    config = gpt_config_from_hf(hf_model.config.to_dict())
    model = GPT(config)
    model.load_state_dict(gpt_state_dict_from_hf_gpt2(hf_model.state_dict(), config))
    return model.eval()


def ours_from_bert(hf_model) -> Bert:
    config = bert_config_from_hf(hf_model.config.to_dict())
    model = Bert(config)
    model.load_state_dict(bert_state_dict_from_hf_bert(hf_model.state_dict(), config))
    return model.eval()


def max_diff_at_real_positions(a: torch.Tensor, b: torch.Tensor, mask: torch.Tensor) -> float:
    return float(((a - b).abs() * mask[..., None]).max())


@torch.no_grad()
def test_gpt2_logits_match(hf_gpt2, batch):
    ids, mask, _ = batch
    ours = ours_from_gpt2(hf_gpt2)
    expected = hf_gpt2(ids).logits
    assert expected.std() > 0.5  # a meaningful scale for the tolerance below
    assert (ours(ids).logits - expected).abs().max() < 1e-4
    padded = max_diff_at_real_positions(ours(ids, attention_mask=mask).logits,
                                        hf_gpt2(ids, attention_mask=mask).logits, mask)
    assert padded < 1e-4


@torch.no_grad()
def test_bert_logits_match(hf_bert, batch):
    ids, mask, types = batch
    ours = ours_from_bert(hf_bert)
    expected = hf_bert(ids, token_type_ids=types).logits
    assert expected.std() > 0.5
    assert (ours(ids, token_type_ids=types).logits - expected).abs().max() < 1e-4
    padded = max_diff_at_real_positions(ours(ids, attention_mask=mask, token_type_ids=types).logits,
                                        hf_bert(ids, attention_mask=mask, token_type_ids=types).logits, mask)
    assert padded < 1e-4


@torch.no_grad()
def test_bert_hidden_states_follow_hf_layout(hf_bert, batch):
    ids, _, _ = batch
    ours = ours_from_bert(hf_bert)(ids, output_hidden_states=True).hidden_states
    theirs = hf_bert(ids, output_hidden_states=True).hidden_states
    assert len(ours) == len(theirs) == 3
    for a, b in zip(ours, theirs):
        assert (a - b).abs().max() < 1e-4


def assert_same_state(actual: dict, expected: dict) -> None:
    assert set(actual) == set(expected)
    for key, tensor in expected.items():
        assert torch.equal(actual[key], tensor), key


def test_gpt2_state_dict_round_trip(hf_gpt2):
    config = gpt_config_from_hf(hf_gpt2.config.to_dict())
    ours = gpt_state_dict_from_hf_gpt2(hf_gpt2.state_dict(), config)
    assert_same_state(gpt_state_dict_to_hf_gpt2(ours, config), hf_gpt2.state_dict())


def test_bert_state_dict_round_trip(hf_bert):
    config = bert_config_from_hf(hf_bert.config.to_dict())
    ours = bert_state_dict_from_hf_bert(hf_bert.state_dict(), config)
    assert_same_state(bert_state_dict_to_hf_bert(ours, config), hf_bert.state_dict())


@torch.no_grad()
def test_our_gpt_exports_to_transformers(batch):
    ids, _, _ = batch
    ours = scramble(GPT(gpt_config_from_hf({"vocab_size": VOCAB, "n_layer": 2, "n_head": 4, "n_embd": 32,
                                            "n_positions": 32, "resid_pdrop": 0.0})))
    hf_config = transformers.GPT2Config(**gpt_config_to_hf(ours.config))
    exported = transformers.GPT2LMHeadModel(hf_config).eval()
    exported.load_state_dict(gpt_state_dict_to_hf_gpt2(ours.state_dict(), ours.config))
    assert (exported(ids).logits - ours(ids).logits).abs().max() < 1e-4


@torch.no_grad()
def test_our_bert_exports_to_transformers(batch):
    ids, _, types = batch
    ours = scramble(Bert(bert_config_from_hf({"vocab_size": VOCAB, "num_hidden_layers": 2, "hidden_size": 32,
                                              "num_attention_heads": 4, "intermediate_size": 48,
                                              "max_position_embeddings": 32, "hidden_dropout_prob": 0.0})))
    hf_config = transformers.BertConfig(**bert_config_to_hf(ours.config))
    exported = transformers.BertForMaskedLM(hf_config).eval()
    exported.load_state_dict(bert_state_dict_to_hf_bert(ours.state_dict(), ours.config))
    difference = exported(ids, token_type_ids=types).logits - ours(ids, token_type_ids=types).logits
    assert difference.abs().max() < 1e-4


def test_layouts_transformers_cannot_express_are_refused():
    rotary = gpt_config_from_hf({"vocab_size": VOCAB, "n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 32})
    rotary.positional = "rotary"
    with pytest.raises(UserError, match="positional"):
        gpt_config_to_hf(rotary)
    with pytest.raises(UserError, match="scale_attn_by_inverse_layer_idx"):
        gpt_config_from_hf({"vocab_size": VOCAB, "n_layer": 1, "n_head": 2, "n_embd": 32, "n_positions": 32,
                            "scale_attn_by_inverse_layer_idx": True})


def test_missing_layer_is_a_clear_error(hf_gpt2):
    config = gpt_config_from_hf({**hf_gpt2.config.to_dict(), "n_layer": 3})
    with pytest.raises(UserError, match=r"transformer\.h\.2\."):
        gpt_state_dict_from_hf_gpt2(hf_gpt2.state_dict(), config)
