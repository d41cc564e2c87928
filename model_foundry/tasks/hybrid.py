"""The hybrid objective: causal and masked language modelling on the same packed windows.

The data are causal LM's (windows of block_size tokens and their next tokens); the collator adds
a BERT-masked copy of every window, so each batch holds both views of the same text:
`input_ids` / `labels` for the causal objective and `mlm_input_ids` / `mlm_labels` (and
`mlm_attention_mask`) for the masked one. What trains on them depends on `model.hybrid_design`:

- `two_stack`: both objectives on every batch, their losses weighed by `task.loss_weights`
  ([mlm, clm], default [0.5, 0.5]).
- `shared`: one objective per batch, causal with probability `task.causal_ratio` (the GPT-BERT
  recipe uses 1/16). The draw comes from the collator's generator, which the batch stream seeds
  by the batch's position, so a resumed run draws exactly what the uninterrupted one drew. The
  batch says which objective it is (`objective`: "clm" or "mlm"). The objectives' weights in the
  reported loss are how often each is drawn: [1 - causal_ratio, causal_ratio].

Evaluation runs both objectives on every batch: `loss` is the weighted sum the model trains on,
`perplexity` and `bits_per_token` are the causal objective's (comparable with a GPT's), and
`mlm_accuracy` is the share of masked tokens predicted right.
"""
from __future__ import annotations

from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import replace
from functools import cached_property

import torch
from torch import nn

from model_foundry.data import CausalLMCollator, MaskedLMCollator
from model_foundry.errors import UserError
from model_foundry.models.hybrid import DEFAULT_LOSS_WEIGHTS, HybridLM
from model_foundry.tasks.base import language_model_metrics, real_tokens
from model_foundry.tasks.language_modeling import LanguageModelingTask
from model_foundry.tasks.registry import register_task

IGNORE_INDEX = -100


class HybridCollator:
    """Causal LM items -> a batch with the causal view, a masked copy and (shared design) the objective.

    `causal_ratio` None means every batch trains both objectives (two_stack); a number p means
    each batch is causal with probability p and masked otherwise (shared). A shared-design batch
    still carries both views, so evaluation can score both objectives on any batch.
    """

    def __init__(self, causal: CausalLMCollator, masked: MaskedLMCollator, causal_ratio: float | None = None):
        self.causal, self.masked, self.causal_ratio = causal, masked, causal_ratio

    def __call__(self, items: list[dict], generator: torch.Generator | None = None) -> dict:
        # Draw the objective first, so which batches are causal does not depend on the masking settings.
        objective = self.draw_objective(generator) if self.causal_ratio is not None else None
        batch = self.causal(items)
        masked = self.masked(items, generator)
        batch.update({f"mlm_{key}": value for key, value in masked.items()})
        if objective is not None:
            batch["objective"] = objective
        return batch

    def draw_objective(self, generator: torch.Generator | None) -> str:
        """The batch's objective: "clm" with probability causal_ratio, else "mlm" (0 and 1 are exact)."""
        return "clm" if float(torch.rand((), generator=generator)) < self.causal_ratio else "mlm"


def objective_weights(task, design: str) -> list[float]:
    """[mlm, clm] weights: task.loss_weights for two_stack (`HybridConfig` checks them), the draw
    probabilities for shared, which refuses task.loss_weights."""
    if design == "two_stack":
        return list(task.loss_weights or DEFAULT_LOSS_WEIGHTS)
    if task.loss_weights is not None:
        raise UserError(f"task.loss_weights is {task.loss_weights}, but model.hybrid_design 'shared' trains one "
                        "objective per batch, so the objectives are weighed by how often each is drawn: set "
                        "task.causal_ratio (the share of causal batches) instead, and remove task.loss_weights.")
    return [1.0 - task.causal_ratio, task.causal_ratio]


