"""Packed windows over a token stream: every position of a window is real text, none is padding.

Windows are cut back to back from a span of the stream (a train or val range) and read from the
memory map only when asked for, so the corpus is never copied into memory.

Words seen: a window stands for the `stride` corpus tokens it advances through (the [CLS] a masked
window adds, and the label token a causal window shares with the next, are not text of its own),
and a corpus token for the corpus's words per token, counted when the token cache was built. So n
windows hold n x stride x corpus words / corpus tokens words (rounded down): the corpus's average,
exact over whole passes of it, not the words of those particular windows.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class TokenSpanWindows(Dataset):
    """Back-to-back windows of `stride` tokens within `span`, each read with `extra` tokens more.
    `corpus_words`: the whitespace-separated words of the text all of `tokens` came from (None: not
    counted, so `words_in` cannot say)."""

    def __init__(self, tokens: np.ndarray, span: range, stride: int, extra: int, corpus_words: int | None = None):
        if span.step != 1 or span.start < 0 or span.stop > len(tokens):
            raise ValueError(f"span {span} is not a contiguous range within the {len(tokens)} tokens.")
        if stride < 1:
            raise ValueError(f"windows need a positive length, got {stride}.")
        self.tokens, self.span, self.stride, self.extra = tokens, span, stride, extra
        self.corpus_words = corpus_words
        self.num_windows = max(0, (len(span) - extra) // stride)

    def __len__(self) -> int:
        return self.num_windows

    def window(self, index: int) -> torch.Tensor:
        """Tokens [start, start + stride + extra) of window `index`, as int64."""
        if not 0 <= index < self.num_windows:
            raise IndexError(f"window {index} out of range for {self.num_windows} windows")
        start = self.span.start + index * self.stride
        return torch.from_numpy(self.tokens[start:start + self.stride + self.extra].astype(np.int64))

    def words_in(self, windows: int) -> int | None:
        """The words `windows` windows stand for: their corpus tokens x the corpus's words per token,
        rounded down (see the module's docstring); None where the corpus's words were not counted."""
        if self.corpus_words is None:
            return None
        return windows * self.stride * self.corpus_words // len(self.tokens)


class CausalWindows(TokenSpanWindows):
    """Windows of `block` inputs whose labels are the next tokens.

    Each window reads block + 1 tokens; consecutive windows share one token (the last label of one
    is the first input of the next), so every token of the span is predicted exactly once.
    """

    def __init__(self, tokens: np.ndarray, span: range, block: int, corpus_words: int | None = None):
        super().__init__(tokens, span, stride=block, extra=1, corpus_words=corpus_words)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = self.window(index)
        return {"input_ids": ids[:-1], "labels": ids[1:]}


class MaskedWindows(TokenSpanWindows):
    """Windows of `block` tokens for masked LM: [CLS] followed by block - 1 tokens of text.

    Without a [CLS] token (`cls_id` None) a window is `block` tokens of text. The collator masks
    them and makes the labels.
    """

    def __init__(self, tokens: np.ndarray, span: range, block: int, cls_id: int | None,
                 corpus_words: int | None = None):
        text_tokens = block - 1 if cls_id is not None else block
        super().__init__(tokens, span, stride=text_tokens, extra=0, corpus_words=corpus_words)
        self.cls_id = cls_id

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        ids = self.window(index)
        if self.cls_id is not None:
            ids = torch.cat([torch.tensor([self.cls_id], dtype=torch.int64), ids])
        return {"input_ids": ids}
