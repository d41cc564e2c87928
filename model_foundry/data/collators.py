"""Collators: a list of dataset items -> one batch of padded tensors.

Every collator is called as `collate(items, generator)`. Randomness (masked-LM masking) comes only
from `generator`, which the BatchStream seeds per batch, so a resumed run masks exactly as the
uninterrupted one did. Padding conventions: `attention_mask` 1 = real token, 0 = pad; label -100 =
ignored by the loss.
"""
from __future__ import annotations

from collections.abc import Iterable

import torch

from model_foundry.errors import UserError

IGNORE_INDEX = -100


def padded_length(lengths: Iterable[int], multiple: int | None) -> int:
    """The longest length, rounded up to `multiple` (tensor cores like multiples of 8)."""
    longest = max(lengths)
    if multiple:
        longest = -(-longest // multiple) * multiple
    return longest


def pad_rows(rows: list[torch.Tensor], length: int, value: int) -> torch.Tensor:
    """Right-pad 1-D rows with `value` and stack them into [len(rows), length]."""
    batch = torch.full((len(rows), length), value, dtype=rows[0].dtype)
    for i, row in enumerate(rows):
        batch[i, :len(row)] = row
    return batch


def real_token_mask(lengths: list[int], length: int) -> torch.Tensor:
    """[batch, length] int64 mask, 1 on each row's first `lengths[i]` positions."""
    return (torch.arange(length) < torch.tensor(lengths).unsqueeze(1)).long()


class CausalLMCollator:
    """Stacks causal-LM items; pads (input pad_id, labels -100) only when their lengths differ.

    Packed windows all have the same length: then there is no `attention_mask`, which lets the
    model take the fused `is_causal` attention path. A tokenizer without a pad token still batches:
    the padded positions are masked and ignored by the loss, so id 0 stands in for them.
    """

    def __init__(self, pad_id: int | None, pad_to_multiple_of: int | None = None):
        self.pad_id = pad_id if pad_id is not None else 0
        self.pad_to_multiple_of = pad_to_multiple_of

    def __call__(self, items: list[dict], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        inputs = [item["input_ids"] for item in items]
        lengths = [len(row) for row in inputs]
        length = padded_length(lengths, self.pad_to_multiple_of)
        batch = {"input_ids": pad_rows(inputs, length, self.pad_id),
                 "labels": pad_rows([item["labels"] for item in items], length, IGNORE_INDEX)}
        if any(n != length for n in lengths):
            batch["attention_mask"] = real_token_mask(lengths, length)
        return batch


class MaskedLMCollator:
    """BERT's masking: pick `mlm_probability` of the maskable positions and predict their tokens.

    Of the picked positions 80% become [MASK], 10% a random non-special token and 10% stay as they
    are (so the model cannot learn that only [MASK] positions matter). Special tokens and padding
    are never picked. Labels hold the original id at picked positions and -100 elsewhere; every
    batch has at least one picked position, so the loss is never NaN.
    """

    def __init__(self, pad_id: int | None, mask_id: int | None, vocab_size: int, special_ids: Iterable[int],
                 mlm_probability: float = 0.15, pad_to_multiple_of: int | None = None):
        if mask_id is None or pad_id is None:
            raise UserError("task.type masked_lm needs a tokenizer with a mask token such as [MASK] and a pad "
                            "token; this tokenizer lacks one (Model Foundry's own tokenizers have both).")
        if not 0.0 < mlm_probability < 1.0:
            raise UserError(f"task.mlm_probability must lie strictly between 0 and 1, got {mlm_probability}.")
        self.pad_id, self.mask_id = pad_id, mask_id
        self.mlm_probability = mlm_probability
        self.pad_to_multiple_of = pad_to_multiple_of
        self.special_ids = torch.tensor(sorted({*special_ids, pad_id, mask_id}), dtype=torch.int64)
        is_special = torch.zeros(vocab_size, dtype=torch.bool)
        is_special[self.special_ids[self.special_ids < vocab_size]] = True
        self.replacement_ids = torch.arange(vocab_size)[~is_special]
        if len(self.replacement_ids) == 0:
            raise ValueError("The vocabulary has no non-special tokens to draw random replacements from.")

    def __call__(self, items: list[dict], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        inputs = [item["input_ids"] for item in items]
        lengths = [len(row) for row in inputs]
        length = padded_length(lengths, self.pad_to_multiple_of)
        input_ids = pad_rows(inputs, length, self.pad_id)
        attention_mask = real_token_mask(lengths, length)
        selected = self.select_positions(input_ids, attention_mask, generator)
        labels = torch.where(selected, input_ids, IGNORE_INDEX)
        return {"input_ids": self.corrupt(input_ids, selected, generator), "labels": labels,
                "attention_mask": attention_mask}

    def select_positions(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                         generator: torch.Generator | None) -> torch.Tensor:
        maskable = attention_mask.bool() & ~torch.isin(input_ids, self.special_ids)
        probabilities = maskable.float() * self.mlm_probability
        selected = torch.bernoulli(probabilities, generator=generator).bool()
        if not selected.any():
            # A short batch can draw no position at all; predict one so the loss stays defined.
            candidates = maskable if maskable.any() else attention_mask.bool()
            positions = candidates.flatten().nonzero().squeeze(1)
            choice = positions[torch.randint(len(positions), (1,), generator=generator)]
            selected.view(-1)[choice] = True
        return selected

    def corrupt(self, input_ids: torch.Tensor, selected: torch.Tensor,
                generator: torch.Generator | None) -> torch.Tensor:
        """80% of the selected positions -> [MASK], 10% -> a random token, 10% unchanged."""
        to_mask = selected & torch.bernoulli(torch.full(selected.shape, 0.8), generator=generator).bool()
        to_randomise = selected & ~to_mask & torch.bernoulli(torch.full(selected.shape, 0.5),
                                                             generator=generator).bool()
        draws = torch.randint(len(self.replacement_ids), selected.shape, generator=generator)
        corrupted = torch.where(to_mask, self.mask_id, input_ids)
        return torch.where(to_randomise, self.replacement_ids[draws], corrupted)


class TrimmingCollator:
    """Batches padded rows (`.pt` datasets), trimmed to the longest real row of the batch.

    Rows carry `attention_mask` (1 = real). The real tokens of each row are kept, capped to
    `max_length`, and re-padded on the right only as far as the batch's longest row, so no compute
    goes to columns that are padding in every row. Per-token `labels` follow their tokens (padded
    with -100); one label per row is stacked as is.
    """

    def __init__(self, pad_id: int = 0, max_length: int | None = None):
        self.pad_id, self.max_length = pad_id, max_length

    def __call__(self, items: list[dict], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        real = [item["attention_mask"].bool() for item in items]
        inputs = [self.cap(item["input_ids"][mask]) for item, mask in zip(items, real)]
        lengths = [len(row) for row in inputs]
        length = max(lengths)
        batch = {"input_ids": pad_rows(inputs, length, self.pad_id),
                 "attention_mask": real_token_mask(lengths, length)}
        if "labels" in items[0]:
            batch["labels"] = self.collate_labels(items, real, length)
        return batch

    def cap(self, row: torch.Tensor) -> torch.Tensor:
        return row[:self.max_length] if self.max_length else row

    def collate_labels(self, items: list[dict], real: list[torch.Tensor], length: int) -> torch.Tensor:
        """Per-token labels (shaped like input_ids) are trimmed like the ids; row labels are stacked."""
        labels = [item["labels"] for item in items]
        if labels[0].shape != items[0]["input_ids"].shape:
            return torch.stack(labels)
        rows = [self.cap(row[mask]) for row, mask in zip(labels, real)]
        return pad_rows(rows, length, IGNORE_INDEX)


class LabelledCollator:
    """Batches encoded finetuning examples, right-padded to the batch's longest row.

    Each item has `input_ids`, optionally `token_type_ids` (padded with 0) and `word_starts`
    (padded with -1), and optionally `labels`, whose shape says what they are:
    - an int: a class id -> LongTensor[B];
    - a float: a score -> FloatTensor[B];
    - a sequence of floats: a multi-label target vector -> FloatTensor[B, C];
    - a sequence of ints: one label per token (as long as `input_ids`) or per word (as long as
      `word_starts`) -> LongTensor padded with -100 like the row it follows.
    """

    def __init__(self, pad_id: int, pad_to_multiple_of: int | None = None):
        self.pad_id, self.pad_to_multiple_of = pad_id, pad_to_multiple_of

    def __call__(self, items: list[dict], generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        inputs = [as_long_row(item["input_ids"]) for item in items]
        lengths = [len(row) for row in inputs]
        length = padded_length(lengths, self.pad_to_multiple_of)
        batch = {"input_ids": pad_rows(inputs, length, self.pad_id), "attention_mask": real_token_mask(lengths, length)}
        if "token_type_ids" in items[0]:
            batch["token_type_ids"] = pad_rows([as_long_row(item["token_type_ids"]) for item in items], length, 0)
        if "word_starts" in items[0]:
            starts = [as_long_row(item["word_starts"]) for item in items]
            batch["word_starts"] = pad_rows(starts, max(len(row) for row in starts), -1)
        if "labels" in items[0]:
            batch["labels"] = self.collate_labels(items, batch)
        return batch

    def collate_labels(self, items: list[dict], batch: dict[str, torch.Tensor]) -> torch.Tensor:
        labels = [torch.as_tensor(item["labels"]) for item in items]
        if labels[0].dim() == 0 or labels[0].is_floating_point():
            stacked = torch.stack(labels)
            return stacked.float() if stacked.is_floating_point() else stacked.long()
        key = aligned_key(items, labels)
        return pad_rows([row.long() for row in labels], batch[key].shape[1], IGNORE_INDEX)


def aligned_key(items: list[dict], labels: list[torch.Tensor]) -> str:
    """Which row per-position labels follow: `word_starts` when every label row is as long as its
    word_starts, else `input_ids` when every one is as long as its input_ids."""
    for key in ("word_starts", "input_ids"):
        if key in items[0] and all(len(row) == len(item[key]) for row, item in zip(labels, items)):
            return key
    raise ValueError("Integer label sequences must have one label per token (as long as input_ids) or per word "
                     "(as long as word_starts); multi-label target vectors must be floats.")


def as_long_row(values) -> torch.Tensor:
    """A list or tensor of ids as a 1-D int64 tensor."""
    return torch.as_tensor(values, dtype=torch.int64)
