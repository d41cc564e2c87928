"""The normalisation layers of the transformer: LayerNorm (GPT-2, BERT) or RMSNorm (the modern recipe).

RMSNorm divides by the root mean square alone: no mean to subtract and no bias, so it is cheaper,
and at our scales it trains as well as LayerNorm. `qk_norm` uses the same kind of layer on each
head's queries and keys (width head_dim), which bounds the attention logits and so allows higher
learning rates.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from torch import nn

if TYPE_CHECKING:  # the config module imports this one
    from model_foundry.models.backbones.transformer import TransformerConfig


def norm_layer(config: TransformerConfig, width: int | None = None) -> nn.Module:
    """The config's normalisation (`model.norm`) over `width` channels (default: n_embd)."""
    width = width or config.n_embd
    if config.norm == "rmsnorm":
        return nn.RMSNorm(width, eps=config.layer_norm_eps)
    return nn.LayerNorm(width, eps=config.layer_norm_eps, bias=config.bias)
