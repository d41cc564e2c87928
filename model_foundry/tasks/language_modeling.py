"""Pretraining objectives: causal LM (predict the next token) and masked LM (BERT's cloze).

Both read a corpus tokenized once into a memory-mapped token file and cut it into packed windows
of `block_size` tokens, so no compute is spent on padding. The `.pt` dataset format (padded rows
with a True = PAD mask) is also accepted: its rows are unpadded on the fly, and the collator pads
each batch only to its longest real row.
"""
from __future__ import annotations

import sys
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset

from model_foundry.data import (CausalLMCollator, CausalWindows, MaskedLMCollator, MaskedWindows,
                                TokenFile, guess_format, load_tensor_file, resolve_paths, split_train_val,
                                tokenize_to_cache)
from model_foundry.errors import UserError
from model_foundry.models.registry import create_config, get_architecture
from model_foundry.tasks.base import DatasetSplits, Task, language_model_metrics
from model_foundry.tasks.registry import bidirectional_key, register_task, sees_both_directions


class LanguageModelingTask(Task):
    """What causal and masked LM share: data preparation, model creation, loss-based metrics."""

    causal: bool
    loss_output_kind = "language_model"

    @classmethod
    def check_config(cls, config) -> None:
        cls.settings_for(config)

    @classmethod
    def settings_for(cls, config, tokenizer=None):
        """(architecture class, config) from the model section, refusing an architecture or settings
        this task cannot train. Sized to `tokenizer`; without one (checking a config before a
        tokenizer exists) to the architecture's default vocabulary."""
        model_cfg = config.model
        architecture = get_architecture(model_cfg.architecture)
        if architecture.only_default_task and cls.name != architecture.default_task:
            raise UserError(f"model.architecture {model_cfg.architecture!r} trains only with task.type "
                            f"{architecture.default_task}, not task.type {cls.name}; for another objective use "
                            "model.architecture: bert.")
        if cls.name in ("causal_lm", "masked_lm") and architecture.default_task not in ("causal_lm", "masked_lm"):
            raise UserError(f"task.type {cls.name} trains a single-stack language model, but model.architecture "
                            f"{model_cfg.architecture!r} is not one; leave task.type unset to train its own objective "
                            f"({architecture.default_task}), or choose gpt, bert, lstm, gru or rnn.")
        sized = {} if tokenizer is None else {"vocab_size": tokenizer.vocab_size, "pad_token_id": tokenizer.pad_id}
        architecture, settings = create_config(model_cfg.architecture, model_cfg.preset, **sized,
                                               **model_cfg.architecture_values())
        if cls.name == "causal_lm" and sees_both_directions(settings):
            raise UserError(f"task.type causal_lm cannot train this {model_cfg.architecture} model: it sees both "
                            f"directions ({bidirectional_key(settings)}), so every position would see the token it "
                            "predicts and the loss would fall to nothing without learning. Use task.type: masked_lm, "
                            "or make the model causal (model.attention_type: causal for transformers, "
                            "model.bidirectional: false for recurrent models).")
        return architecture, settings

    def model_settings(self):
        """(architecture class, config) of the model this run trains, sized to its tokenizer."""
        return self.settings_for(self.config, self.tokenizer)

    def build_model(self, splits: DatasetSplits) -> nn.Module:
        architecture, settings = self.model_settings()
        return architecture(settings)

    def build_datasets(self, cache_dir: Path) -> DatasetSplits:
        data = self.config.data
        if data.train.path is None:
            raise UserError("data.train.path is not set: a pretraining run needs a training corpus "
                            "(a text, jsonl, csv or .pt file, a glob, or a list of files).")
        if data.max_train_samples is not None:
            print("data.max_train_samples has no effect on a pretraining run (its corpus is one token stream); "
                  "it subsamples a finetuning run's labelled examples.", file=sys.stderr)
        block = self.model_settings()[1].block_size
        train_paths = resolve_paths(data.train.path, "data.train.path")
        fmt = data.format or guess_format(train_paths[0])
        if fmt == "pt":
            return DatasetSplits(*(self.tensor_split(getattr(data, s).path, f"data.{s}.path", block)
                                   for s in ("train", "val", "test")))
        train_tokens = self.token_file(train_paths, fmt, cache_dir)
        if data.val.path is not None:
            train = self.windows(train_tokens, range(train_tokens.num_tokens), block)
            val = self.windows_from(data.val.path, "data.val.path", fmt, cache_dir, block)
        else:
            train_span, val_span = split_train_val(train_tokens.num_tokens, data.val_fraction)
            train = self.windows(train_tokens, train_span, block)
            val = self.windows(train_tokens, val_span, block) if len(val_span) > block + 1 else None
        test = self.windows_from(data.test.path, "data.test.path", fmt, cache_dir, block)
        return DatasetSplits(train, val, test)

    def token_file(self, paths: list[Path], fmt: str, cache_dir: Path) -> TokenFile:
        data = self.config.data
        return tokenize_to_cache(paths, self.tokenizer, cache_dir, fmt=fmt, text_column=data.text_column,
                                 separator_id=self.tokenizer.eos_id,
                                 num_workers=data.num_workers)

    def windows_from(self, spec, key: str, fmt: str, cache_dir: Path, block: int) -> Dataset | None:
        if spec is None:
            return None
        tokens = self.token_file(resolve_paths(spec, key), fmt, cache_dir)
        return self.windows(tokens, range(tokens.num_tokens), block)

    def windows(self, tokens: TokenFile, span: range, block: int) -> Dataset:
        """Packed windows over `span` of the token file, which know the words they stand for."""
        if self.causal:
            return CausalWindows(tokens.array(), span, block, tokens.num_words)
        return MaskedWindows(tokens.array(), span, block, self.tokenizer.cls_id, tokens.num_words)

    def tensor_split(self, spec, key: str, block: int) -> Dataset | None:
        if spec is None:
            return None
        datasets = [load_tensor_file(p) for p in resolve_paths(spec, key)]
        return UnpaddedRows(torch.utils.data.ConcatDataset(datasets), max_length=block, causal=self.causal)

    def training_loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        if not self.loss_modifiers:
            return model(**batch).loss
        return self.loss_modifiers(model(**batch).logits, batch["labels"])

    def evaluation_totals(self, model: nn.Module, batches: Iterable[dict],
                          autocast: AbstractContextManager) -> dict:
        totals = {"loss_sum": 0.0, "targets": 0, "correct": 0}
        for batch in batches:
            with autocast:
                output = model(**batch)
            targets = batch["labels"] != -100
            count = int(targets.sum())
            totals["loss_sum"] += float(output.loss.float()) * count
            totals["targets"] += count
            if not self.causal:
                totals["correct"] += int((output.logits.argmax(-1)[targets] == batch["labels"][targets]).sum())
        return totals

    def metrics_from_totals(self, totals: dict) -> dict[str, float]:
        if totals["targets"] == 0:
            raise UserError("The evaluation split has no targets to score; give it more text or lower "
                            "training.eval_iters / model.block_size.")
        metrics = language_model_metrics(totals["loss_sum"] / totals["targets"])
        if not self.causal:
            metrics["mlm_accuracy"] = totals["correct"] / totals["targets"]
        return metrics


