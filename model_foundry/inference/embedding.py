"""`foundry embed` and `model_foundry.embed`: one vector per text from any trained run.

A text is framed as the run's classifiers frame it (`cls text sep`), cut to the model's context
when longer, and read by the model's backbone (an ELECTRA run's discriminator, the hybrid's
bidirectional stack); a pooler turns its hidden states into the text's vector. The default pooler
is the run's natural one: a finetuned sequence model's own (trained) pooler; mean pooling over
the real tokens for a model that reads both ways; the last real token for a causal model, the only
one that has read the whole text. Vectors are computed in fp32 with dropout off, padding masked,
so they do not depend on the batch size or on the other texts of a batch.
"""
from __future__ import annotations

import csv
import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from model_foundry.data.sources import FORMAT_BY_SUFFIX, TABLE_DIALECTS, iter_jsonl_rows, open_text, read_lines
from model_foundry.errors import UserError
from model_foundry.inference.generation import context_size, eval_mode
from model_foundry.models.heads import make_pooler
from model_foundry.tasks.registry import sees_both_directions
from model_foundry.tokenizer.utf8 import not_utf8

POOLER_CHOICES = ("mean", "cls", "last")
TABLE_FORMATS = ("csv", "tsv", "jsonl")


def embed(run: str | Path, texts: Sequence[str], pooler: str | None = None, checkpoint: str = "best",
          batch_size: int = 64) -> np.ndarray:
    """The (len(texts), hidden) float32 vectors of `texts` under a run (a run directory or an
    experiment name); `pooler` is mean, cls or last, None for the run's natural one."""
    model, tokenizer = load_for_embedding(run, checkpoint)
    return embed_texts(model, tokenizer, texts, pooler, batch_size)


def load_for_embedding(run: str | Path, checkpoint: str = "best") -> tuple[nn.Module, object]:
    """The run's model in fp32 on the best device, and its tokenizer."""
    from model_foundry.inference.loading import load_model, load_tokenizer
    from model_foundry.training.precision import resolve_device

    return load_model(run, checkpoint).float().to(resolve_device("auto")), load_tokenizer(run)


@torch.no_grad()
def embed_texts(model: nn.Module, tokenizer, texts: Sequence[str], pooler: str | None = None,
                batch_size: int = 64) -> np.ndarray:
    """`embed` for a model and tokenizer in hand; the model runs in its own dtype, without autocast."""
    if batch_size < 1:
        raise UserError(f"--batch-size must be at least 1, got {batch_size}.")
    pool = sentence_pooler(model, pooler)
    rows = framed_ids(tokenizer, texts, context_size(model))
    if pooler == "cls":
        check_leading_cls(tokenizer, rows)
    device = next(model.parameters()).device
    vectors = []
    with eval_mode(model):
        for start in range(0, len(rows), batch_size):
            # a tokenizer without a pad token pads with id 0: the mask keeps pads out of every result
            input_ids, mask = padded_batch(rows[start:start + batch_size], tokenizer.pad_id or 0, device)
            hidden, _ = model.backbone(input_ids, mask, None, False)
            vectors.append(pool(hidden, mask).float().cpu())
    if not vectors:
        return np.zeros((0, model.backbone.hidden_size), dtype=np.float32)
    return torch.cat(vectors).numpy()


def sentence_pooler(model: nn.Module, name: str | None) -> nn.Module:
    """The pooler `name` asks for, or the model's natural one (see the module docstring)."""
    if name is not None and name not in POOLER_CHOICES:
        raise UserError(f"--pooler {name!r} is not one of {', '.join(POOLER_CHOICES)}.")
    if name == "cls" and not sees_both_directions(model.config):
        raise UserError("--pooler cls takes the first token's vector, but this model is causal: its first token "
                        "has read only itself, so every text would get the same vector. Use --pooler last (the "
                        "token that has read the whole text, the default here) or mean.")
    if name is None and has_own_pooler(model):
        return model.pooler
    return make_pooler(pooler_name(model, name), model.backbone.hidden_size)


def has_own_pooler(model: nn.Module) -> bool:
    return isinstance(getattr(model, "pooler", None), nn.Module)


def pooler_name(model: nn.Module, name: str | None = None) -> str:
    """The name of the pooler `sentence_pooler` uses: `name`, else the model's natural one."""
    if name is not None:
        return name
    if has_own_pooler(model):
        return model.head_config.pooler
    return "mean" if sees_both_directions(model.config) else "last"


def check_leading_cls(tokenizer, rows: list[list[int]]) -> None:
    cls_id = getattr(tokenizer, "cls_id", None)
    if cls_id is None or any(row[:1] != [cls_id] for row in rows):
        raise UserError("--pooler cls takes the vector of a leading [CLS] token, but this run's tokenizer does "
                        "not put one in front of the text; use --pooler mean or last.")


