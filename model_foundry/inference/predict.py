"""`foundry predict`: a finetuned run's predictions for a file or one text.

Rows come out as the input's text fields plus the prediction: `label` and `probabilities` for
single-label classification, `labels` and `probabilities` for multi-label, `score` (in the
original scale) for scoring, `tokens` and `tags` for token classification. The output is JSONL,
or CSV when the file name ends in .csv (nested values are JSON inside the cell).

A text longer than the model's limit is cut to it, with one warning line; a sentence to tag is
instead tagged in consecutive pieces that each fit, so every word gets a tag.
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import torch
from torch import nn

from model_foundry.data import SequenceExample, TokenExample, guess_format
from model_foundry.data.labelled import Truncations, length_limit, report_truncations, words_within
from model_foundry.errors import UserError
from model_foundry.inference.loading import rebuild_run
from model_foundry.tasks.finetuning import FinetuningTask
from model_foundry.training.precision import resolve_device


def predict_run(run: str | Path, input_path: str | Path | None = None, text: str | None = None,
                threshold: float = 0.5, checkpoint: str = "best", batch_size: int = 32) -> list[dict]:
    """Predictions of a finetuned run for the examples of `input_path`, or for one `text`."""
    if (input_path is None) == (text is None):
        raise UserError("Give either --input FILE or --text \"...\" to predict.")
    rebuilt = rebuild_run(run, checkpoint)
    config, task, model = rebuilt.config, rebuilt.task, rebuilt.model
    if not isinstance(task, FinetuningTask):
        raise UserError(f"Run {rebuilt.directory} trained task {task.name!r}, which makes no predictions of labels "
                        "or scores; predict works on finetuning runs (use `foundry generate` or `fill-mask` for "
                        "language models).")
    examples = examples_from_text(task, text) if text is not None else examples_from_file(task, Path(input_path))
    device = resolve_device(config.training.device)
    model.to(device)
    source = "--text" if text is not None else f"--input {input_path}"
    max_length, limit_key = length_limit(config.tokenizer.max_length, task.backbone_config.block_size)
    with torch.no_grad():
        predictions, truncations = predict_examples(task, model, examples, batch_size, device, threshold)
    report_truncations(truncations, source, max_length, limit_key)
    return [{**input_fields(task, example), **prediction} for example, prediction in zip(examples, predictions)]


def predict_examples(task: FinetuningTask, model: nn.Module, examples: list, batch_size: int, device: torch.device,
                     threshold: float) -> tuple[list[dict], Truncations]:
    """The task's predictions, in order, and what fitting them to the model cut; sentences to tag
    go in pieces that fit the model, since a word past the model's limit would otherwise get no tag."""
    if task.name != "token_classification":
        return task.predict(model, examples, batch_size, device, threshold=threshold)
    windows = [window for example in examples for window in word_windows(task, example)]
    tagged, truncations = task.predict(model, windows, batch_size, device)
    tags = [tag for row in tagged for tag in row["tags"]]
    rows, start = [], 0  # the windows split each sentence in order, so the tags follow the words
    for example in examples:
        rows.append({"tokens": example.words, "tags": tags[start:start + len(example.words)]})
        start += len(example.words)
    return rows, truncations


def word_windows(task: FinetuningTask, example: TokenExample) -> list[TokenExample]:
    """The sentence as consecutive runs of words that each fit `task.max_length` whole."""
    windows, words = [], example.words
    while words:
        size = words_within(task.tokenizer, words, task.max_length)
        windows.append(TokenExample(words[:size], None, example.source))
        words = words[size:]
    return windows


def examples_from_text(task: FinetuningTask, text: str) -> list:
    if task.name == "token_classification":
        return [TokenExample(words=text.split(), tags=None, source="--text")]
    return [SequenceExample(text=text, pair=None, label=None, source="--text")]


def examples_from_file(task: FinetuningTask, path: Path) -> list:
    if not path.is_file():
        raise UserError(f"--input {path}: no such file.")
    fmt = task.config.data.format if task.config.data.format not in (None, "pt") else guess_format(path)
    examples = task.read_examples(path, fmt, require_labels=False)
    if not examples:
        raise UserError(f"--input {path} holds no examples.")
    return examples


def input_fields(task: FinetuningTask, example) -> dict:
    """The text fields of a sequence example (token examples already echo their `tokens`)."""
    if not isinstance(example, SequenceExample):
        return {}
    data = task.config.data
    fields = {data.text_column: example.text}
    if data.text_pair_column and example.pair is not None:
        fields[data.text_pair_column] = example.pair
    return fields


def write_predictions(rows: list[dict], output: Path) -> None:
    """JSONL (default) or CSV by extension, written to a temporary file and renamed into place."""
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(f".{output.name}.tmp")
    with open(partial, "w", encoding="utf-8", newline="") as handle:
        if output.suffix.lower() == ".csv":
            columns = list(dict.fromkeys(key for row in rows for key in row))
            writer = csv.DictWriter(handle, fieldnames=columns)
            writer.writeheader()
            for row in rows:
                writer.writerow({k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in row.items()})
        else:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(partial, output)
