"""Sequence-level finetuning: classification (single- or multi-label) and scoring.

One text (or a `text_pair_column` pair) in, one prediction out: the pooler picks or summarises
the backbone's hidden states, the head maps them to classes or to one score.
"""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path

import torch

from model_foundry.data import SequenceExample, encode_sequence, load_tensor_file, read_sequence_examples
from model_foundry.data.labelled import LabelSet, Truncations
from model_foundry.errors import UserError
from model_foundry.models.task_model import TaskHeadConfig, TaskModel, to_original_scale, to_unit_scale
from model_foundry.tasks.finetuning import FinetuningTask, criterion_settings
from model_foundry.tasks.metrics import classification_metrics, multilabel_metrics, scoring_metrics
from model_foundry.tasks.registry import register_task


@dataclass
class TokenizedExample:
    """A row of a `.pt` dataset: token ids already made by the run's tokenizer, and a label."""

    input_ids: list[int]
    label: str | None
    source: str


def read_tensor_examples(path: Path) -> list[TokenizedExample]:
    """Rows of a `.pt` TensorDataset (input_ids, True = PAD mask, labels), padding removed."""
    rows = load_tensor_file(path)
    examples = []
    for index in range(len(rows)):
        row = rows[index]
        label = row.get("labels")
        examples.append(TokenizedExample(input_ids=row["input_ids"][row["attention_mask"].bool()].tolist(),
                                         label=None if label is None else format_number(label.item()),
                                         source=f"{path} row {index}"))
    return examples


def format_number(value: float) -> str:
    """Class ids stored as floats (1.0) read as the integer labels they are ("1")."""
    return str(int(value)) if float(value).is_integer() else str(value)


class SequenceTask(FinetuningTask):
    """Reading and encoding texts (and pairs); the label handling is each subclass's."""

    loss_output_kind = "sequence_scorer"

    def read_examples(self, path: Path, fmt: str, require_labels: bool) -> list:
        if fmt == "pt":
            return read_tensor_examples(path)
        data = self.config.data
        return read_sequence_examples(path, fmt, text_column=data.text_column, pair_column=data.text_pair_column,
                                      label_column=data.label_column, require_labels=require_labels)

    def encode(self, example: SequenceExample | TokenizedExample, split_key: str | None) -> tuple[dict, Truncations]:
        if isinstance(example, TokenizedExample):
            item = {"input_ids": example.input_ids[:self.max_length]}
            truncations = Truncations.of_one(len(example.input_ids) > self.max_length)
        else:
            item, truncations = encode_sequence(self.tokenizer, example.text, example.pair, self.max_length)
        if not self.uses_token_types:
            item.pop("token_type_ids", None)
        if split_key is not None:
            item["labels"] = self.encode_label(example, split_key)
        return item, truncations

    @abstractmethod
    def encode_label(self, example: SequenceExample, split_key: str):
        """The label of `example` as the model's target (class id, 0/1 vector or score)."""

    def head_settings(self) -> dict:
        task = self.config.task
        return {"pooler": self.pooler(), "head": task.head, "head_dropout": task.head_dropout,
                **criterion_settings(self.config, self.criterion())}


