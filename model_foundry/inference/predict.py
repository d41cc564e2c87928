"""`foundry predict`: a finetuned run's predictions for a file or one text.

Rows come out as the input's text fields plus the prediction: `label` and `probabilities` for
single-label classification, `labels` and `probabilities` for multi-label, `score` (in the
original scale) for scoring, `tokens` and `tags` for token classification. The output is JSONL,
or CSV when the file name ends in .csv (nested values are JSON inside the cell).
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import torch

from model_foundry.config import load_config
from model_foundry.config.experiments import find_run
from model_foundry.data import SequenceExample, TokenExample, guess_format
from model_foundry.errors import UserError
from model_foundry.inference.loading import checkpoint_of, load_tokenizer
from model_foundry.tasks import build_task
from model_foundry.tasks.finetuning import FinetuningTask
from model_foundry.training.precision import resolve_device


def predict_run(run: str | Path, input_path: str | Path | None = None, text: str | None = None,
                threshold: float = 0.5, checkpoint: str = "best", batch_size: int = 32) -> list[dict]:
    """Predictions of a finetuned run for the examples of `input_path`, or for one `text`."""
    from model_foundry.models import BaseLanguageModel

    if (input_path is None) == (text is None):
        raise UserError("Give either --input FILE or --text \"...\" to predict.")
    run_dir = find_run(run)
    config = load_config(run_dir / "resolved_config.yaml").config
    task = build_task(config, load_tokenizer(run_dir))
    if not isinstance(task, FinetuningTask):
        raise UserError(f"Run {run_dir} trained task {task.name!r}, which makes no predictions of labels or "
                        "scores; predict works on finetuning runs (use `foundry generate` or `fill-mask` for "
                        "language models).")
    model = BaseLanguageModel.from_pretrained(checkpoint_of(run_dir, checkpoint))
    task.use_trained_model(model)
    examples = examples_from_text(task, text) if text is not None else examples_from_file(task, Path(input_path))
    device = resolve_device(config.training.device)
    model.to(device)
    with torch.no_grad():
        predictions = task.predict(model, examples, batch_size, device, threshold=threshold)
    return [{**input_fields(task, example), **prediction} for example, prediction in zip(examples, predictions)]


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