@register_task("causal_lm")
class CausalLMTask(LanguageModelingTask):
    causal = True
    metric_names = ("loss", "perplexity", "bits_per_token")

    def collator(self):
        return CausalLMCollator(pad_id=self.tokenizer.pad_id,
                                pad_to_multiple_of=self.config.task.pad_to_multiple_of)


@register_task("masked_lm")
class MaskedLMTask(LanguageModelingTask):
    causal = False
    metric_names = ("loss", "perplexity", "bits_per_token", "mlm_accuracy")

    def training_loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        """Masked LM projects only its masked positions to the vocabulary in training; loss modifiers
        weigh targets by their place in the sequence, so with them every position is projected."""
        if self.loss_modifiers:
            return super().training_loss(model, batch)
        return model(**batch, score_targets_only=True).loss

    def collator(self):
        tok = self.tokenizer
        return MaskedLMCollator(pad_id=tok.pad_id, mask_id=tok.mask_id, vocab_size=tok.vocab_size,
                                special_ids=tok.special_ids, mlm_probability=self.config.task.mlm_probability,
                                pad_to_multiple_of=self.config.task.pad_to_multiple_of)


class UnpaddedRows(Dataset):
    """Rows of a `.pt` dataset with their padding removed and capped to `max_length`.

    Causal rows become (tokens[:-1], tokens[1:]) pairs; masked rows keep their ids, and the
    collator masks them. The collator then pads a batch to its longest real row only.
    """

    def __init__(self, rows: Dataset, max_length: int, causal: bool):
        self.rows, self.max_length, self.causal = rows, max_length, causal

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict:
        row = self.rows[index]
        ids = row["input_ids"][row["attention_mask"].bool()]
        if self.causal:
            ids = ids[: self.max_length + 1]
            return {"input_ids": ids[:-1], "labels": ids[1:]}
        return {"input_ids": ids[: self.max_length]}
