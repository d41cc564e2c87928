"""Position information that is computed instead of learned: sinusoidal tables and rotary embeddings.

Learned positions are a plain `nn.Embedding` and live in the backbone; the two encodings here
have no parameters, so their tables are non-persistent buffers that checkpoints never store.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def sinusoidal_table(num_positions: int, dim: int) -> Tensor:
    """Vaswani et al.'s fixed encoding, shape (num_positions, dim).

    Even channels hold sin(pos * f_i), odd channels cos(pos * f_i), with frequencies falling
    geometrically from 1 to 1/10000, so every offset between two positions is a linear map of
    the table that the model can learn to read.
    """
    positions = torch.arange(num_positions, dtype=torch.float32)[:, None]
    frequencies = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    angles = positions * frequencies
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(angles)
    table[:, 1::2] = torch.cos(angles[:, : dim // 2])
    return table


def rotate_half(x: Tensor) -> Tensor:
    """Map each channel pair (a, b) = (x[i], x[i + D/2]) to (-b, a): a 90 degree rotation."""
    first, second = x.chunk(2, dim=-1)
    return torch.cat((-second, first), dim=-1)


class RotaryEmbedding(nn.Module):
    """RoPE (Su et al., 2021): rotate query and key channel pairs by position-dependent angles.

    After the rotation, the dot product of a query at position m and a key at position n
    depends on the positions only through m - n, so attention sees relative offsets without
    any position parameter. Channel i is paired with channel i + head_dim/2 (the GPT-NeoX and
    Llama layout).
    """

    def __init__(self, head_dim: int, max_positions: int, base: float = 10000.0):
        super().__init__()
        inverse_frequencies = 1.0 / base ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
        angles = torch.outer(torch.arange(max_positions, dtype=torch.float32), inverse_frequencies)
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        """Rotate `x` of shape (batch, heads, time, head_dim); position t is row t of the tables."""
        length = x.size(-2)
        cos = self.cos[:length].to(x.dtype)
        sin = self.sin[:length].to(x.dtype)
        return x * cos + rotate_half(x) * sin
