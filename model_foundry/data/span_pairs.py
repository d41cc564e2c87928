"""Two non-overlapping spans of each text unit: the pairs a sentence-level objective learns from.

The split is the inverse cloze task (Lee et al. 2019): a contiguous span of the unit is one view
and the rest of the unit (the tokens before and after it, joined) is the other. The span's length
is drawn uniformly from [min_span, n - min_span] and its start uniformly from where it fits, so
both views hold at least `min_span` tokens and share none; a unit shorter than 2 x min_span has no
such split and is left out of the dataset (`TextUnits(min_tokens=...)`). Every draw comes from the
collator's generator, which the batch stream seeds by the batch's position, so a resumed run
draws exactly the spans the uninterrupted one drew.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from model_foundry.data.collators import pad_rows, padded_length, real_token_mask


def inverse_cloze_split(ids: torch.Tensor, min_span: int,
                        generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(a random contiguous span of `ids`, the rest of `ids`), each at least `min_span` tokens long."""
    n = len(ids)
    if n < 2 * min_span:
        raise ValueError(f"a unit of {n} tokens has no two spans of {min_span} tokens")
    length = int(torch.randint(min_span, n - min_span + 1, (1,), generator=generator))
    start = int(torch.randint(0, n - length + 1, (1,), generator=generator))
    return ids[start:start + length], torch.cat([ids[:start], ids[start + length:]])


class SpanPairCollator:
    """Text units -> both views of each, padded: `view_a_input_ids` / `view_a_attention_mask` (the
    span), `view_b_*` (the rest), each view prefixed with `cls_id` when there is one.

    With `bag_of_words`, `view_a_words` [B, vocab] marks the distinct words of view b (what view a
    predicts) and `view_b_words` those of view a; padding and special tokens are never marked.
    The whole units are in the batch too, as `input_ids` / `attention_mask`: with `language_model`
    collated by it (with the `labels` of the token objective trained beside the sentence objective),
    else only padded. The trainer counts the batch's tokens from them: a unit's two views hold its
    tokens once.
    """

    def __init__(self, pad_id: int, cls_id: int | None, vocab_size: int, special_ids: Iterable[int],
                 min_span: int, bag_of_words: bool = False,
                 language_model: Callable[..., dict[str, torch.Tensor]] | None = None, causal: bool = False):
        self.pad_id, self.cls_id, self.vocab_size = pad_id, cls_id, vocab_size
        self.min_span, self.bag_of_words = min_span, bag_of_words
        self.language_model, self.causal = language_model, causal
        self.word_ids = torch.ones(vocab_size, dtype=torch.bool)
        special = torch.tensor(sorted({*special_ids, pad_id}), dtype=torch.int64)
        self.word_ids[special[special < vocab_size]] = False

    def __call__(self, items: list[dict], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        units = [item["input_ids"] for item in items]
        spans, rests = zip(*(inverse_cloze_split(unit, self.min_span, generator) for unit in units))
        batch = {**self.padded("view_a", spans), **self.padded("view_b", rests)}
        if self.bag_of_words:
            batch["view_a_words"], batch["view_b_words"] = self.words(rests), self.words(spans)
        if self.language_model is not None:
            batch.update(self.language_model(self.language_model_items(units), generator))
        else:
            whole = self.padded("unit", units)
            batch.update(input_ids=whole["unit_input_ids"], attention_mask=whole["unit_attention_mask"])
        return batch

    def with_cls(self, ids: torch.Tensor) -> torch.Tensor:
        if self.cls_id is None:
            return ids
        return torch.cat([torch.tensor([self.cls_id], dtype=torch.int64), ids])

    def padded(self, name: str, views: Iterable[torch.Tensor]) -> dict[str, torch.Tensor]:
        rows = [self.with_cls(view) for view in views]
        lengths = [len(row) for row in rows]
        length = padded_length(lengths, None)
        return {f"{name}_input_ids": pad_rows(rows, length, self.pad_id),
                f"{name}_attention_mask": real_token_mask(lengths, length)}

    def words(self, views: Iterable[torch.Tensor]) -> torch.Tensor:
        """[B, vocab] bool: True at every distinct word id of each view."""
        marks = torch.zeros((len(list(views)), self.vocab_size), dtype=torch.bool)
        for row, view in enumerate(views):
            marks[row, view] = True
        return marks & self.word_ids

    def language_model_items(self, units: list[torch.Tensor]) -> list[dict]:
        """The units as the token objective's items: [CLS] + unit for masked LM, next tokens for causal."""
        rows = [self.with_cls(unit) for unit in units]
        if self.causal:
            return [{"input_ids": row[:-1], "labels": row[1:]} for row in rows]
        return [{"input_ids": row} for row in rows]
