"""`model.init_embeddings: ppmi`: a fresh run's token embedding starts from PPMI-SVD vectors.

The vectors come from the run's own training data, read as units (a line of a text file, a row of
jsonl/csv/tsv, a sentence of conllu/conll), tokenized by the run's tokenizer, counted within each
unit (model_foundry.data.cooccurrence) and reduced to n_embd dimensions, so no projection is
needed. When fewer tokens occur than n_embd, the missing components are zero. The whole matrix is
then scaled by one factor so that its standard deviation is the random initialisation's (every
architecture's own init std), which keeps the tokens' relative lengths and the scale the rest of
the network was initialised for. Tokens that never occur in a unit (special tokens among them)
keep their random rows. A pretraining run without a data.val file validates on the last
data.val_fraction of its tokens: the units there are left out, so validation loss stays a fair
measure. A finetuning run counts the text of every training row (never its label).

`build_trainer` calls this only at a fresh start: a resumed run keeps its trained embedding.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from pathlib import Path

import torch
from torch import nn

from model_foundry.config import FoundryConfig
from model_foundry.data import guess_format, resolve_paths
from model_foundry.data.cooccurrence import ppmi_svd_vectors
from model_foundry.data.text_units import iter_units
from model_foundry.data.token_cache import TokenizerLike, batched_texts
from model_foundry.errors import UserError
from model_foundry.tasks.base import Task
from model_foundry.tasks.finetuning import FinetuningTask


def init_embeddings_from_corpus(model: nn.Module, config: FoundryConfig, tokenizer: TokenizerLike, task: Task) -> None:
    """Overwrite `model`'s token embedding with PPMI-SVD vectors of `task`'s training data (see the module)."""
    started = time.perf_counter()
    # Only a pretraining run validates on the tail of its own training tokens (without data.val).
    units = training_units(config, tokenizer, hold_out_tail=not isinstance(task, FinetuningTask))
    embedding = model.get_input_embeddings()
    vectors = ppmi_svd_vectors(units, embedding.num_embeddings, dim=embedding.embedding_dim,
                               ignore_ids=tokenizer.special_ids, seed=config.experiment.seed)
    covered = copy_scaled(embedding, vectors)
    print(f"model.init_embeddings: ppmi: {covered} of {embedding.num_embeddings} token embeddings from "
          f"co-occurrence in {len(units)} units ({time.perf_counter() - started:.1f} s).", file=sys.stderr)


def copy_scaled(embedding: nn.Embedding, vectors: torch.Tensor) -> int:
    """Copy the non-zero rows of `vectors` into `embedding`, all scaled by one factor to the std of the
    embedding's current (random) weights; returns how many rows were copied."""
    weight = embedding.weight
    covered = vectors.abs().sum(dim=1) > 0
    if not covered.any():
        return 0
    scale = weight.detach().float().std() / vectors[covered].std()
    with torch.no_grad():  # in place: an output projection tied to this weight stays tied
        weight[covered] = (vectors[covered] * scale).to(weight.dtype)
    return int(covered.sum())


def training_units(config: FoundryConfig, tokenizer: TokenizerLike, hold_out_tail: bool) -> list[list[int]]:
    """The token ids of each unit of data.train.path, the validation tail left out when `hold_out_tail`."""
    data = config.data
    if data.train.path is None:
        raise UserError("model.init_embeddings: ppmi counts co-occurrence in the training data, but "
                        "data.train.path is not set; set it, or remove model.init_embeddings.")
    paths = resolve_paths(data.train.path, "data.train.path")
    units = [ids for path in paths for ids in encoded_units(path, data.format or guess_format(path),
                                                            data.text_column, tokenizer) if ids]
    if hold_out_tail and data.val.path is None and data.val_fraction > 0:
        units = units_before_tail(units, data.val_fraction)
    if not units:
        raise UserError(f"model.init_embeddings: ppmi found no text in data.train.path ({data.train.path}) to "
                        "count co-occurrence in; give a corpus with text, or remove model.init_embeddings.")
    return units


def encoded_units(path: Path, fmt: str, text_column: str, tokenizer: TokenizerLike) -> Iterator[list[int]]:
    """The token ids of each text unit of `path` (a line, a row, a sentence), as the span objectives read them."""
    if fmt == "pt":
        raise UserError(f"model.init_embeddings: ppmi reads texts, but {path} holds token ids (.pt); give "
                        "data.train.path as text, jsonl, csv or tsv, or remove model.init_embeddings.")
    for batch in batched_texts(iter_units(path, fmt, text_column)):
        yield from tokenizer.encode_batch(batch)


def units_before_tail(units: list[list[int]], val_fraction: float) -> list[list[int]]:
    """The units that end before the last `val_fraction` of the tokens (pretraining's validation split)."""
    end = int(sum(len(ids) for ids in units) * (1.0 - val_fraction))
    kept, seen = [], 0
    for ids in units:
        seen += len(ids)
        if seen > end:
            break
        kept.append(ids)
    return kept
