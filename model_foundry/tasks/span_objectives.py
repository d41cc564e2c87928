"""Sentence-level pretraining: contrastive span pairs and bag-of-words prediction on whole text units.

The data are text units (`data/text_units.py`: a line, a row's text, a CoNLL sentence; never cut
at a window edge), each truncated to `model.block_size` with its [CLS]. From every unit the
collator cuts two non-overlapping views (`data/span_pairs.py`: a random span and the rest of the
unit, the inverse cloze task); units shorter than 2 x `task.min_span_tokens` are left out.

- `span_contrastive`: InfoNCE between the two views' pooled vectors, the other units of the
  batch the negatives, cosines divided by `task.temperature`, symmetric cross-entropy.
  Metrics: `loss`, `contrastive_loss`, `retrieval_accuracy` (the share of spans whose most similar
  span of the other view in the batch is their partner; chance is 1 / batch size).
- `span_bag_of_words`: from one view's pooled vector, a softmax over the vocabulary predicts the
  distinct words of the other view (special tokens excluded), both directions averaged.
  Metrics: `loss`, `bow_loss`, `bow_recall_at_10` (the share of the other view's words among the
  ten highest predictions).

Pooling is the mean of the real tokens for a bidirectional backbone (bert, electra's
discriminator, the hybrid's bidirectional stack, gpt with `model.attention_type: bidirectional`,
lstm/gru/rnn with `model.bidirectional: true`) and the last token for a causal one, the only one
that reads the whole view. `task.lm_weight` > 0 adds the model's own token objective on the same
units (masked LM, or ELECTRA's for electra, on a bidirectional model; causal LM on a causal one),
reported as `lm_loss`. The model (`models/sentence_objective.py`) keeps the wrapped model's
weight names, so its checkpoint finetunes like any pretraining run.
"""
from __future__ import annotations

import sys
from abc import abstractmethod
from collections.abc import Iterable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import ClassVar

from torch import nn

from model_foundry.data import CausalLMCollator, MaskedLMCollator, guess_format, resolve_paths
from model_foundry.data.span_pairs import SpanPairCollator
from model_foundry.data.text_units import TextUnits, split_units, tokenize_units
from model_foundry.errors import UserError
from model_foundry.models.heads.sentence import recall_at_k, retrieval_hits
from model_foundry.models.registry import create_config, get_architecture
from model_foundry.models.sentence_objective import SentenceHeadConfig, SentenceObjectiveModel
from model_foundry.tasks.base import DatasetSplits, Task
from model_foundry.tasks.registry import register_task, sees_both_directions

SENTENCE_ARCHITECTURES = ("bert", "electra", "hybrid", "gpt", "lstm", "gru", "rnn")


