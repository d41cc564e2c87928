"""The `.pt` dataset format: already tokenized tensors saved with `torch.save`.

A file holds `input_ids` [N, T] (int), `attention_mask` [N, T] and optionally `labels` ([N] or
[N, T]), as a `TensorDataset`, a tuple/list of tensors in that order, or a dict with those keys.
Files are read with `torch.load(weights_only=True)`: tensors and plain containers only, so a
crafted pickle cannot run code on load.
"""
from __future__ import annotations

import pickle
from pathlib import Path

import torch
from torch.utils.data import Dataset, TensorDataset

from model_foundry.errors import UserError

ACCEPTED_LAYOUTS = ("a torch.utils.data.TensorDataset(input_ids, attention_mask[, labels]), a tuple or list "
                    "of those tensors, or a dict with keys 'input_ids', 'attention_mask' and optionally 'labels'")


class TensorFileDataset(Dataset):
    """Rows of a `.pt` file as `{"input_ids", "attention_mask", ["labels"]}` int64 tensors.

    `attention_mask` here always follows OUR convention: 1 = real token, 0 = pad.
    """

    def __init__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, labels: torch.Tensor | None = None):
        self.input_ids, self.attention_mask, self.labels = input_ids, attention_mask, labels

    def __len__(self) -> int:
        return len(self.input_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        row = {"input_ids": self.input_ids[index], "attention_mask": self.attention_mask[index]}
        if self.labels is not None:
            row["labels"] = self.labels[index]
        return row


def load_tensor_file(path: str | Path) -> TensorFileDataset:
    """Load a `.pt` dataset safely and convert its mask to our convention."""
    path = Path(path)
    try:
        with torch.serialization.safe_globals([TensorDataset]):
            content = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise UserError(f"The tensor file {path} does not exist.") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, AttributeError, TypeError) as error:
        raise UserError(f"{path} could not be loaded safely as tensors ({type(error).__name__}); only tensors and "
                        f"plain containers are read from .pt files. Accepted layouts: {ACCEPTED_LAYOUTS}.") from None
    input_ids, mask, labels = unpack(content, path)
    return TensorFileDataset(input_ids.long(), real_token_mask(mask, path), labels)


def unpack(content: object, path: Path) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(input_ids, attention_mask, labels or None) from any accepted layout, shapes checked."""
    if isinstance(content, TensorDataset):
        content = content.tensors
    if isinstance(content, dict) and {"input_ids", "attention_mask"} <= content.keys():
        tensors = [content[key] for key in ("input_ids", "attention_mask", "labels") if key in content]
    elif isinstance(content, (tuple, list)) and len(content) in (2, 3):
        tensors = list(content)
    elif isinstance(content, dict):
        raise UserError(f"{path} holds a dict with keys {sorted(map(str, content))}; accepted: {ACCEPTED_LAYOUTS}.")
    else:
        raise UserError(f"{path} holds a {type(content).__name__}; accepted: {ACCEPTED_LAYOUTS}.")
    if not all(isinstance(t, torch.Tensor) for t in tensors):
        raise UserError(f"{path}: every entry must be a tensor; accepted: {ACCEPTED_LAYOUTS}.")
    input_ids, mask, *rest = tensors
    labels = rest[0] if rest else None
    if input_ids.dim() != 2 or mask.shape != input_ids.shape or input_ids.is_floating_point():
        raise UserError(f"{path}: input_ids must be an integer tensor [rows, length] and attention_mask the same "
                        f"shape; found input_ids {tuple(input_ids.shape)} {input_ids.dtype} and attention_mask "
                        f"{tuple(mask.shape)}.")
    if labels is not None and (labels.dim() == 0 or len(labels) != len(input_ids)):
        raise UserError(f"{path}: labels must have one entry per row ({len(input_ids)}), found shape "
                        f"{tuple(labels.shape)}.")
    return input_ids, mask, labels


def real_token_mask(mask: torch.Tensor, path: Path) -> torch.Tensor:
    """The file's attention mask as OUR convention: int64, 1 = real token, 0 = pad.

    !!! THE MASK IS FLIPPED HERE. The `.pt` format saves a BOOL mask with True = PAD (the opposite of
    Hugging Face and of everything else in Model Foundry), so a bool mask is inverted. An integer
    0/1 mask is taken to follow the Hugging Face convention (1 = real) and kept as it is.
    """
    if mask.dtype == torch.bool:
        return (~mask).long()
    if mask.is_floating_point() or not torch.isin(mask, torch.tensor([0, 1], dtype=mask.dtype)).all():
        raise UserError(f"{path}: attention_mask must be bool (True = PAD, the `.pt` dataset convention) or 0/1 integers "
                        f"(1 = real token); found {mask.dtype} with other values.")
    return mask.long()
