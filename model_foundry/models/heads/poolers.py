"""Poolers: a sequence of hidden states [B, T, H] in, one vector per sequence [B, H] out.

Every pooler reads the attention mask (1 = real token, 0 = padding) and never lets a padded
position influence its result, whichever side the padding is on: tokenizers of decoder models
often pad on the left, encoders on the right. Padded hidden states are replaced before any
arithmetic, so even inf or huge values there cannot leak into results or gradients.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn


def real_token_mask(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """The attention mask as a bool [B, T] tensor (True = real token); None means no padding."""
    if attention_mask is None:
        return torch.ones(hidden.shape[:2], dtype=torch.bool, device=hidden.device)
    return attention_mask.to(device=hidden.device, dtype=torch.bool)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean of `values` [B, T, H] over the positions where `mask` [B, T] is True."""
    total = values.masked_fill(~mask.unsqueeze(-1), 0.0).sum(dim=1)
    count = mask.sum(dim=1, keepdim=True).clamp_min(1)  # an all-padding row pools to zeros, not NaN
    return total / count.to(values.dtype)


def gather_positions(hidden: Tensor, positions: Tensor) -> Tensor:
    """hidden[b, positions[b], :] for every row b."""
    return hidden[torch.arange(hidden.shape[0], device=hidden.device), positions]


class Pooler(nn.Module):
    """Base class: `forward(hidden [B, T, H], attention_mask [B, T] | None) -> [B, H]`."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.output_size = hidden_size


class FirstTokenPooler(Pooler):
    """The first real token (BERT's [CLS]); with left padding that is not position 0."""

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        mask = real_token_mask(hidden, attention_mask)
        first = mask.int().argmax(dim=1)  # argmax returns the first of several maxima
        return gather_positions(hidden, first)


class LastTokenPooler(Pooler):
    """The last real token: the only one a causal model lets see the whole input.

    Its position is the largest index where the mask is 1, which is `length - 1` with right
    padding and `T - 1` with left padding; taking it from the mask rather than from lengths makes
    both work, and never pools a pad even when the pad token is also the end-of-text token.
    """

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        mask = real_token_mask(hidden, attention_mask)
        positions = torch.arange(hidden.shape[1], device=hidden.device)
        last = (positions * mask).amax(dim=1)
        return gather_positions(hidden, last)


class MeanPooler(Pooler):
    """The average of the real tokens' hidden states."""

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        return masked_mean(hidden, real_token_mask(hidden, attention_mask))


class MaxPooler(Pooler):
    """The per-feature maximum over real tokens; pads hold the dtype's lowest value so they never win."""

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        mask = real_token_mask(hidden, attention_mask)
        lowest = torch.finfo(hidden.dtype).min
        return hidden.masked_fill(~mask.unsqueeze(-1), lowest).amax(dim=1)


class AttentionPooler(Pooler):
    """A learned weighted average: score_t = V(tanh(W h_t)), weights = softmax over real tokens.

    Pads get the dtype's lowest score, so their softmax weight is exactly 0 (an additive -1e4,
    leaves them a small share when real scores are very negative).
    """

    def __init__(self, hidden_size: int):
        super().__init__(hidden_size)
        self.W = nn.Linear(hidden_size, hidden_size)
        self.V = nn.Linear(hidden_size, 1)

    def attention_weights(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """The pooling weights [B, T]: each row sums to 1 over its real tokens and is 0 on pads."""
        mask = real_token_mask(hidden, attention_mask)
        hidden = hidden.masked_fill(~mask.unsqueeze(-1), 0.0)
        scores = self.V(torch.tanh(self.W(hidden))).squeeze(-1)
        scores = scores.masked_fill(~mask, torch.finfo(scores.dtype).min)
        return torch.softmax(scores, dim=1)

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        mask = real_token_mask(hidden, attention_mask)
        weights = self.attention_weights(hidden, mask)
        hidden = hidden.masked_fill(~mask.unsqueeze(-1), 0.0)
        return torch.einsum("bt,bth->bh", weights, hidden)


class GeMPooler(Pooler):
    """Generalized mean over real tokens: (mean(clamp(x, min=eps)^p))^(1/p) with a learned p.

    p = 1 is the mean, p -> infinity the max; p starts at 3. GeM was designed for non-negative
    CNN features, and like its standard definition this one clamps every hidden value below eps
    (negative ones included) to eps before the power: a feature that is negative on every real
    token pools to about eps, whatever its magnitude.
    """

    def __init__(self, hidden_size: int, p: float = 3.0, eps: float = 1e-6):
        super().__init__(hidden_size)
        self.p = nn.Parameter(torch.tensor(p))
        self.eps = eps

    def forward(self, hidden: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        mask = real_token_mask(hidden, attention_mask)
        # Replace pads before the power so a huge pad cannot become inf and poison p's gradient.
        clamped = hidden.masked_fill(~mask.unsqueeze(-1), self.eps).clamp(min=self.eps)
        return masked_mean(clamped.pow(self.p), mask).pow(1.0 / self.p)
