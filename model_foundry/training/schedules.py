"""The trainer's learning-rate schedules, and the run's length in optimizer steps that they span.

Every schedule gives a base rate per step, and `apply` writes `base rate x group lr_scale` into
each parameter group, so the per-group ratios (head vs backbone, layer-wise decay, the drop at
unfreezing) survive every schedule. Step-based schedules are pure functions of the step; the
plateau schedule also depends on the validation losses it has seen, and its state is saved with
every checkpoint, so a resumed run gets exactly the rates the uninterrupted run had.

`training.lr_schedule` values (each with linear warmup first, when warmup is set):
- `cosine`: cosine decay from the peak to `min_lr` over the rest of the run;
- `linear`: linear decay from the peak to `min_lr` over the rest of the run;
- `constant`: the peak for the rest of the run. `warmup_only` and `transfer` are aliases of it,
  kept because they are the names of the nanoGPT-compatible API's `WarmupOnlyScheduler` and
  `TransferLearningScheduler` (model_foundry.compat.schedulers): per-part rates, freezing and the
  drop at unfreezing come from the `transfer` section under every schedule, so a schedule of their
  own would have nothing to add;
- `plateau`: the peak, multiplied by `plateau_factor` after `plateau_patience` evaluations without
  a better validation loss, never below `min_lr`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from model_foundry.config.schema import TrainingSection

SCHEDULES = ("cosine", "linear", "constant", "plateau")
# Other spellings `training.lr_schedule` accepts, and the schedule each one names.
SCHEDULE_ALIASES = {"warmup_only": "constant", "transfer": "constant"}
# The nanoGPT-compatible API's scheduler classes used to be importable from here; they live with that
# API now. Their old address names the new one instead of a bare "cannot import name".
MOVED_TO_COMPAT = ("WarmupOnlyScheduler", "TransferLearningScheduler")


def canonical_schedule(kind: str) -> str:
    """The schedule a `training.lr_schedule` spelling names (an alias gives the schedule it stands for)."""
    name = SCHEDULE_ALIASES.get(kind, kind)
    if name not in SCHEDULES:
        raise ValueError(f"unknown lr_schedule {kind!r}; choose from {', '.join((*SCHEDULES, *SCHEDULE_ALIASES))}")
    return name


@dataclass(frozen=True)
class LRSchedule:
    """A step-based schedule (`cosine`, `linear`, `constant` or an alias of it): a pure function of the step."""

    kind: str
    peak_lr: float
    min_lr: float
    warmup_steps: int
    total_steps: int

    def __post_init__(self) -> None:
        """Store the schedule an alias names, so an alias can never drift from the schedule it stands for."""
        object.__setattr__(self, "kind", canonical_schedule(self.kind))

    def lr_at(self, step: int) -> float:
        """The base rate for optimizer step `step` (0-based)."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        if self.kind == "constant":
            return self.peak_lr
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        if self.kind == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            factor = 1.0 - progress
        return self.min_lr + factor * (self.peak_lr - self.min_lr)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        return set_group_rates(optimizer, self.lr_at(step))

    def observe(self, val_loss: float) -> bool:
        """Step schedules ignore validation losses; returns whether the rate was reduced (never)."""
        return False

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Nothing to restore: the rate is a function of the step."""


def set_group_rates(optimizer: torch.optim.Optimizer, base: float) -> float:
    """Each group's rate = base x its lr_scale; returns base."""
    for group in optimizer.param_groups:
        group["lr"] = base * group.get("lr_scale", 1.0)
    return base