def framed_ids(tokenizer, texts: Sequence[str], max_length: int | None) -> list[list[int]]:
    """Each text as `cls text sep`, cut to `max_length`; one warning line on stderr when any was cut."""
    rows, cut = [], 0
    for text in texts:
        ids = tokenizer.encode_for_model(text)
        if max_length is not None and len(ids) > max_length:
            ids, cut = tokenizer.encode_for_model(text, None, max_length), cut + 1
        rows.append(ids)
    if cut:
        print(f"warning: {cut} of {len(rows)} text(s) were cut to {max_length} tokens (the model's block_size); "
              "their vectors describe the kept part.", file=sys.stderr)
    return rows


def padded_batch(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded ids [B, T] and the attention mask (1 = real token)."""
    width = max(len(row) for row in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for index, row in enumerate(rows):
        ids[index, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[index, :len(row)] = 1
    return ids.to(device), mask.to(device)


# ----- input and output files -------------------------------------------------------------------

def file_format(path: Path, flag: str, allowed: tuple[str, ...]) -> str:
    """The format of `path` by its extension, one of `allowed`."""
    fmt = FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if fmt not in allowed:
        suffixes = sorted(suffix or "(none)" for suffix, value in FORMAT_BY_SUFFIX.items() if value in allowed)
        raise UserError(f"{flag} {path}: cannot read a {path.suffix or 'suffix-less'} file here; the extension "
                        f"must be one of {', '.join(suffixes)}.")
    if not path.is_file():
        raise UserError(f"{flag} {path}: no such file.")
    return fmt


def table_rows(path: Path, fmt: str, needed: dict[str, str]) -> Iterator[tuple[str, dict, list[str]]]:
    """("path:line", row, the columns a row may name) for each row of a tsv, csv or jsonl file.

    `needed` maps the columns the caller reads to the flags that name them: a csv/tsv header that
    lacks one is refused at line 1, before any row is read.
    """
    if fmt == "jsonl":
        yield from jsonl_rows(path, needed)
        return
    with open_text(path, newline="") as handle:
        reader = csv.DictReader(handle, **TABLE_DIALECTS[fmt])
        try:
            header = list(reader.fieldnames or [])
            for column, flag in needed.items():
                if header and column not in header:
                    raise missing_column(f"{path}:1", header, column, flag)
            for row in reader:
                yield f"{path}:{reader.line_num}", row, header
        except csv.Error as error:
            raise UserError(f"{path}:{reader.line_num}: cannot parse the row ({error}).") from None
        except UnicodeDecodeError:
            raise not_utf8(path) from None


def jsonl_rows(path: Path, needed: dict[str, str]) -> Iterator[tuple[str, dict, list[str]]]:
    """`table_rows` for jsonl: each object with its own keys as the columns it may name."""
    for where, row in iter_jsonl_rows(path, next(iter(needed), "text")):
        yield where, row, list(row)


def column_value(where: str, row: dict, columns: list[str], column: str, flag: str):
    """`row[column]`, or a UserError naming the place, the flag that names the column and the columns there are."""
    if column not in columns or row.get(column) is None:
        raise missing_column(where, columns, column, flag)
    return row[column]


def missing_column(where: str, columns: list[str], column: str, flag: str) -> UserError:
    return UserError(f"{where}: there is no {column!r} column ({flag} names it); the columns here are "
                     f"{', '.join(map(repr, columns)) or 'none'}.")


def column_text(where: str, row: dict, columns: list[str], column: str, flag: str) -> str:
    value = column_value(where, row, columns, column, flag)
    if not isinstance(value, str):
        raise UserError(f"{where}: {column!r} should hold text, found a {type(value).__name__}.")
    return value


def read_texts(path: str | Path, column: str = "text") -> list[str]:
    """The texts to embed: every line of a text file (blank ones too, so row i of the vectors is line
    i + 1), or the `column` of each row of a tsv, csv or jsonl file."""
    path = Path(path)
    fmt = file_format(path, "--input", ("text", *TABLE_FORMATS))
    if fmt == "text":
        with open_text(path) as handle:
            texts = [line.rstrip("\r\n") for line in read_lines(handle, path)]
    else:
        texts = [column_text(where, row, columns, column, "--column")
                 for where, row, columns in table_rows(path, fmt, {column: "--column"})]
    if not texts:
        raise UserError(f"--input {path} is empty; give one text per line, or a tsv/csv/jsonl file with a "
                        f"{column!r} column.")
    return texts


def write_vectors(vectors: np.ndarray, output: Path) -> None:
    """Save as .npy through a temporary file, so an existing file is replaced whole or not at all."""
    check_vectors_path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.tmp")
    with open(partial, "wb") as handle:
        np.save(handle, vectors)
    os.replace(partial, output)


def check_vectors_path(output: Path) -> None:
    """Refuse an --output that is not a .npy name before any work (numpy would add .npy itself)."""
    if output.suffix.lower() != ".npy":
        raise UserError(f"--output {output}: the vectors are saved as a NumPy array; give a file name ending in .npy.")
