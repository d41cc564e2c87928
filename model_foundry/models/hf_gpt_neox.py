"""Our rotary GPT as Hugging Face GPT-NeoX (`GPTNeoXForCausalLM`), both ways.

GPT-NeoX with `use_parallel_residual: false` is GPT-2's pre-LN block with rotary positions on the
whole head (`partial_rotary_factor: 1`, base 10000) and no position table: the function our gpt
computes with `model.positional: rotary`. Its rotary pairs channel i with channel i + d/2 of each
head, as ours does, so no channel moves inside a head. Only the fused query/key/value projection is
laid out differently: ours stacks all queries, then all keys, then all values; GPT-NeoX stacks, head
by head, that head's query, key and value rows. Everything else is a renaming, and Linear weights
are stored the same way (GPT-2's Conv1D transposition does not apply).
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from model_foundry.errors import UserError
from model_foundry.models.gpt import GPTConfig
from model_foundry.models.hf_conversion import (ACTIVATIONS_TO_HF, StateDict, activation_from_hf, require_layout,
                                                take, with_prefix)

ROTARY_BASE = 10000.0
# Per block, everything but the fused projection's row order: (our name, GPT-NeoX name).
NEOX_BLOCK = [("norm1.weight", "input_layernorm.weight"), ("norm1.bias", "input_layernorm.bias"),
              ("attn.proj.weight", "attention.dense.weight"), ("attn.proj.bias", "attention.dense.bias"),
              ("norm2.weight", "post_attention_layernorm.weight"), ("norm2.bias", "post_attention_layernorm.bias"),
              ("mlp.fc.weight", "mlp.dense_h_to_4h.weight"), ("mlp.fc.bias", "mlp.dense_h_to_4h.bias"),
              ("mlp.proj.weight", "mlp.dense_4h_to_h.weight"), ("mlp.proj.bias", "mlp.dense_4h_to_h.bias")]
NEOX_OUTSIDE_BLOCKS = [("backbone.token_embedding.weight", "gpt_neox.embed_in.weight"),
                       ("backbone.final_norm.weight", "gpt_neox.final_layer_norm.weight"),
                       ("backbone.final_norm.bias", "gpt_neox.final_layer_norm.bias")]


def head_by_head_order(n_head: int, head_dim: int) -> Tensor:
    """Row r of GPT-NeoX's fused projection is row order[r] of ours: for each head, its query rows,
    then its key rows, then its value rows."""
    width = n_head * head_dim
    return torch.cat([part * width + head * head_dim + torch.arange(head_dim)
                      for head in range(n_head) for part in range(3)])


def gpt_config_to_hf_gpt_neox(config: GPTConfig) -> dict:
    """A Hugging Face `GPTNeoXConfig` dict for our rotary GPT, if its layout is GPT-NeoX's."""
    require_layout(config, {"norm_position": "pre", "positional": "rotary", "attention_type": "causal",
                            "bias": True, "type_vocab_size": 0, "embedding_norm": False}, "GPT-NeoX")
    return {"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"], "vocab_size": config.vocab_size,
            "hidden_size": config.n_embd, "num_hidden_layers": config.n_layer,
            "num_attention_heads": config.n_head, "intermediate_size": config.mlp_size,
            "hidden_act": ACTIVATIONS_TO_HF[config.activation], "max_position_embeddings": config.block_size,
            "rope_parameters": {"rope_type": "default", "rope_theta": ROTARY_BASE, "partial_rotary_factor": 1.0},
            "use_parallel_residual": False, "attention_bias": True, "layer_norm_eps": config.layer_norm_eps,
            "hidden_dropout": config.dropout, "attention_dropout": config.dropout,
            "pad_token_id": config.pad_token_id, "tie_word_embeddings": True}