class AdaptiveScheduler:
    """Reduce on plateau (`lr_schedule: plateau`, and the nanoGPT-compatible API's class, which
    model_foundry.compat.schedulers gives beside its other schedulers): after
    `patience` evaluations without a new best validation loss, multiply the rate by `factor`, never
    below `min_lr`. Linear warmup first, if asked."""

    def __init__(self, initial_lr: float, patience: int = 3, factor: float = 0.5, min_lr: float = 1e-6,
                 warmup_steps: int = 0):
        self.initial_lr, self.patience, self.factor, self.min_lr = initial_lr, patience, factor, min_lr
        self.warmup_steps = warmup_steps
        self.current_lr, self.best_loss, self.evals_without_improvement = initial_lr, math.inf, 0

    def step(self, val_loss: float) -> bool:
        """Record one evaluation; True when it reduced the rate."""
        if val_loss < self.best_loss:
            self.best_loss, self.evals_without_improvement = val_loss, 0
            return False
        self.evals_without_improvement += 1
        if self.evals_without_improvement < self.patience or self.current_lr <= self.min_lr:
            return False
        self.current_lr = max(self.min_lr, self.current_lr * self.factor)
        self.evals_without_improvement = 0
        return True

    def lr_at(self, step: int) -> float:
        if self.warmup_steps and step < self.warmup_steps:
            return self.current_lr * (step + 1) / self.warmup_steps
        return self.current_lr

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        return set_group_rates(optimizer, self.lr_at(step))

    def observe(self, val_loss: float) -> bool:
        return self.step(val_loss)

    def state_dict(self) -> dict:
        return {"current_lr": self.current_lr, "best_loss": self.best_loss,
                "evals_without_improvement": self.evals_without_improvement}

    def load_state_dict(self, state: dict) -> None:
        self.current_lr, self.best_loss = state["current_lr"], state["best_loss"]
        self.evals_without_improvement = state["evals_without_improvement"]


def make_schedule(kind: str, peak_lr: float, min_lr: float | None, total_steps: int,
                  warmup_steps: int | None, warmup_ratio: float | None, *, plateau_patience: int = 3,
                  plateau_factor: float = 0.5) -> LRSchedule | AdaptiveScheduler:
    """Resolve warmup given as steps or as a ratio of the run; min_lr defaults to a tenth of the peak
    (for plateau: a thousandth, the floor of its reductions)."""
    if warmup_steps is None:
        warmup_steps = round((warmup_ratio or 0.0) * total_steps)
    warmup_steps = min(warmup_steps, total_steps)
    if canonical_schedule(kind) == "plateau":
        return AdaptiveScheduler(peak_lr, plateau_patience, plateau_factor,
                                 peak_lr / 1000 if min_lr is None else min_lr, warmup_steps)
    return LRSchedule(kind=kind, peak_lr=peak_lr, min_lr=peak_lr / 10 if min_lr is None else min_lr,
                      warmup_steps=warmup_steps, total_steps=total_steps)


def ignored_schedule_keys(training: TrainingSection, has_val: bool) -> list[str]:
    """The schedule keys that have no effect with these settings, one message each (the trainer prints
    them as warnings: a key that does nothing is worth a line, never an error)."""
    kind = canonical_schedule(training.lr_schedule)
    messages = []
    if kind == "plateau" and not has_val:
        messages.append("training.lr_schedule: plateau has no effect without a val split (no val loss to watch): "
                        "the rate stays at its peak after warmup. Set data.val or data.val_fraction.")
    if kind == "constant" and training.min_lr is not None:
        messages.append(f"training.min_lr has no effect with lr_schedule: {training.lr_schedule} "
                        "(the rate never decays).")
    if kind != "plateau":
        defaults = TrainingSection.model_fields
        messages += [f"training.{key} has no effect with lr_schedule: {training.lr_schedule} (only plateau uses it)."
                     for key in ("plateau_patience", "plateau_factor")
                     if getattr(training, key) != defaults[key].default]
    return messages


def total_steps(training: TrainingSection, batches_per_epoch: int) -> int:
    """The run's length in optimizer steps: `max_steps`, else `epochs` (default 1) of `batches_per_epoch`
    micro-batches, `gradient_accumulation_steps` to a step, at least one step. With both, max_steps
    wins (`ignored_keys.ignored_length_keys` says so)."""
    if training.max_steps is not None:
        return training.max_steps
    per_epoch = batches_per_epoch / training.gradient_accumulation_steps
    return max(1, math.ceil((training.epochs or 1.0) * per_epoch))


def __getattr__(name: str):
    if name in MOVED_TO_COMPAT:
        raise ImportError(f"{name} moved to model_foundry.compat.schedulers, beside the nanoGPT-compatible API it "
                          f"belongs to: from model_foundry.compat.schedulers import {name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
