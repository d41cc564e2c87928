"""Sentence-level objectives on pooled span vectors: InfoNCE between the two spans of a unit, and
bag-of-words prediction of one span's words from the other's vector (PV-DBOW style).

Both losses are computed in float32 whatever the autocast precision: a softmax over a batch of
cosines divided by a small temperature, or over a whole vocabulary, loses too much in bf16.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def info_nce(a: Tensor, b: Tensor, temperature: float) -> tuple[Tensor, Tensor]:
    """(symmetric InfoNCE loss, similarity logits [B, B]) of span vectors a[i] and their partners b[i].

    logits[i, j] = cos(a[i], b[j]) / temperature; the other rows of the batch are the negatives.
    The loss is the mean of the cross-entropy of each a[i] picking b[i] among all b, and of each
    b[j] picking a[j] among all a.
    """
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    logits = a @ b.T / temperature
    targets = torch.arange(len(a), device=a.device)
    loss = (F.cross_entropy(logits, targets) + F.cross_entropy(logits.T, targets)) / 2
    return loss, logits


def retrieval_hits(logits: Tensor) -> Tensor:
    """How many of the 2B spans rank their own partner first among the other view's spans."""
    targets = torch.arange(len(logits), device=logits.device)
    return (logits.argmax(dim=1) == targets).sum() + (logits.argmax(dim=0) == targets).sum()


def bag_of_words_loss(logits: Tensor, words: Tensor) -> Tensor:
    """Mean over rows with at least one word of -mean(log softmax(logits)[word]) over the row's words.

    `logits` [B, vocab] predict from one span; `words` [B, vocab] (bool) mark the other span's
    distinct words. A row without any word (a span of special tokens only) adds nothing.
    """
    log_probs = torch.log_softmax(logits.float(), dim=-1)
    marks = words.to(log_probs.dtype)
    counts = marks.sum(dim=1)
    per_row = -(log_probs * marks).sum(dim=1) / counts.clamp(min=1)
    scored = counts > 0
    return per_row[scored].sum() / scored.sum().clamp(min=1)


def recall_at_k(logits: Tensor, words: Tensor, k: int = 10) -> Tensor:
    """Per row with words: the share of its words among the k highest logits. Returns [rows with words]."""
    top = logits.topk(min(k, logits.shape[-1]), dim=-1).indices
    hits = words.gather(1, top).sum(dim=1).float()
    counts = words.sum(dim=1)
    return (hits / counts.clamp(min=1))[counts > 0]


class SentenceHead(nn.Module):
    """An optional projection of the pooled vectors (SimCLR's head, left behind at finetuning) and, for
    bag of words, a linear decoder from a span vector to the vocabulary."""

    def __init__(self, hidden_size: int, vocab_size: int, projection_size: int | None, bag_of_words: bool):
        super().__init__()
        self.projection = nn.Linear(hidden_size, projection_size) if projection_size else None
        width = projection_size or hidden_size
        self.decoder = nn.Linear(width, vocab_size) if bag_of_words else None

    def forward(self, pooled: Tensor) -> Tensor:
        return self.projection(pooled) if self.projection is not None else pooled

