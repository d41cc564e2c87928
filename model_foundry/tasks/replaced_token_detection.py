"""Replaced token detection: ELECTRA's pretraining objective (Clark et al. 2020) for a BERT.

Masked LM learns only at the ~15% of positions it masks. Here a small generator fills the masked
positions with tokens sampled from its own cloze prediction, and the configured transformer, the
discriminator, decides at every real position whether its token is the original or a replacement:
every position teaches the discriminator, which is what finetuning keeps. The data and the masking
are masked LM's (packed windows that start with [CLS], BERT's 80/10/10 masking at
`task.mlm_probability`); the model (`models/electra.py`) is built from the `model` section's
settings plus `task.generator_size` and `task.rtd_weight`, and its checkpoint records the
`electra` architecture, so finetuning, `load_model`, fill-mask and export know what they read.

Metrics: `loss` (what training minimises), the generator's `mlm_loss` and `mlm_accuracy` on the
masked positions, the discriminator's `rtd_loss` and `rtd_accuracy` over real positions, and
`replaced_share`, the share of real positions that were replaced: always answering "original"
scores 1 - replaced_share, the bar `rtd_accuracy` has to clear. Evaluation draws the replacements
from a generator seeded by the batch's position, so evaluating a checkpoint twice gives the same
numbers and leaves the training RNG alone.
"""
from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import asdict

import torch
from torch import nn

from model_foundry.data import MaskedLMCollator
from model_foundry.errors import UserError
from model_foundry.models.electra import Electra, ElectraConfig
from model_foundry.models.registry import get_architecture
from model_foundry.tasks.language_modeling import LanguageModelingTask
from model_foundry.tasks.registry import register_task

IGNORE_INDEX = -100
# Architectures whose settings are a plain bidirectional transformer the discriminator can take.
DISCRIMINATOR_ARCHITECTURES = ("bert", "gpt", "electra")
EVAL_SAMPLING_SEED = 0


def eval_sampling_seed(batch: dict) -> int:
    """The seed of the generator's samples on an evaluation batch: from the batch's tokens, so a batch
    gets the same replacements wherever it falls (any process, any position in the split)."""
    return EVAL_SAMPLING_SEED + int(batch["input_ids"].sum())


@register_task("replaced_token_detection")
class ReplacedTokenDetectionTask(LanguageModelingTask):
    causal = False  # masked LM's windows: [CLS] then text
    loss_output_kind = None  # the modifiers reweigh token cross-entropies; this loss is not one
    metric_names = ("loss", "mlm_loss", "mlm_accuracy", "rtd_loss", "rtd_accuracy", "replaced_share")

    @classmethod
    def settings_for(cls, config, tokenizer=None) -> tuple[type[Electra], ElectraConfig]:
        """ELECTRA built from the configured bidirectional transformer's settings and the task's keys."""
        name = config.model.architecture
        architecture = get_architecture(name)
        if architecture.architecture_name not in DISCRIMINATOR_ARCHITECTURES:
            raise UserError(f"task.type replaced_token_detection trains a bidirectional transformer as the "
                            f"discriminator, but model.architecture is {name!r}; set model.architecture: "
                            f"bert (or gpt with model.attention_type: bidirectional), or choose that architecture's "
                            f"own objective ({architecture.default_task}).")
        _, settings = super().settings_for(config, tokenizer)
        task = config.task  # ElectraConfig refuses a causal discriminator
        values = {**asdict(settings), "generator_size": task.generator_size, "rtd_weight": task.rtd_weight}
        return Electra, ElectraConfig(**values)

    def collator(self) -> MaskedLMCollator:
        tok = self.tokenizer
        if tok.mask_id is None or tok.pad_id is None:
            raise UserError("task.type replaced_token_detection masks tokens for its generator, so it needs a "
                            "tokenizer with a mask token such as [MASK] and a pad token (Model Foundry's own "
                            "tokenizers have both).")
        return MaskedLMCollator(pad_id=tok.pad_id, mask_id=tok.mask_id, vocab_size=tok.vocab_size,
                                special_ids=tok.special_ids, mlm_probability=self.config.task.mlm_probability,
                                pad_to_multiple_of=self.config.task.pad_to_multiple_of)

    def count_targets(self, batch: dict) -> int:
        """Real tokens: the discriminator's loss, the bulk of the objective, averages over them."""
        return int(batch["attention_mask"].sum())

    def evaluation_totals(self, model: nn.Module, batches: Iterable[dict],
                          autocast: AbstractContextManager) -> dict:
        totals = {"mlm_sum": 0.0, "rtd_sum": 0.0, "masked": 0, "real": 0, "mlm_correct": 0, "rtd_correct": 0,
                  "replaced": 0}
        for batch in batches:
            sampler = torch.Generator(device=batch["input_ids"].device).manual_seed(eval_sampling_seed(batch))
            with autocast:
                output = model(**batch, sampling_generator=sampler)
            masked = batch["labels"] != IGNORE_INDEX
            real = batch["attention_mask"].bool()
            masked_targets, real_targets = int(masked.sum()), int(real.sum())
            totals["mlm_sum"] += float(output.mlm_loss.float()) * masked_targets
            totals["rtd_sum"] += float(output.rtd_loss.float()) * real_targets
            totals["masked"] += masked_targets
            totals["real"] += real_targets
            totals["mlm_correct"] += int((output.mlm_logits.argmax(-1) == batch["labels"][masked]).sum())
            predicted = output.logits.float() > 0
            totals["rtd_correct"] += int((predicted == output.replaced)[real].sum())
            totals["replaced"] += int(output.replaced[real].sum())
        return totals

    def metrics_from_totals(self, totals: dict) -> dict[str, float]:
        if totals["masked"] == 0:
            raise UserError("The evaluation split has no targets to score; give it more text or lower "
                            "training.eval_iters / model.block_size.")
        mlm_loss, rtd_loss = totals["mlm_sum"] / totals["masked"], totals["rtd_sum"] / totals["real"]
        return {"loss": mlm_loss + self.config.task.rtd_weight * rtd_loss, "mlm_loss": mlm_loss,
                "mlm_accuracy": totals["mlm_correct"] / totals["masked"], "rtd_loss": rtd_loss,
                "rtd_accuracy": totals["rtd_correct"] / totals["real"],
                "replaced_share": totals["replaced"] / totals["real"]}