def gpt_state_dict_to_hf_gpt_neox(state_dict: Mapping[str, Tensor], config: GPTConfig) -> StateDict:
    """A `GPTNeoXForCausalLM` state dict from our rotary GPT's (the tied `lm_head.weight` may be absent)."""
    order = head_by_head_order(config.n_head, config.n_embd // config.n_head)
    hf = {theirs: take(state_dict, our, "GPT") for our, theirs in NEOX_OUTSIDE_BLOCKS}
    for i in range(config.n_layer):
        ours, theirs = f"backbone.blocks.{i}", f"gpt_neox.layers.{i}"
        for our, their in NEOX_BLOCK:
            hf[f"{theirs}.{their}"] = take(state_dict, f"{ours}.{our}", "GPT")
        for part in ("weight", "bias"):
            fused = take(state_dict, f"{ours}.attn.qkv.{part}", "GPT")
            hf[f"{theirs}.attention.query_key_value.{part}"] = fused[order].contiguous()
    hf["lm_head.weight"] = hf["gpt_neox.embed_in.weight"]
    return hf


def gpt_config_from_hf_gpt_neox(hf_config: Mapping) -> GPTConfig:
    """Our rotary `GPTConfig` from a Hugging Face GPT-NeoX config dict."""
    rope = hf_config.get("rope_parameters") or {}
    # (the key, GPT-NeoX's default when config.json leaves it out, the value our GPT needs)
    settings = [("use_parallel_residual", hf_config.get("use_parallel_residual", True), False),
                ("attention_bias", hf_config.get("attention_bias", True), True),
                ("tie_word_embeddings", hf_config.get("tie_word_embeddings", False), True),
                ("rope_parameters.partial_rotary_factor", rope.get("partial_rotary_factor", 0.25), 1.0),
                ("rope_parameters.rope_theta", rope.get("rope_theta", ROTARY_BASE), ROTARY_BASE),
                ("rope_parameters.rope_type", rope.get("rope_type", "default"), "default")]
    for key, value, required in settings:
        if value != required:
            raise UserError(f"Hugging Face GPT-NeoX config has {key}={value!r}; our GPT (model.positional: rotary) "
                            f"computes only {key}={required!r}, so this model cannot be imported exactly.")
    return GPTConfig(vocab_size=hf_config["vocab_size"], pad_token_id=hf_config.get("pad_token_id"),
                     n_layer=hf_config["num_hidden_layers"], n_head=hf_config["num_attention_heads"],
                     n_embd=hf_config["hidden_size"], intermediate_size=hf_config["intermediate_size"],
                     block_size=hf_config["max_position_embeddings"], positional="rotary",
                     dropout=hf_config.get("hidden_dropout", 0.0),
                     activation=activation_from_hf(hf_config.get("hidden_act", "gelu"), "hidden_act"),
                     layer_norm_eps=hf_config.get("layer_norm_eps", 1e-5))


def gpt_state_dict_from_hf_gpt_neox(hf_state_dict: Mapping[str, Tensor], config: GPTConfig) -> StateDict:
    """Our rotary GPT's state dict from a Hugging Face GPT-NeoX one (with or without the LM head)."""
    hf = with_prefix(hf_state_dict, "gpt_neox.", ("lm_head.",))
    restore = torch.argsort(head_by_head_order(config.n_head, config.n_embd // config.n_head))
    ours = {our: take(hf, theirs, "GPT-NeoX") for our, theirs in NEOX_OUTSIDE_BLOCKS}
    for i in range(config.n_layer):
        block, layer = f"backbone.blocks.{i}", f"gpt_neox.layers.{i}"
        for our, theirs in NEOX_BLOCK:
            ours[f"{block}.{our}"] = take(hf, f"{layer}.{theirs}", "GPT-NeoX")
        for part in ("weight", "bias"):
            fused = take(hf, f"{layer}.attention.query_key_value.{part}", "GPT-NeoX")
            ours[f"{block}.attn.qkv.{part}"] = fused[restore].contiguous()
    ours["lm_head.weight"] = ours["backbone.token_embedding.weight"]
    return ours
