"""What the finetuning tasks share: the backbone they start from, the head they add, their data.

A finetuning task builds a `TaskModel`: the backbone of the architecture (and settings) recorded
in `transfer.init_from_checkpoint`, or of `model.*` when training from scratch, plus the head the
`task` section describes. The label set (or the scoring range) is read from the training split
and stored in the model's head config, so every checkpoint knows its labels.
"""
from __future__ import annotations

import random
import sys
from abc import abstractmethod
from collections.abc import Iterable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn
from torch.utils.data import Dataset

from model_foundry.config.choices import default_pooler
from model_foundry.config.experiments import locate_checkpoint
from model_foundry.data import LabelledCollator, LabelSet, guess_format, resolve_paths
from model_foundry.data.labelled import Truncations, length_limit, report_truncations
from model_foundry.errors import UserError
from model_foundry.models import read_checkpoint_config
from model_foundry.models.heads import make_criterion
from model_foundry.models.registry import create_config
from model_foundry.models.task_model import TaskHeadConfig, TaskModel
from model_foundry.tasks.base import DatasetSplits, Task

SPLIT_KEYS = {"train": "data.train.path", "val": "data.val.path", "test": "data.test.path"}


class EncodedExamples(Dataset):
    """Examples already turned into model inputs (lists of ids and a label), kept in memory."""

    def __init__(self, items: list[dict]):
        self.items = items
        # Token counts, so the training stream can batch examples of similar length together.
        self.lengths = [len(item["input_ids"]) for item in items]

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]


def backbone_settings(config, tokenizer=None) -> tuple[str, Any]:
    """(architecture, config) of the backbone: the init checkpoint's, with explicit `model.*` keys on top.

    Sized to `tokenizer`; without one (checking a config before a tokenizer exists), the
    vocabulary is the checkpoint's or the architecture's default.
    """
    model_cfg, transfer = config.model, config.transfer
    values = model_cfg.architecture_values()
    preset = model_cfg.preset
    if transfer.init_from_checkpoint:
        checkpoint = locate_checkpoint(transfer.init_from_checkpoint, "transfer.init_from_checkpoint")
        meta = read_checkpoint_config(checkpoint)  # a Hugging Face directory (hf:DIR) too
        if "architecture" in model_cfg.model_fields_set and model_cfg.architecture != meta["architecture"]:
            raise UserError(f"model.architecture is {model_cfg.architecture!r}, but transfer.init_from_checkpoint "
                            f"({checkpoint}) holds a {meta['architecture']!r} backbone; remove model.architecture "
                            "or make them agree.")
        architecture, values, preset = meta["architecture"], {**meta["config"], **values}, None
    else:
        architecture = model_cfg.architecture
        if tokenizer is not None:
            values = {"vocab_size": tokenizer.vocab_size, "pad_token_id": tokenizer.pad_id, **values}
    cls, settings = create_config(architecture, preset, **values)
    if transfer.remove_n_layers:
        if transfer.remove_n_layers >= settings.n_layer:
            raise UserError(f"transfer.remove_n_layers is {transfer.remove_n_layers}, but the backbone has only "
                            f"{settings.n_layer} blocks; at least one must remain.")
        settings.n_layer -= transfer.remove_n_layers
    if tokenizer is not None and settings.vocab_size < tokenizer.vocab_size:
        raise UserError(f"The tokenizer has {tokenizer.vocab_size} tokens but the backbone only {settings.vocab_size} "
                        "embeddings; finetune with the tokenizer of the run the backbone comes from.")
    return cls.architecture_name, settings


def criterion_settings(config, criterion: str) -> dict[str, Any]:
    """The `TaskHeadConfig` fields that make its criterion, from the task section."""
    task = config.task
    return {"criterion": criterion, "label_smoothing": task.label_smoothing, "class_weights": task.class_weights,
            "bitempered_t1": task.bitempered_t1, "bitempered_t2": task.bitempered_t2}


def build_criterion(settings: dict[str, Any]) -> nn.Module:
    """The criterion `criterion_settings` describe; it refuses an option its criterion would ignore."""
    return make_criterion(settings["criterion"], label_smoothing=settings["label_smoothing"],
                          class_weights=settings["class_weights"], t1=settings["bitempered_t1"],
                          t2=settings["bitempered_t2"])