@register_task("hybrid")
class HybridTask(LanguageModelingTask):
    causal = True  # causal LM windows; the collator derives the masked copy from their inputs
    metric_names = ("loss", "perplexity", "bits_per_token", "mlm_accuracy", "mlm_loss", "clm_loss")

    @classmethod
    def settings_for(cls, config, tokenizer=None):
        """The hybrid's settings, with the loss weights the design trains with."""
        architecture, settings = super().settings_for(config, tokenizer)
        if not issubclass(architecture, HybridLM):
            raise UserError(f"task.type hybrid trains the hybrid architecture, but model.architecture is "
                            f"{config.model.architecture!r}; set model.architecture: hybrid, or choose that "
                            f"architecture's own objective ({architecture.default_task}).")
        return architecture, replace(settings, loss_weights=objective_weights(config.task, settings.hybrid_design))

    def collator(self) -> HybridCollator:
        tok = self.tokenizer
        if tok.mask_id is None or tok.pad_id is None:
            raise UserError("task.type hybrid trains a masked objective too, so it needs a tokenizer with a mask "
                            "token such as [MASK] and a pad token (Model Foundry's own tokenizers have both).")
        task = self.config.task
        causal = CausalLMCollator(pad_id=tok.pad_id, pad_to_multiple_of=task.pad_to_multiple_of)
        masked = MaskedLMCollator(pad_id=tok.pad_id, mask_id=tok.mask_id, vocab_size=tok.vocab_size,
                                  special_ids=tok.special_ids, mlm_probability=task.mlm_probability,
                                  pad_to_multiple_of=task.pad_to_multiple_of)
        shared = self.model_settings()[1].hybrid_design == "shared"
        return HybridCollator(causal, masked, task.causal_ratio if shared else None)

    def training_loss(self, model: nn.Module, batch: dict) -> torch.Tensor:
        """The model's weighted loss, or with loss modifiers each objective's modified loss against its
        own targets (the next tokens for the causal view, the masked tokens for the masked one),
        weighed as the model weighs them."""
        output = model(**batch)
        if not self.loss_modifiers:
            return output.loss
        losses = {}
        if output.clm_logits is not None:
            losses["clm"] = self.loss_modifiers(output.clm_logits, batch["labels"])
        if output.mlm_logits is not None:
            targets = batch["mlm_labels"] if "mlm_input_ids" in batch else batch["labels"]
            losses["mlm"] = self.loss_modifiers(output.mlm_logits, targets)
        if len(losses) == 1:
            return next(iter(losses.values()))
        mlm_weight, clm_weight = self.loss_weights
        return mlm_weight * losses["mlm"] + clm_weight * losses["clm"]

    @cached_property
    def loss_weights(self) -> list[float]:
        """[mlm, clm]: the weights the model's own loss uses (a wrapped model may not expose its config)."""
        return self.model_settings()[1].loss_weights

    def count_targets(self, batch: dict) -> int:
        """The batch's real tokens, whichever objective it trains.

        Counting targets would weigh a causal micro-batch (every token a target) 1 / mlm_probability
        times a masked one when both fall in one accumulated step, while a step of one
        batch weighs it fully: the objectives' balance would depend on gradient_accumulation_steps.
        """
        return real_tokens(batch)

    def evaluation_totals(self, model: nn.Module, batches: Iterable[dict],
                          autocast: AbstractContextManager) -> dict:
        """Both objectives on every batch (whatever a shared-design batch was drawn to train)."""
        totals = {"clm_sum": 0.0, "mlm_sum": 0.0, "clm_count": 0, "mlm_count": 0, "correct": 0}
        for batch in batches:
            with autocast:
                output = model(**{**batch, "objective": "both"})
            clm_targets = int((batch["labels"] != IGNORE_INDEX).sum())
            masked = batch["mlm_labels"] != IGNORE_INDEX
            mlm_targets = int(masked.sum())
            totals["clm_sum"] += float(output.clm_loss.float()) * clm_targets
            totals["mlm_sum"] += float(output.mlm_loss.float()) * mlm_targets
            totals["clm_count"] += clm_targets
            totals["mlm_count"] += mlm_targets
            totals["correct"] += int((output.mlm_logits.argmax(-1)[masked] == batch["mlm_labels"][masked]).sum())
        return totals

    def metrics_from_totals(self, totals: dict) -> dict[str, float]:
        if totals["clm_count"] == 0 or totals["mlm_count"] == 0:
            raise UserError("The evaluation split has no targets to score; give it more text or lower "
                            "training.eval_iters / model.block_size.")
        clm_loss, mlm_loss = totals["clm_sum"] / totals["clm_count"], totals["mlm_sum"] / totals["mlm_count"]
        mlm_weight, clm_weight = self.loss_weights
        metrics = language_model_metrics(clm_loss)
        metrics.update(loss=mlm_weight * mlm_loss + clm_weight * clm_loss,
                       mlm_accuracy=totals["correct"] / totals["mlm_count"], mlm_loss=mlm_loss, clm_loss=clm_loss)
        return metrics
