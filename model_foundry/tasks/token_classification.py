"""Token classification (tagging): one label per word, such as a part of speech or a BIO entity tag.

Words are split into sub-word tokens; the first sub-token of each word carries the word's label
and the others are ignored (-100), so the loss and the metrics count words, not tokens. At
prediction time the first sub-token's class becomes the word's tag.
"""
from __future__ import annotations

from functools import cached_property
from pathlib import Path

import torch
from torch import nn

from model_foundry.data import TokenExample, encode_words, read_token_examples
from model_foundry.data.labelled import LabelSet, Truncations
from model_foundry.errors import UserError
from model_foundry.models.task_model import TaskHeadConfig, TaskModel
from model_foundry.tasks.finetuning import FinetuningTask, build_criterion, criterion_settings
from model_foundry.tasks.metrics import token_metrics
from model_foundry.tasks.registry import register_task

IGNORE_INDEX = -100


@register_task("token_classification")
class TokenClassificationTask(FinetuningTask):
    metric_names = ("loss", "token_accuracy", "f1_macro", "entity_f1")
    default_best_metric = "token_accuracy"
    default_columns = {"text_column": "tokens", "label_column": "upos"}
    loss_output_kind = "token_classifier"

    def training_loss(self, model: TaskModel, batch: dict) -> torch.Tensor:
        """The criterion's loss; loss modifiers reweigh the criterion's own per-word losses, so class
        weights and the bi-tempered loss stay in force."""
        if not self.loss_modifiers:
            return model(**batch).loss
        logits = model(**{key: value for key, value in batch.items() if key != "labels"}).logits
        losses, weights = self.criterion_module.to(logits.device).token_losses(logits, batch["labels"])
        return self.loss_modifiers(logits, batch["labels"], losses, weights)

    @classmethod
    def check_config(cls, config) -> None:
        super().check_config(config)
        criterion = cls.criterion_for(config)
        modifiers = config.loss_modifiers
        if modifiers.enabled and modifiers.target_smoothing_enabled and criterion != "cross_entropy":
            raise UserError(f"loss_modifiers.target_smoothing_enabled smooths a cross-entropy, but task.criterion is "
                            f"{criterion!r}; use task.label_smoothing for its own smoothing, or set "
                            "task.criterion: cross_entropy.")

    @cached_property
    def criterion_module(self) -> nn.Module:
        """The model's criterion, built from the same settings (its per-word losses feed the modifiers)."""
        return build_criterion(criterion_settings(self.config, self.criterion()))

    def read_examples(self, path: Path, fmt: str, require_labels: bool) -> list[TokenExample]:
        data = self.config.data
        return read_token_examples(path, fmt, text_column=data.text_column, label_column=data.label_column,
                                   require_labels=require_labels)

    def fit_labels(self, examples: list[TokenExample]) -> None:
        self.label_set = LabelSet.from_values(tag for e in examples for tag in e.tags)

    def encode(self, example: TokenExample, split_key: str | None) -> tuple[dict, Truncations]:
        """Training and eval items carry per-token labels; prediction items carry where words start."""
        input_ids, word_starts, truncations = encode_words(self.tokenizer, example.words, self.max_length)
        if split_key is None:
            return {"input_ids": input_ids, "word_starts": word_starts}, truncations
        labels = [IGNORE_INDEX] * len(input_ids)
        for tag, position in zip(example.tags, word_starts):
            if position >= 0:  # words cut off by max_length (or with no token) are not scored
                labels[position] = self.label_set.index(tag, example.source, split_key)
        return {"input_ids": input_ids, "labels": labels}, truncations

    def head_config(self, labels: LabelSet | None, target_range: list[float] | None) -> TaskHeadConfig:
        task = self.config.task
        return TaskHeadConfig(task="token_classification", num_outputs=len(labels), labels=labels.labels,
                              head=task.head, head_dropout=task.head_dropout,
                              **criterion_settings(self.config, self.criterion()))

    def metrics(self, outputs: list[torch.Tensor], batches: list[dict]) -> dict:
        names = self.label_set.labels
        predicted, gold = [], []
        for logits, batch in zip(outputs, batches):
            best = logits.argmax(-1)
            for row_pred, row_gold in zip(best, batch["labels"]):
                scored = row_gold != IGNORE_INDEX
                predicted.append([names[i] for i in row_pred[scored].tolist()])
                gold.append([names[i] for i in row_gold[scored].tolist()])
        return token_metrics(predicted, gold)

    def predict(self, model: TaskModel, examples: list, batch_size: int, device: torch.device,
                threshold: float = 0.5) -> tuple[list[dict], Truncations]:
        """`tokens` and `tags` per example (`predict_run` splits long inputs so that every word fits)."""
        names = self.label_set.labels
        rows, batches = [], self.batches_of(examples, batch_size, device)
        for chunk, batch, collated in batches:
            best = model(**batch).logits.argmax(-1).cpu()
            for example, row, starts in zip(chunk, best, collated["word_starts"]):
                tags = [names[int(row[p])] if p >= 0 else None for p in starts.tolist()[:len(example.words)]]
                rows.append({"tokens": example.words, "tags": tags})
        return rows, batches.truncations