class SpanObjectiveTask(Task):
    """What both sentence objectives share: text units, span pairs, the wrapped model."""

    loss_output_kind = None  # the modifiers reweigh token cross-entropies; these losses are not ones
    objective: ClassVar[str]

    @classmethod
    def check_config(cls, config) -> None:
        cls.settings_for(config)

    @classmethod
    def settings_for(cls, config, tokenizer=None):
        """(architecture class, config) of the model whose backbone the objective trains."""
        name = config.model.architecture
        architecture = get_architecture(name)
        if architecture.architecture_name not in SENTENCE_ARCHITECTURES:
            raise UserError(f"task.type {cls.name} trains a backbone of {', '.join(SENTENCE_ARCHITECTURES)}, but "
                            f"model.architecture is {name!r}; choose one of those.")
        values = dict(config.model.architecture_values())
        if tokenizer is not None:
            values.update(vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id)
        if architecture.architecture_name == "electra":
            values.update(generator_size=config.task.generator_size, rtd_weight=config.task.rtd_weight)
        return create_config(name, config.model.preset, **values)

    def model_settings(self):
        return self.settings_for(self.config, self.tokenizer)

    @property
    def bidirectional(self) -> bool:
        return sees_both_directions(self.model_settings()[1])

    @property
    def trains_language_model(self) -> bool:
        return self.config.task.lm_weight > 0

    def head_config(self) -> SentenceHeadConfig:
        architecture, _ = self.model_settings()
        task = self.config.task
        hybrid = architecture.architecture_name == "hybrid"
        return SentenceHeadConfig(objective=self.objective, pooler="mean" if self.bidirectional else "last",
                                  temperature=task.temperature, projection_size=task.projection_size,
                                  lm_weight=task.lm_weight, lm_arguments={"objective": "mlm"} if hybrid else {})

    def build_model(self, splits: DatasetSplits) -> nn.Module:
        architecture, settings = self.model_settings()
        return SentenceObjectiveModel(architecture(settings), self.head_config())

    # ---- data ------------------------------------------------------------------------------------
    def build_datasets(self, cache_dir: Path) -> DatasetSplits:
        data = self.config.data
        if data.train.path is None:
            raise UserError(f"data.train.path is not set: task.type {self.name} needs a corpus of text units "
                            "(a text file with one unit per line, or a jsonl, csv, tsv or CoNLL file).")
        train_units = self.units(data.train.path, "data.train.path", cache_dir)
        if data.val.path is not None:
            train = self.dataset(*train_units, range(len(train_units[1]) - 1))
            val = self.dataset(*self.units(data.val.path, "data.val.path", cache_dir), None)
        else:
            train_range, val_range = split_units(len(train_units[1]) - 1, data.val_fraction)
            train, val = self.dataset(*train_units, train_range), self.dataset(*train_units, val_range)
        test = self.dataset(*self.units(data.test.path, "data.test.path", cache_dir), None) if data.test.path else None
        if len(train) == 0:
            raise UserError(f"data.train.path has no text unit of at least {2 * self.config.task.min_span_tokens} "
                            f"tokens, so no unit splits into two spans of task.min_span_tokens "
                            f"({self.config.task.min_span_tokens}); lower it or give longer units.")
        if train.skipped:
            print(f"{train.skipped} training unit(s) shorter than 2 x task.min_span_tokens tokens are left out "
                  "(they cannot be cut into two spans).", file=sys.stderr)
        return DatasetSplits(train, val if val is not None and len(val) else None, test)

    def units(self, spec, key: str, cache_dir: Path):
        paths = resolve_paths(spec, key)
        fmt = self.config.data.format or guess_format(paths[0])
        if fmt == "pt":
            raise UserError(f"{key}: task.type {self.name} reads text units, and a .pt file holds rows of ids "
                            "already cut to a length; give the text (one unit per line, or a jsonl, csv, tsv "
                            "or CoNLL file).")
        return tokenize_units(paths, self.tokenizer, cache_dir, fmt=fmt, text_column=self.config.data.text_column)

    def dataset(self, ids, offsets, indices: range | None) -> TextUnits:
        block = self.model_settings()[1].block_size
        max_tokens = block - 1 if self.tokenizer.cls_id is not None else block  # room for [CLS]
        indices = range(len(offsets) - 1) if indices is None else indices
        return TextUnits(ids, offsets, indices, max_tokens, min_tokens=2 * self.config.task.min_span_tokens)

    def collator(self) -> SpanPairCollator:
        tok = self.tokenizer
        if tok.pad_id is None:
            raise UserError(f"task.type {self.name} pads its spans, so it needs a tokenizer with a pad token "
                            "(Model Foundry's own tokenizers have one).")
        task = self.config.task
        return SpanPairCollator(pad_id=tok.pad_id, cls_id=tok.cls_id, vocab_size=tok.vocab_size,
                                special_ids=tok.special_ids, min_span=task.min_span_tokens,
                                bag_of_words=self.objective == "span_bag_of_words",
                                language_model=self.language_model_collator(), causal=not self.bidirectional)

    def language_model_collator(self):
        """The collator of the token objective trained beside (None with task.lm_weight 0)."""
        if not self.trains_language_model:
            return None
        tok, task = self.tokenizer, self.config.task
        if not self.bidirectional:
            return CausalLMCollator(pad_id=tok.pad_id)
        if tok.mask_id is None:
            raise UserError(f"task.lm_weight is {task.lm_weight}: this bidirectional model learns masked LM beside "
                            f"task.type {self.name}, which needs a tokenizer with a mask token such as [MASK]; use "
                            "one (Model Foundry's own tokenizers have it), or set task.lm_weight: 0.")
        return MaskedLMCollator(pad_id=tok.pad_id, mask_id=tok.mask_id, vocab_size=tok.vocab_size,
                                special_ids=tok.special_ids, mlm_probability=task.mlm_probability)

    def count_targets(self, batch: dict) -> int:
        """Units: each is one pair, and the sentence loss averages over them."""
        return int(batch["view_a_input_ids"].shape[0])

    # ---- evaluation ------------------------------------------------------------------------------
    def evaluation_totals(self, model: nn.Module, batches: Iterable[dict],
                          autocast: AbstractContextManager) -> dict:
        totals = {"units": 0, "loss_sum": 0.0, "sentence_sum": 0.0, "lm_sum": 0.0, "spans": 0, "hits": 0,
                  "recall_sum": 0.0, "recall_rows": 0}
        for batch in batches:
            with autocast:
                output = model(**batch)
            units = int(batch["view_a_input_ids"].shape[0])
            totals["units"] += units
            totals["loss_sum"] += float(output.loss.float()) * units
            totals["sentence_sum"] += float(output.sentence_loss.float()) * units
            if output.lm_loss is not None:
                totals["lm_sum"] += float(output.lm_loss.float()) * units
            if output.similarities is not None and units > 1:  # a batch of one has no negative
                totals["spans"] += 2 * units
                totals["hits"] += int(retrieval_hits(output.similarities))
            if output.bow_logits is not None:
                for logits, words in zip(output.bow_logits, (batch["view_a_words"], batch["view_b_words"])):
                    recalls = recall_at_k(logits.float(), words, k=10)
                    totals["recall_sum"] += float(recalls.sum())
                    totals["recall_rows"] += len(recalls)
        return totals

    @abstractmethod
    def sentence_metrics(self, totals: dict) -> dict[str, float]:
        """The objective's own metrics beside `loss` and `lm_loss`."""

    def metrics_from_totals(self, totals: dict) -> dict[str, float]:
        if totals["units"] == 0:
            raise UserError("The evaluation split has no text units to score; give it more units or lower "
                            "task.min_span_tokens.")
        metrics = {"loss": totals["loss_sum"] / totals["units"], **self.sentence_metrics(totals)}
        if self.trains_language_model:
            metrics["lm_loss"] = totals["lm_sum"] / totals["units"]
        return metrics


@register_task("span_contrastive")
class SpanContrastiveTask(SpanObjectiveTask):
    objective = "span_contrastive"
    metric_names = ("loss", "contrastive_loss", "retrieval_accuracy")

    def sentence_metrics(self, totals: dict) -> dict[str, float]:
        accuracy = totals["hits"] / totals["spans"] if totals["spans"] else float("nan")
        return {"contrastive_loss": totals["sentence_sum"] / totals["units"], "retrieval_accuracy": accuracy}


@register_task("span_bag_of_words")
class SpanBagOfWordsTask(SpanObjectiveTask):
    objective = "span_bag_of_words"
    metric_names = ("loss", "bow_loss", "bow_recall_at_10")

    def sentence_metrics(self, totals: dict) -> dict[str, float]:
        recall = totals["recall_sum"] / totals["recall_rows"] if totals["recall_rows"] else float("nan")
        return {"bow_loss": totals["sentence_sum"] / totals["units"], "bow_recall_at_10": recall}
