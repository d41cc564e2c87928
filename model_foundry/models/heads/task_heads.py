"""Heads: hidden states [..., H] in, task outputs [..., num_outputs] out.

A head only sees the last dimension, so the same head serves pooled vectors [B, H] (sequence
classification and scoring) and per-token states [B, T, H] (token classification). The layers
are named so checkpoints and LoRA's `modules_to_save` can refer to them.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import nn


class LinearHead(nn.Sequential):
    """Dropout, then one Linear layer: the usual classifier on top of a pretrained backbone."""

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float = 0.1):
        super().__init__(OrderedDict(
            dropout=nn.Dropout(dropout),
            out_proj=nn.Linear(hidden_size, num_outputs),
        ))


class SequentialHead(nn.Sequential):
    """A one-hidden-layer MLP: dropout, Linear(H, H), GELU, dropout, Linear(H, outputs).

    The extra layer gives the task its own non-linear features, useful when the backbone stays
    frozen; the second dropout comes after the GELU, so it drops activations rather than pre-activations.
    """

    def __init__(self, hidden_size: int, num_outputs: int, dropout: float = 0.1):
        super().__init__(OrderedDict(
            dropout=nn.Dropout(dropout),
            dense=nn.Linear(hidden_size, hidden_size),
            activation=nn.GELU(),
            dense_dropout=nn.Dropout(dropout),
            out_proj=nn.Linear(hidden_size, num_outputs),
        ))
