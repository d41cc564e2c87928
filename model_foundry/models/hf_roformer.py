"""Our rotary BERT (the `bert` default) as Hugging Face RoFormer (`RoFormerForMaskedLM`), both ways.

RoFormer is BERT's layout (post-LN, embedding LayerNorm, segment embeddings, the same MLM head)
with rotary positions on each head's query and key and no position table: the function our
default `bert` computes. Both rotate channel pairs by the same angles, position x 10000^(-2i/d)
for pair i of a head of d channels, but the pairs are made differently: RoFormer pairs neighbours
(2i, 2i + 1), we pair channel i with channel i + d/2 (the GPT-NeoX and Llama layout). Reordering
the rows of each head's query and key projections (their output channels) turns one pairing into
the other, and since a query and a key are reordered alike their dot product is unchanged; values
are not rotated (RoFormer's `rotary_value` is off), so nothing else moves.

RoFormer keeps its sine/cosine table as a weight (`roformer.encoder.embed_positions.weight`,
block_size x d: the sines of every pair, then the cosines); the export writes it from the same
angles our rotary embedding uses.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from model_foundry.errors import UserError
from model_foundry.models.bert import BertConfig
from model_foundry.models.hf_conversion import (BERT_OUTSIDE_BLOCKS, StateDict, bert_config_from_layout,
                                                bert_layers_from_hf, bert_layers_to_hf, bert_layout_to_hf,
                                                refuse_hf_features, take, with_prefix)

POSITIONS_TABLE = "roformer.encoder.embed_positions.weight"
# BERT's names outside the blocks, under `roformer.`; RoFormer has no position table to learn.
ROFORMER_OUTSIDE_BLOCKS = [(our, theirs.replace("bert.", "roformer.", 1)) for our, theirs in BERT_OUTSIDE_BLOCKS
                           if our != "backbone.position_embedding.weight"]
ROTARY_BASE = 10000.0


def neighbour_pair_order(n_head: int, head_dim: int) -> Tensor:
    """Row r of RoFormer's query/key projection is row order[r] of ours: in each head, RoFormer's
    channels 2i and 2i + 1 are our channels i and i + head_dim / 2."""
    half = head_dim // 2
    within = torch.arange(head_dim)
    within = torch.where(within % 2 == 0, within // 2, within // 2 + half)
    return torch.cat([head * head_dim + within for head in range(n_head)])


def reorder_query_and_key(hf: StateDict, prefix: str, n_layer: int, order: Tensor) -> None:
    """Reorder, in place, the rows of every layer's query and key weights and biases."""
    for i in range(n_layer):
        for name in ("query", "key"):
            for part in ("weight", "bias"):
                key = f"{prefix}.{i}.attention.self.{name}.{part}"
                hf[key] = take(hf, key, "RoFormer")[order].contiguous()


def positions_table(block_size: int, head_dim: int) -> Tensor:
    """RoFormer's (block_size, head_dim) table: sin of every pair's angle, then cos (see the module)."""
    inverse_frequencies = 1.0 / ROTARY_BASE ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(block_size, dtype=torch.float64), inverse_frequencies)
    return torch.cat((angles.sin(), angles.cos()), dim=-1).to(torch.float32)


def bert_config_to_hf_roformer(config: BertConfig) -> dict:
    """A Hugging Face `RoFormerConfig` dict for our rotary BERT, if its layout is RoFormer's."""
    return {"model_type": "roformer", "architectures": ["RoFormerForMaskedLM"], "embedding_size": config.n_embd,
            "rotary_value": False, **bert_layout_to_hf(config, "rotary", "RoFormer")}


def bert_state_dict_to_hf_roformer(state_dict: Mapping[str, Tensor], config: BertConfig) -> StateDict:
    """A `RoFormerForMaskedLM` state dict from our rotary BERT's (the tied decoder weight may be absent)."""
    head_dim = config.n_embd // config.n_head
    hf = {theirs: take(state_dict, our, "BERT") for our, theirs in ROFORMER_OUTSIDE_BLOCKS}
    hf.update(bert_layers_to_hf(state_dict, "backbone.blocks", "roformer.encoder.layer", config.n_layer, "BERT"))
    reorder_query_and_key(hf, "roformer.encoder.layer", config.n_layer, neighbour_pair_order(config.n_head, head_dim))
    hf[POSITIONS_TABLE] = positions_table(config.block_size, head_dim)
    hf["cls.predictions.decoder.weight"] = hf["roformer.embeddings.word_embeddings.weight"]
    hf["cls.predictions.decoder.bias"] = hf["cls.predictions.bias"]
    return hf


def bert_config_from_hf_roformer(hf_config: Mapping) -> BertConfig:
    """Our rotary `BertConfig` from a Hugging Face RoFormer config dict."""
    refuse_hf_features(hf_config, {"rotary_value": False, "is_decoder": False, "add_cross_attention": False},
                       "RoFormer")
    if hf_config.get("embedding_size", hf_config["hidden_size"]) != hf_config["hidden_size"]:
        raise UserError(f"Hugging Face RoFormer config sets embedding_size={hf_config['embedding_size']} and "
                        f"hidden_size={hf_config['hidden_size']}; our BERT has one width for both.")
    return bert_config_from_layout(hf_config, "rotary")


def bert_state_dict_from_hf_roformer(hf_state_dict: Mapping[str, Tensor], config: BertConfig) -> StateDict:
    """Our rotary BERT's state dict from a Hugging Face RoFormer one; a bare `RoFormerModel` leaves the MLM
    head untouched."""
    hf = with_prefix(hf_state_dict, "roformer.", ("cls.",))
    has_head = "cls.predictions.bias" in hf
    ours = {our: take(hf, theirs, "RoFormer") for our, theirs in ROFORMER_OUTSIDE_BLOCKS
            if has_head or not theirs.startswith("cls.")}
    order = neighbour_pair_order(config.n_head, config.n_embd // config.n_head)
    layers = {k: v for k, v in hf.items() if k.startswith("roformer.encoder.layer.")}
    reorder_query_and_key(layers, "roformer.encoder.layer", config.n_layer, torch.argsort(order))
    ours.update(bert_layers_from_hf(layers, "roformer.encoder.layer", "backbone.blocks", config.n_layer, "RoFormer"))
    if has_head:
        ours["mlm_head.decoder.weight"] = ours["backbone.token_embedding.weight"]
    return ours
