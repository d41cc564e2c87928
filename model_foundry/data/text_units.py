"""Text units: one sentence, line or document per item, tokenized once and never cut at a window edge.

Language-model data packs a corpus into windows that run across document boundaries. A
sentence-level objective needs whole units instead: a unit is a non-empty line of a text file, the
`text_column` of a jsonl/csv/tsv row, or a sentence of a CoNLL file. The units of a set of files
are tokenized once into a flat id file plus an offsets file, cached by content hash like the
token cache (`token_cache.cache_key`), and read through memory maps. Each unit is truncated to
`max_tokens` when read, so a change of `model.block_size` reuses the cache.
"""
from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from model_foundry.data.sources import iter_texts, open_text, read_lines
from model_foundry.data.token_cache import TokenizerLike, batched_texts, cache_key, write_json_atomically
from model_foundry.errors import UserError

# The cache key's "separator" slot: no id separates units (the offsets do), and this marks the
# entry as a units cache so it never collides with a token stream of the same files.
UNITS_CACHE_MARK = -1


def iter_units(path: Path, fmt: str, text_column: str) -> Iterator[str]:
    """The text units of one file: the non-empty lines of a text file, else what `iter_texts` yields."""
    if fmt != "text":
        yield from (text for text in iter_texts(path, fmt, text_column) if text.strip())
        return
    with open_text(path) as handle:
        yield from (line.strip() for line in read_lines(handle, path) if line.strip())


def tokenize_units(paths: Sequence[Path], tokenizer: TokenizerLike, cache_dir: str | Path, *, fmt: str,
                   text_column: str = "text") -> tuple[np.ndarray, np.ndarray]:
    """(ids, offsets) of every unit of `paths`: unit i is ids[offsets[i]:offsets[i + 1]].

    Built on the first call (written to temporary files, renamed into place, the metadata last)
    and mapped read-only after.
    """
    cache_dir = Path(cache_dir)
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    key = cache_key(paths, tokenizer, fmt, text_column, UNITS_CACHE_MARK, dtype)
    ids_path, offsets_path, meta_path = (cache_dir / f"{key}.units.{part}" for part in ("ids.npy", "offsets.npy",
                                                                                        "json"))
    if not meta_path.is_file():
        cache_dir.mkdir(parents=True, exist_ok=True)
        print(f"Tokenizing the text units of {len(paths)} file(s) into {ids_path} (cached for later runs)...",
              file=sys.stderr)
        ids, offsets = encode_units(paths, tokenizer, fmt, text_column, dtype)
        for array, path in ((ids, ids_path), (offsets, offsets_path)):
            tmp_path = path.with_name(f"{path.stem}.tmp-{os.getpid()}.npy")
            np.save(tmp_path, array)
            os.replace(tmp_path, path)
        write_json_atomically(meta_path, {"units": len(offsets) - 1, "tokens": len(ids),
                                          "files": [str(p) for p in paths], "format": fmt,
                                          "text_column": text_column})
    return np.load(ids_path, mmap_mode="r"), np.load(offsets_path, mmap_mode="r")


def encode_units(paths: Sequence[Path], tokenizer: TokenizerLike, fmt: str, text_column: str,
                 dtype: type) -> tuple[np.ndarray, np.ndarray]:
    """Every unit's ids, concatenated, and the offsets where each unit starts (plus the end)."""
    chunks, lengths = [], []
    for path in paths:
        for batch in batched_texts(iter_units(path, fmt, text_column)):
            for unit in tokenizer.encode_batch(batch):
                if unit:
                    chunks.append(np.asarray(unit, dtype=np.int64))
                    lengths.append(len(unit))
    if not lengths:
        raise UserError(f"{', '.join(map(str, paths))} holds no text units (non-empty lines or rows) to train "
                        f"on; check data.format {fmt!r} and data.text_column {text_column!r}.")
    ids = np.concatenate(chunks)
    if ids.min() < 0 or ids.max() >= tokenizer.vocab_size:
        # A tokenizer bug, not the user's: ids outside the vocabulary would wrap around silently.
        raise ValueError(f"The tokenizer produced ids outside [0, {tokenizer.vocab_size}).")
    return ids.astype(dtype), np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)


class TextUnits(Dataset):
    """The units `indices` of a tokenized unit file, each as `{"input_ids": int64 tensor}`.

    Only units of at least `min_tokens` ids are kept; each is truncated to its first `max_tokens`.
    """

    def __init__(self, ids: np.ndarray, offsets: np.ndarray, indices: range, max_tokens: int, min_tokens: int = 1):
        lengths = np.diff(np.asarray(offsets[indices.start:indices.stop + 1]))
        kept = np.nonzero(lengths >= min_tokens)[0] + indices.start
        self.ids, self.offsets, self.units, self.max_tokens = ids, offsets, kept, max_tokens
        self.skipped = len(lengths) - len(kept)

    def __len__(self) -> int:
        return len(self.units)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        unit = int(self.units[index])
        start = int(self.offsets[unit])
        stop = min(int(self.offsets[unit + 1]), start + self.max_tokens)
        return {"input_ids": torch.from_numpy(np.asarray(self.ids[start:stop], dtype=np.int64))}


def split_units(num_units: int, val_fraction: float) -> tuple[range, range]:
    """The first (1 - val_fraction) of the units for training, the rest for validation."""
    train_end = int(num_units * (1.0 - val_fraction))
    return range(0, train_end), range(train_end, num_units)
