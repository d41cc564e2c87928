"""A run whose loss or weights stop being finite numbers ends with a UserError before any checkpoint
or evaluation holds them.

The loop reads the loss only at log steps (one device wait per `log_interval`), so a step between two
log rows can go non-finite unseen. The weights are therefore checked too, before every evaluation
and checkpoint write (which wait for the device anyway), and so is the validation loss, before the
checkpoints an evaluation step writes (finite weights can be so large that the model's output is
not): a non-finite step never reaches `best`, `last` or a step checkpoint, and the last one written
stays loadable and resumable. Under fp16 the
grad scaler skips a step whose gradients overflow and lowers its scale: the weights stay finite,
so that is no fault and the run goes on.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn

from model_foundry.config.experiments import is_checkpoint
from model_foundry.config.schema import TrainingSection
from model_foundry.errors import UserError
from model_foundry.training.distributed import Workers


def weights_are_finite(model: nn.Module, workers: Workers) -> bool:
    """Whether every parameter is finite on every process (each checks what it holds: its shard under
    FSDP), with one device read; a collective: every process calls it."""
    # FSDP's parameters are DTensors: `to_local` is this process's shard.
    local = [p.to_local() if hasattr(p, "to_local") else p for p in model.parameters()]
    flags = torch.stack([(~torch.isfinite(p.detach())).any() for p in local]).sum()
    return int(workers.sum_on_device(flags)) == 0


def likely_causes(training: TrainingSection, precision: str) -> list[str]:
    """What usually makes a loss blow up, for these settings."""
    causes = [f"a learning rate too high for this model (training.learning_rate is {training.learning_rate:g}): "
              "lower it, or warm up over more steps (training.warmup_steps)"]
    if not training.grad_clip:
        causes.append("no gradient clipping (training.grad_clip is unset): set it, for example to 1.0, so that "
                      "no single step can move the weights far")
    if precision == "fp16":
        causes.append("an fp16 overflow the loss scaler could not absorb: try training.precision bf16 or fp32")
    return causes


def non_finite_error(what: str, step: int, finite_at: int, training: TrainingSection, precision: str,
                     kept: str) -> UserError:
    """The one-paragraph error that stops a run at `step`: `what` went non-finite after `finite_at`, the
    last step seen finite; `kept` says which checkpoint holds the last good state, and what to do."""
    since = f" (last seen finite at step {finite_at})" if finite_at < step else ""
    return UserError(f"Training stopped at step {step}: {what}{since}. Likely cause: "
                     f"{'; or '.join(likely_causes(training, precision))}. No checkpoint holds the non-finite "
                     f"weights; {kept}")


class FiniteGuard:
    """The trainer's finiteness checks and what they remember: the last step seen finite, the last
    step whose weights were checked (a step that evaluates and writes two checkpoints checks once),
    and the step `last` was last written at (for the error's advice)."""

    def __init__(self, model: nn.Module, workers: Workers, scaler: torch.amp.GradScaler, training: TrainingSection,
                 precision: str, last: Path):
        self.model, self.workers, self.scaler = model, workers, scaler
        self.training, self.precision, self.last = training, precision, last
        self.finite_at = 0
        self.weights_checked_at: int | None = None
        self.last_written_at: int | None = None

    def check_loss(self, step: int, value: float) -> None:
        """Stop at a log step whose loss is not finite, unless fp16's scaler skipped the step (the weights
        are then still finite: the scaler lowers its scale and the run goes on)."""
        if math.isfinite(value):
            self.finite_at = step
        elif not (self.scaler.is_enabled() and weights_are_finite(self.model, self.workers)):
            raise self.error(f"the training loss is {value}", step)

    def check_val_loss(self, step: int, value: float) -> None:
        """Stop when the weights are finite but the model's output is not: huge weights overflow in the
        forward pass. Checked before the evaluation is logged or a checkpoint written after it."""
        if not math.isfinite(value):
            raise self.error(f"the validation loss is {value}", step)

    def check_weights(self, step: int) -> None:
        """Stop before an evaluation or a checkpoint would see non-finite weights."""
        if self.weights_checked_at == step:
            return
        if not weights_are_finite(self.model, self.workers):
            raise self.error("the weights are no longer finite numbers (NaN or inf)", step)
        self.weights_checked_at = self.finite_at = step

    def error(self, what: str, step: int) -> UserError:
        if self.last_written_at is not None or is_checkpoint(self.last):
            at = "" if self.last_written_at is None else f" (step {self.last_written_at})"
            kept = (f"checkpoints/last{at} holds the last good state and loads as before: change the settings and "
                    "continue from it with --set training.resume=true, or start afresh under another experiment.name.")
        else:
            kept = "none had been written yet: change the settings and start again."
        return non_finite_error(what, step, self.finite_at, self.training, self.precision, kept)
