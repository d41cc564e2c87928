"""Our rotary BERT (the default) against Hugging Face RoFormer: same weights must give the same logits."""
from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")

from model_foundry.errors import UserError  # noqa: E402
from model_foundry.models import Bert, BertConfig  # noqa: E402
from model_foundry.models.hf_roformer import (bert_config_from_hf_roformer, bert_config_to_hf_roformer,  # noqa: E402
                                              bert_state_dict_from_hf_roformer, bert_state_dict_to_hf_roformer,
                                              neighbour_pair_order)
from tests.test_hf_parity import VOCAB, assert_same_state, batch, max_diff_at_real_positions, scramble  # noqa: E402, F401


@pytest.fixture
def hf_roformer():
    config = transformers.RoFormerConfig(hidden_size=32, embedding_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, vocab_size=VOCAB, max_position_embeddings=64,
                                         attn_implementation="eager")
    model = transformers.RoFormerForMaskedLM(config)
    table = model.roformer.encoder.embed_positions.weight.detach().clone()  # fixed sines, not a weight to scramble
    scramble(model)
    with torch.no_grad():
        model.roformer.encoder.embed_positions.weight.copy_(table)
    return model


def ours_from_roformer(hf_model) -> Bert:
    config = bert_config_from_hf_roformer(hf_model.config.to_dict())
    model = Bert(config)
    model.load_state_dict(bert_state_dict_from_hf_roformer(hf_model.state_dict(), config))
    return model.eval()


def test_each_head_pairs_neighbours_with_the_channels_half_a_head_apart():
    # head of 4 channels: RoFormer's pairs (0, 1), (2, 3) are our pairs (0, 2), (1, 3); the second head likewise
    assert neighbour_pair_order(2, 4).tolist() == [0, 2, 1, 3, 4, 6, 5, 7]


@torch.no_grad()
def test_roformer_weights_in_our_bert_give_its_logits(hf_roformer, batch):
    ids, mask, types = batch
    ours = ours_from_roformer(hf_roformer)
    assert ours.config.positional == "rotary"
    expected = hf_roformer(ids, attention_mask=mask, token_type_ids=types).logits
    assert expected.std() > 0.5  # a meaningful scale for the tolerance below
    assert max_diff_at_real_positions(ours(ids, mask, token_type_ids=types).logits, expected, mask) < 1e-4


@torch.no_grad()
def test_our_rotary_bert_exports_to_roformer(batch):
    ids, mask, types = batch
    ours = scramble(Bert(BertConfig(vocab_size=VOCAB, n_layer=2, n_head=4, n_embd=32, block_size=32, dropout=0.0)))
    hf_model = transformers.RoFormerForMaskedLM(transformers.RoFormerConfig(**bert_config_to_hf_roformer(ours.config),
                                                                            attn_implementation="eager"))
    hf_model.load_state_dict(bert_state_dict_to_hf_roformer(ours.state_dict(), ours.config), strict=True)
    expected = ours(ids, mask, token_type_ids=types).logits
    assert max_diff_at_real_positions(hf_model.eval()(ids, attention_mask=mask, token_type_ids=types).logits,
                                      expected, mask) < 1e-4


def test_the_positions_table_is_the_one_roformer_makes(hf_roformer):
    config = bert_config_from_hf_roformer(hf_roformer.config.to_dict())
    exported = bert_state_dict_to_hf_roformer(ours_from_roformer(hf_roformer).state_dict(), config)
    table = hf_roformer.roformer.encoder.embed_positions.weight
    assert (exported["roformer.encoder.embed_positions.weight"] - table).abs().max() < 1e-6


def test_roformer_state_dict_round_trip(hf_roformer):
    config = bert_config_from_hf_roformer(hf_roformer.config.to_dict())
    ours = bert_state_dict_from_hf_roformer(hf_roformer.state_dict(), config)
    exported = bert_state_dict_to_hf_roformer(ours, config)
    table = "roformer.encoder.embed_positions.weight"
    assert_same_state({k: v for k, v in exported.items() if k != table},
                      {k: v for k, v in hf_roformer.state_dict().items() if k != table})


@pytest.mark.parametrize(("settings", "key"), [({"norm_position": "pre"}, "norm_position"),
                                               ({"positional": "learned"}, "positional"),
                                               ({"type_vocab_size": 0}, "type_vocab_size")])
def test_a_layout_roformer_cannot_express_is_refused_by_key(settings, key):
    config = BertConfig(vocab_size=VOCAB, n_layer=1, n_head=2, n_embd=16, block_size=16, **settings)
    with pytest.raises(UserError, match=key):
        bert_config_to_hf_roformer(config)


def test_a_roformer_that_rotates_values_is_refused():
    config = transformers.RoFormerConfig(hidden_size=16, embedding_size=16, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=32, vocab_size=VOCAB, rotary_value=True).to_dict()
    with pytest.raises(UserError, match="rotary_value"):
        bert_config_from_hf_roformer(config)
