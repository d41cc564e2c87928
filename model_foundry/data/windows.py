"""Packed windows over a token stream: every position of a window is real text, none is padding.

Windows are cut back to back from a span of the stream (a train or val range) and read from the
memory map only when asked for, so the corpus is never copied into memory.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class TokenSpanWindows(Dataset):
    """Back-to-back windows of `stride` tokens within `span`, each read with `extra` tokens more."""

    def __init__(self, tokens: np.ndarray, span: range, stride: int, extra: int):
        if span.step != 1 or span.start < 0 or span.stop > len(tokens):
            raise ValueError(f"span {span} is not a contiguous range within the {len(tokens)} tokens.")
        if stride < 1:
            raise ValueError(f"windows need a positive length, got {stride}.")
        self.tokens, self.span, self.stride, self.extra = tokens, span, stride, extra
        self.num_windows = max(0, (len(span) - extra) // stride)

    def __len__(self) -> int:
        return self.num_windows

    def window(self, index: int) -> torch.Tensor:
        """Tokens [start, start + stride + extra) of window `index`, as int64."""
        if not 0 <= index < self.num_windows:
            raise IndexError(f"window {index} out of range for {self.num_windows} windows")
        start = self.span.start + index * self.stride
        return torch.from_numpy(self.tokens[start:start + self.stride + self.extra].astype(np.int64))


class CausalWindows(TokenSpanWindows):
    """Windows of `block` inputs whose labels are the next tokens.

    Each window reads block + 1 tokens; consecutive windows share one token (the last label of one
    is the first input of the next), so every token of the span is predicted exactly once.
    """

    def __init__(self, tokens: np.ndarray, span: range, block: int):
        super().__init__(tokens, span, stride=block, extra=1)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = self.window(index)
        return {"input_ids": ids[:-1], "labels": ids[1:]}


class MaskedWindows(TokenSpanWindows):
    """Windows of `block` tokens for masked LM: [CLS] followed by block - 1 tokens of text.

    Without a [CLS] token (`cls_id` None) a window is `block` tokens of text. The collator masks
    them and makes the labels.
    """

    def __init__(self, tokens: np.ndarray, span: range, block: int, cls_id: int | None):
        text_tokens = block - 1 if cls_id is not None else block
        super().__init__(tokens, span, stride=text_tokens, extra=0)
        self.cls_id = cls_id

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = self.window(index)
        if self.cls_id is not None:
            ids = torch.cat([torch.tensor([self.cls_id], dtype=torch.int64), ids])
        return {"input_ids": ids}
