"""What a task is: the piece that turns a backbone and data into a training objective.

A task decides the datasets, the collator, the model (backbone plus head), the training loss and
the metrics. The trainer knows nothing else about it: it feeds batches, minimises
`task.training_loss(model, batch)` (the model's own loss unless the task reshapes it, e.g. with
loss modifiers), and asks the task for evaluation totals (sums, predictions: parts that add up across
processes) and for the metrics they give. The dry run calls the same loss function.
"""
from __future__ import annotations

import math
import sys
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from model_foundry.config.schema import FoundryConfig
from model_foundry.data.labelled import LabelSet
from model_foundry.models.heads.loss_modifiers import LossModifierPipeline, create_loss_modifier_pipeline

# Metrics where larger is better; every other metric is minimised when choosing the best checkpoint.
MAXIMISED_METRICS = {"accuracy", "f1_macro", "f1_micro", "token_accuracy", "entity_f1", "pearson",
                     "spearman", "mlm_accuracy", "rtd_accuracy", "retrieval_accuracy", "bow_recall_at_10"}


def add_totals(parts: list[dict]) -> dict:
    """Evaluation totals of several processes as one: numbers summed, lists concatenated in order."""
    merged = dict(parts[0])
    for part in parts[1:]:
        for key, value in part.items():
            merged[key] = merged[key] + value
    return merged


@dataclass
class DatasetSplits:
    train: Dataset
    val: Dataset | None = None
    test: Dataset | None = None
    # What a finetuning task learned from the training split and sizes its head to: the classes
    # (classification, tagging), or the [min, max] its scores were normalised from (scoring).
    labels: LabelSet | None = None
    target_range: list[float] | None = None


class Task(ABC):
    name: ClassVar[str]
    metric_names: ClassVar[tuple[str, ...]]
    default_best_metric: ClassVar[str] = "loss"
    # The kind of output the loss modifiers see ("language_model", "sequence_scorer" or
    # "token_classifier"), which decides those that apply (None: none apply).
    loss_output_kind: ClassVar[str | None] = None

    def __init__(self, config: FoundryConfig, tokenizer):
        self.config = config
        self.tokenizer = tokenizer
        self._loss_modifiers: LossModifierPipeline | None = None

    @classmethod
    def check_config(cls, config: FoundryConfig) -> None:
        """Refuse a config this task cannot train (its architecture, its settings) with a UserError.

        `tasks.check_compatibility` calls it before anything is written; rules that need the
        tokenizer or the data (a mask token, the label set) are checked once those exist.
        """

    @abstractmethod
    def build_model(self, splits: DatasetSplits) -> nn.Module:
        """A fresh model for this task, its head sized to what `build_datasets` learned from the
        training split (weights from a checkpoint are loaded by the caller)."""

    @abstractmethod
    def build_datasets(self, cache_dir: Path) -> DatasetSplits:
        """Train, val and test datasets from the config's data section, rows as long as the model takes."""

    @abstractmethod
    def collator(self) -> Callable:
        """`collate(items, generator) -> batch`, the batch a dict of tensors the model takes."""

    @abstractmethod
    def evaluation_totals(self, model: nn.Module, batches: Iterable[dict],
                          autocast: AbstractContextManager) -> dict:
        """What the metrics need from `batches` (already on the model's device), in parts that add up
        across processes: numbers are summed and lists concatenated (`add_totals`)."""

    @abstractmethod
    def metrics_from_totals(self, totals: dict) -> dict[str, float]:
        """The metrics, with `metric_names` as keys, from the totals of every batch of a split."""

    def use_trained_model(self, model: nn.Module) -> None:
        """Adopt what a trained model knows about the task (its labels) before evaluating it."""

    def training_loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        """The loss training minimises on one batch: the model's own, unless loss modifiers reshape it."""
        return model(**batch).loss

    def check_loss_settings(self) -> None:
        """Refuse (or say) before the first step what the loss settings cannot do with this task."""
        self.loss_modifiers  # noqa: B018 -- building the pipeline checks it and says which modifiers apply

    @property
    def loss_modifiers(self) -> LossModifierPipeline:
        """The configured loss modifiers this task's outputs take (said once, when first asked)."""
        if self._loss_modifiers is None:
            self._loss_modifiers = self.configured_loss_modifiers()
        return self._loss_modifiers

    def configured_loss_modifiers(self) -> LossModifierPipeline:
        pipeline = create_loss_modifier_pipeline(self.config.loss_modifiers.pipeline_settings())
        if not pipeline:
            return pipeline
        if self.loss_output_kind is None:
            print(f"Loss modifiers do not apply to task {self.name!r}; training with its own loss.", file=sys.stderr)
            return LossModifierPipeline([])
        kept = pipeline.for_mode(self.loss_output_kind)
        dropped = set(pipeline.get_enabled_modifier_names()) - set(kept.get_enabled_modifier_names())
        print(f"Loss modifiers: {', '.join(kept.get_enabled_modifier_names()) or 'none'}"
              + (f" (not for {self.loss_output_kind}: {', '.join(sorted(dropped))})" if dropped else "") + ".",
              file=sys.stderr)
        return kept

    def count_targets(self, batch: dict) -> int:
        """How many targets a batch holds; gradient accumulation weighs micro-batches by it.

        The trainer asks before the batch moves to the device: counting host tensors costs no sync.
        """
        return int((batch["labels"] != -100).sum())


def real_tokens(batch: dict) -> int:
    """The batch's real (unpadded) tokens; on a host batch it costs no device sync."""
    mask = batch.get("attention_mask")
    return int(mask.sum()) if mask is not None else batch["input_ids"].numel()


def metric_is_maximised(name: str) -> bool:
    return name in MAXIMISED_METRICS


def language_model_metrics(loss: float) -> dict[str, float]:
    """Loss-derived metrics shared by every language-modelling objective."""
    return {"loss": loss, "perplexity": math.exp(min(loss, 80.0)), "bits_per_token": loss / math.log(2)}


def move_to(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