def seeded_subset(examples: list, size: int | None, seed: int) -> list:
    """`size` examples drawn at random (the same ones for the same seed), in their original order;
    all of them when `size` is None or not smaller than the split (`data.max_train_samples`)."""
    if size is None or size >= len(examples):
        return examples
    chosen = sorted(random.Random(seed).sample(range(len(examples)), size))
    return [examples[i] for i in chosen]


def held_out_split(examples: list, fraction: float, seed: int) -> tuple[list, list]:
    """(train, val): a seeded random `fraction` of the examples held out as val, both in their original
    order. Only an explicit `data.val_fraction` does this for labelled data (it takes labels from training)."""
    size = max(1, round(len(examples) * fraction))
    held = set(random.Random(seed).sample(range(len(examples)), size))
    return ([e for i, e in enumerate(examples) if i not in held], [e for i, e in enumerate(examples) if i in held])


class FinetuningTask(Task):
    """Base of sequence classification, scoring and token classification."""

    default_criterion = "cross_entropy"
    # The columns a user most likely has, which `foundry new finetuning` writes into the template.
    default_columns: ClassVar[dict[str, str]] = {"text_column": "text", "label_column": "label"}

    def __init__(self, config, tokenizer):
        super().__init__(config, tokenizer)
        self.architecture, self.backbone_config = backbone_settings(config, tokenizer)
        self.label_set: LabelSet | None = None
        self.target_range: list[float] | None = None

    @classmethod
    def check_config(cls, config) -> None:
        """The backbone (its architecture against the init checkpoint's, the layers removed) and the
        criterion's options; the label set and the vocabulary are checked once data and tokenizer exist."""
        backbone_settings(config)
        build_criterion(criterion_settings(config, cls.criterion_for(config)))

    @classmethod
    def criterion_for(cls, config) -> str:
        """`task.criterion`, else this task's default for the config."""
        return config.task.criterion or cls.default_criterion_for(config)

    @classmethod
    def default_criterion_for(cls, config) -> str:
        return cls.default_criterion

    # ---- what each task defines ----------------------------------------------------------------------
    @abstractmethod
    def read_examples(self, path: Path, fmt: str, require_labels: bool) -> list:
        """Examples of one file (SequenceExample or TokenExample)."""

    @abstractmethod
    def fit_labels(self, examples: list) -> None:
        """Learn the label set (or target range) from the training examples."""

    @abstractmethod
    def encode(self, example, split_key: str | None) -> tuple[dict, Truncations]:
        """Model inputs of one example (its label too when `split_key` names the split it comes
        from), and what fitting it to `max_length` cut."""

    @abstractmethod
    def head_config(self, labels: LabelSet | None, target_range: list[float] | None) -> TaskHeadConfig:
        """The head this task puts on the backbone, sized to the labels (or scoring range) of the training split."""

    @abstractmethod
    def metrics(self, outputs: list[torch.Tensor], batches: list[dict]) -> dict:
        """The task's metrics from the model outputs and their batches (labels included)."""

    # ---- shared ----------------------------------------------------------------------------------------
    @property
    def is_causal(self) -> bool:
        return self.backbone_config.attention_type == "causal"

    @property
    def uses_token_types(self) -> bool:
        return getattr(self.backbone_config, "type_vocab_size", 0) > 0

    @property
    def max_length(self) -> int:
        return length_limit(self.config.tokenizer.max_length, self.backbone_config.block_size)[0]

    def pooler(self) -> str:
        """`task.pooler`, else the default for the backbone (`config.choices.default_pooler`)."""
        return self.config.task.pooler or default_pooler(self.backbone_config.attention_type)

    def build_model(self, splits: DatasetSplits) -> nn.Module:
        return TaskModel(self.architecture, self.backbone_config, self.head_config(splits.labels, splits.target_range))

    def use_trained_model(self, model: TaskModel) -> None:
        """Adopt the labels (or scoring range) a trained model was saved with, for eval and predict."""
        head = model.head_config
        self.label_set = LabelSet(head.labels) if head.labels is not None else None
        self.target_range = head.target_range

    def split_files(self, split: str) -> tuple[list[Path], str] | None:
        spec = getattr(self.config.data, split).path
        if spec is None:
            return None
        paths = resolve_paths(spec, SPLIT_KEYS[split])
        return paths, self.config.data.format or guess_format(paths[0])

    def examples_of(self, split: str) -> list | None:
        found = self.split_files(split)
        if found is None:
            return None
        paths, fmt = found
        return [e for path in paths for e in self.read_examples(path, fmt, require_labels=True)]

    def build_datasets(self, cache_dir: Path) -> DatasetSplits:
        if self.config.data.train.path is None:
            raise UserError("data.train.path is not set: a finetuning run needs labelled training data.")
        train = self.examples_of("train")
        if self.label_set is None and self.target_range is None:
            self.fit_labels(train)  # on every example, so a subset still knows every label
        data, seed = self.config.data, self.config.experiment.seed
        val = self.examples_of("val")
        if val is None and "val_fraction" in data.model_fields_set and data.val_fraction > 0:
            train, val = held_out_split(train, data.val_fraction, seed)
        train = seeded_subset(train, data.max_train_samples, seed)
        splits = {"train": train, "val": val, "test": self.examples_of("test")}
        encoded = {name: self.encode_split(examples, SPLIT_KEYS[name]) if examples else None
                   for name, examples in splits.items()}
        print(f"Finetuning data: " + ", ".join(f"{name} {len(ds)}" for name, ds in encoded.items() if ds)
              + " examples.", file=sys.stderr)
        return DatasetSplits(encoded["train"], encoded["val"], encoded["test"], labels=self.label_set,
                             target_range=self.target_range)

    def encode_split(self, examples: list, split_key: str) -> EncodedExamples:
        """The examples of one split encoded, with one warning line if any was cut."""
        items, truncations = [], Truncations()
        for example in examples:
            item, cut = self.encode(example, split_key)
            items.append(item)
            truncations += cut
        report_truncations(truncations, split_key, *length_limit(self.config.tokenizer.max_length,
                                                                 self.backbone_config.block_size))
        return EncodedExamples(items)

    def collator(self):
        return LabelledCollator(pad_id=self.tokenizer.pad_id, pad_to_multiple_of=self.config.task.pad_to_multiple_of)

    def criterion(self) -> str:
        return self.criterion_for(self.config)

    def evaluation_totals(self, model: nn.Module, batches: Iterable[dict],
                          autocast: AbstractContextManager) -> dict:
        """The loss summed over targets, and every batch's logits and host copy (the metrics need all
        predictions: F1 or Pearson are not sums)."""
        totals = {"loss_sum": 0.0, "count": 0, "outputs": [], "batches": []}
        for batch in batches:
            with autocast:
                output = model(**batch)
            size = self.count_targets(batch)
            totals["loss_sum"] += float(output.loss.float()) * size
            totals["count"] += size
            totals["outputs"].append(output.logits.float().cpu())
            totals["batches"].append({k: v.cpu() for k, v in batch.items()})
        return totals

    def metrics_from_totals(self, totals: dict) -> dict:
        if totals["count"] == 0:
            raise UserError("The evaluation split has no labelled examples.")
        return {"loss": totals["loss_sum"] / totals["count"], **self.metrics(totals["outputs"], totals["batches"])}

    def count_targets(self, batch: dict) -> int:
        """Integer labels other than -100 (class ids, token tags), else rows (scores); free on the host batch."""
        labels = batch["labels"]
        if labels.dtype == torch.long:
            return int((labels != -100).sum())
        return labels.shape[0]

    @abstractmethod
    def predict(self, model: TaskModel, examples: list, batch_size: int,
                device: torch.device) -> tuple[list[dict], Truncations]:
        """Prediction fields (label and probabilities, score, or tags) for each example, in order,
        and what fitting the examples to `max_length` cut."""

    def batches_of(self, examples: list, batch_size: int, device: torch.device) -> PredictionBatches:
        return PredictionBatches(self, examples, batch_size, device)


class PredictionBatches:
    """(examples, model-ready batch, collated batch) for prediction, in order; `truncations` adds up
    what encoding the examples cut, so far."""

    def __init__(self, task: FinetuningTask, examples: list, batch_size: int, device: torch.device):
        self.task, self.examples, self.batch_size, self.device = task, examples, batch_size, device
        self.truncations = Truncations()

    def __iter__(self) -> Iterator[tuple[list, dict, dict]]:
        collate = self.task.collator()
        for start in range(0, len(self.examples), self.batch_size):
            chunk = self.examples[start:start + self.batch_size]
            items = []
            for example in chunk:
                item, cut = self.task.encode(example, None)
                items.append(item)
                self.truncations += cut
            batch = collate(items)
            yield chunk, {k: v.to(self.device) for k, v in batch.items() if k != "word_starts"}, batch
