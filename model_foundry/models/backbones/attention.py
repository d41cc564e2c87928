"""Multi-head self-attention, and the key/value cache that makes decoding one token at a time cheap.

Attention is `F.scaled_dot_product_attention`, which picks a fused kernel (flash, memory
efficient, or a fused CPU one) when it can; the backbone gives it the cheapest description of
the pattern it can (see `TransformerBackbone.attention_pattern`).

When a model generates, each step adds one token whose query must attend to the keys and values
of every earlier token. A `KeyValueCache` keeps them, so a step costs one token's worth of
projections instead of re-running the whole prefix.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_foundry.models.backbones.normalization import norm_layer
from model_foundry.models.backbones.positional import RotaryEmbedding, rotate_half

if TYPE_CHECKING:  # the config module imports this one
    from model_foundry.models.backbones.transformer import TransformerConfig

KeyValue = tuple[Tensor, Tensor]


class KeyValueCache:
    """The keys and values one attention layer has computed so far, each (batch, heads, time, head_dim).

    The buffers are allocated once for `capacity` positions (the model's `block_size`: decoding
    never attends further back) and each step writes its new positions in place, so a step costs
    a copy of the new token's keys and values, not of everything cached so far. Keys are stored
    after the rotary rotation: it depends only on the key's own position, so a cached key never
    needs rotating again. Where a decoding step attends in float32 (`decodes_in_float32`: bf16 on
    the CPU) the buffers are float32, so a step casts its new positions only, not the whole cache.
    """

    def __init__(self, capacity: int):
        self.capacity = capacity
        self.length = 0
        self.keys: Tensor | None = None
        self.values: Tensor | None = None

    def extend(self, keys: Tensor, values: Tensor) -> KeyValue:
        """Append the new positions' keys and values; return all of them, past ones first."""
        end = self.length + keys.size(-2)
        if end > self.capacity:
            raise ValueError(f"a key/value cache of {self.capacity} positions cannot take {end}")
        if self.keys is None:
            batch, heads, _, head_dim = keys.shape
            dtype = torch.float32 if decodes_in_float32(keys) else keys.dtype
            self.keys = keys.new_empty(batch, heads, self.capacity, head_dim, dtype=dtype)
            self.values = values.new_empty(batch, heads, self.capacity, head_dim, dtype=dtype)
        self.keys[:, :, self.length:end] = keys
        self.values[:, :, self.length:end] = values
        self.length = end
        return self.keys[:, :, :end], self.values[:, :, :end]


def rotate(rotary: RotaryEmbedding, x: Tensor, positions: Tensor | None) -> Tensor:
    """Rotary embedding of `x` (batch, heads, time, head_dim) at `positions` (batch or 1, time).

    Without positions, token t sits at position t (`RotaryEmbedding`'s own case); with them,
    each token is rotated by the angle of its own position, which is what left padding and
    cached decoding need.
    """
    if positions is None:
        return rotary(x)
    cos = rotary.cos[positions].unsqueeze(1).to(x.dtype)  # (B, 1, T, head_dim): same angle for every head
    sin = rotary.sin[positions].unsqueeze(1).to(x.dtype)
    return x * cos + rotate_half(x) * sin


class SelfAttention(nn.Module):
    """Multi-head self-attention with one fused projection for queries, keys and values."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.n_head = config.n_head
        self.n_embd = config.n_embd
        self.dropout = config.dropout
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.residual_dropout = nn.Dropout(config.dropout)
        self.q_norm = norm_layer(config, config.head_dim) if config.qk_norm else None
        self.k_norm = norm_layer(config, config.head_dim) if config.qk_norm else None

    def forward(self, x: Tensor, mask: Tensor | None, is_causal: bool, rotary: RotaryEmbedding | None,
                positions: Tensor | None = None, cache: KeyValueCache | None = None) -> Tensor:
        """`mask` and `is_causal` as SDPA takes them, covering cached keys too; `cache` is extended in place."""
        batch, length, channels = x.shape
        q, k, v = self.qkv(x).split(self.n_embd, dim=-1)
        # (B, T, C) -> (B, heads, T, head_dim)
        q, k, v = (t.view(batch, length, self.n_head, -1).transpose(1, 2) for t in (q, k, v))
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        if rotary is not None:
            q, k = rotate(rotary, q, positions), rotate(rotary, k, positions)
        if cache is not None:
            k, v = cache.extend(k, v)
        y = attend(q, k, v, mask, is_causal, dropout=self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(batch, length, channels)
        return self.residual_dropout(self.proj(y))


# Below this many (time x head_dim) elements per head, torch's CPU flash attention trains slower in
# bf16 than in float32: its bf16 backward pays a large cost per (batch, head) that only long, wide
# heads amortise (torch 2.13, AMX CPU, forward + backward: 64 tokens x 32 dims 3x slower than
# float32, 256 x 32 1.5x, 256 x 48 1.07x, 256 x 64 0.9x; benchmarks/cpu_paths.py).
CPU_BF16_ATTENTION_MIN_ELEMENTS = 256 * 64
# A single query against a key/value cache (a decoding step) is slower in bf16 at every cache length: 1.2x
# to 4.8x float32 (the query's casts included, the cache kept in float32) at batch 1 and 8, 6 heads of 64
# (torch 2.13, AMD EPYC with AVX-512 bf16; `python benchmarks/cpu_paths.py decoding`).


def decodes_in_float32(x: Tensor) -> bool:
    """Whether a single query (a decoding step) on tensors like `x` attends in float32: bf16 on the CPU."""
    return x.device.type == "cpu" and x.dtype == torch.bfloat16


def computes_in_float32(q: Tensor) -> bool:
    """Whether `attend` casts a CPU bf16 attention to float32: for decoding, and for training on short heads."""
    if not decodes_in_float32(q):
        return False
    return q.size(-2) == 1 or (torch.is_grad_enabled() and q.size(-2) * q.size(-1) < CPU_BF16_ATTENTION_MIN_ELEMENTS)


def attend(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, is_causal: bool, dropout: float) -> Tensor:
    """`F.scaled_dot_product_attention`, computed in float32 where the CPU's bf16 kernel is slow."""
    if computes_in_float32(q):
        mask = mask.float() if mask is not None and mask.is_floating_point() else mask
        with torch.autocast("cpu", enabled=False):  # autocast would cast the inputs back to bf16
            y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=mask,
                                               is_causal=is_causal, dropout_p=dropout)
        return y.to(q.dtype)
    return F.scaled_dot_product_attention(q, k.to(q.dtype), v.to(q.dtype), attn_mask=mask, is_causal=is_causal,
                                          dropout_p=dropout)