@register_task("sequence_classification")
class SequenceClassificationTask(SequenceTask):
    metric_names = ("loss", "accuracy", "f1_macro", "f1_micro")
    default_best_metric = "accuracy"

    @property
    def multi_label(self) -> bool:
        return self.config.task.multi_label

    @classmethod
    def default_criterion_for(cls, config) -> str:
        return "bce" if config.task.multi_label else "cross_entropy"

    def labels_of(self, example: SequenceExample) -> list[str]:
        if isinstance(example.label, list):
            return example.label
        if self.multi_label:
            return [part.strip() for part in example.label.split(self.config.task.label_separator) if part.strip()]
        return [example.label]

    def fit_labels(self, examples: list[SequenceExample]) -> None:
        self.label_set = LabelSet.from_values(label for e in examples for label in self.labels_of(e))
        wanted = self.config.task.num_labels
        if wanted is not None and wanted != len(self.label_set):
            raise UserError(f"task.num_labels is {wanted}, but the training split has {len(self.label_set)} labels "
                            f"({', '.join(self.label_set.labels)}); remove task.num_labels or fix the data.")
        weights = self.config.task.class_weights
        if weights is not None and len(weights) != len(self.label_set):
            raise UserError(f"task.class_weights has {len(weights)} values for {len(self.label_set)} labels "
                            f"({', '.join(self.label_set.labels)}).")

    def encode_label(self, example: SequenceExample, split_key: str):
        ids = [self.label_set.index(label, example.source, split_key) for label in self.labels_of(example)]
        if not self.multi_label:
            return ids[0]
        vector = [0.0] * len(self.label_set)
        for i in ids:
            vector[i] = 1.0
        return vector

    def head_config(self, labels: LabelSet | None, target_range: list[float] | None) -> TaskHeadConfig:
        return TaskHeadConfig(task="sequence_classification", num_outputs=len(labels), labels=labels.labels,
                              multi_label=self.multi_label, **self.head_settings())

    def metrics(self, outputs: list[torch.Tensor], batches: list[dict]) -> dict:
        logits = torch.cat(outputs)
        targets = torch.cat([b["labels"] for b in batches])
        labels = self.label_set.labels
        if self.multi_label:
            return multilabel_metrics((torch.sigmoid(logits) > 0.5).int().numpy(), targets.int().numpy(), labels)
        return classification_metrics(logits.argmax(-1).tolist(), targets.tolist(), labels)

    def predict(self, model: TaskModel, examples: list, batch_size: int, device: torch.device,
                threshold: float = 0.5) -> tuple[list[dict], Truncations]:
        labels = self.label_set.labels
        rows, batches = [], self.batches_of(examples, batch_size, device)
        for _, batch, _ in batches:
            logits = model(**batch).logits.float()
            probabilities = torch.sigmoid(logits) if self.multi_label else logits.softmax(-1)
            for row in probabilities.tolist():
                named = {label: round(p, 6) for label, p in zip(labels, row)}
                if self.multi_label:
                    rows.append({"labels": [lab for lab, p in named.items() if p > threshold],
                                 "probabilities": named})
                else:
                    rows.append({"label": max(named, key=named.get), "probabilities": named})
        return rows, batches.truncations


@register_task("sequence_scoring")
class SequenceScoringTask(SequenceTask):
    """One number per text: a bounded scorer (sigmoid, MSE against targets in [0, 1]) or plain regression.

    With `normalize_targets` the training targets' [min, max] is mapped to [0, 1] and recorded in
    the checkpoint, so predictions and metrics come back in the original scale.
    """

    metric_names = ("loss", "mse", "mae", "pearson", "spearman")
    default_best_metric = "pearson"
    default_columns = {"text_column": "text", "label_column": "score"}
    default_criterion = "mse"

    def target_of(self, example: SequenceExample) -> float:
        try:
            return float(example.label)
        except (TypeError, ValueError):
            raise UserError(f"{example.source}: the score {example.label!r} in column "
                            f"{self.config.data.label_column!r} is not a number.") from None

    def fit_labels(self, examples: list[SequenceExample]) -> None:
        targets = [self.target_of(e) for e in examples]
        low, high = min(targets), max(targets)
        task = self.config.task
        if task.normalize_targets and high > low:
            self.target_range = [low, high]
        elif task.score_activation == "sigmoid" and (low < 0.0 or high > 1.0):
            raise UserError(f"Scores in {self.config.data.train.path} range from {low} to {high}, but "
                            "task.score_activation 'sigmoid' predicts in [0, 1]; set task.normalize_targets: true "
                            "or task.score_activation: none.")
        else:
            self.target_range = None

    def encode_label(self, example: SequenceExample, split_key: str) -> float:
        return to_unit_scale(self.target_of(example), self.target_range)

    def head_config(self, labels: LabelSet | None, target_range: list[float] | None) -> TaskHeadConfig:
        return TaskHeadConfig(task="sequence_scoring", num_outputs=1, score_activation=self.config.task.score_activation,
                              target_range=target_range, **self.head_settings())

    def original_scale(self, values: torch.Tensor) -> torch.Tensor:
        return to_original_scale(values, self.target_range)

    def metrics(self, outputs: list[torch.Tensor], batches: list[dict]) -> dict:
        predictions = self.original_scale(torch.cat(outputs))
        targets = self.original_scale(torch.cat([b["labels"] for b in batches]))
        return scoring_metrics(predictions.tolist(), targets.tolist())

    def predict(self, model: TaskModel, examples: list, batch_size: int, device: torch.device,
                threshold: float = 0.5) -> tuple[list[dict], Truncations]:
        rows, batches = [], self.batches_of(examples, batch_size, device)
        for _, batch, _ in batches:
            scores = self.original_scale(model(**batch).logits.float())
            rows.extend({"score": round(float(s), 6)} for s in scores)
        return rows, batches.truncations
