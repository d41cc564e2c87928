"""Learning-rate schedules.

Every schedule gives a base rate per step, and `apply` writes `base rate x group lr_scale` into
each parameter group, so the per-group ratios (head vs backbone, layer-wise decay, the drop at
unfreezing) survive every schedule. Step-based schedules are pure functions of the step; the
plateau schedule also depends on the validation losses it has seen, and its state is saved with
every checkpoint, so a resumed run gets exactly the rates the uninterrupted run had.

`training.lr_schedule` values: cosine, linear (decay to min_lr after warmup), constant,
warmup_only (seed 000's WarmupOnlyScheduler: warmup, then constant), transfer (seed 000's
TransferLearningScheduler: warmup, then constant; the head multiplier, the frozen phase and the
drop at unfreezing come from the `transfer` section), plateau (seed 000's AdaptiveScheduler:
reduce on plateau of the validation loss).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("cosine", "linear", "constant", "warmup_only", "transfer", "plateau")
FLAT_AFTER_WARMUP = ("constant", "warmup_only", "transfer")


@dataclass(frozen=True)
class LRSchedule:
    kind: str
    peak_lr: float
    min_lr: float
    warmup_steps: int
    total_steps: int

    def lr_at(self, step: int) -> float:
        """The base rate for optimizer step `step` (0-based)."""
        if self.warmup_steps and step < self.warmup_steps:
            return self.peak_lr * (step + 1) / self.warmup_steps
        if self.kind in FLAT_AFTER_WARMUP:
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
    """Reduce on plateau (seed 000): after `patience` evaluations without a new best validation
    loss, multiply the rate by `factor`, never below `min_lr`. Linear warmup first, if asked."""

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


class WarmupOnlyScheduler:
    """Seed 000's API: linear warmup to `base_lr` over `warmup_iters`, then constant."""

    def __init__(self, base_lr: float, warmup_iters: int = 0):
        self.schedule = LRSchedule("warmup_only", base_lr, base_lr, warmup_iters, max(warmup_iters, 1))

    def get_lr(self, iteration: int) -> float:
        return self.schedule.lr_at(iteration)


class TransferLearningScheduler:
    """Seed 000's API: per-part rates for feature extraction, then full finetuning.

    While frozen the transformer's rate is 0 and the head trains at `base_lr x head_lr_multiplier`;
    from `feature_extraction_iters` on, the transformer trains at `base_lr x unfreeze_lr_drop`.
    `lr_schedule: transfer` in a config gives the same rates through the `transfer` section
    (head_lr_mult, unfreeze_at_iteration or freeze_epochs, unfreeze_lr_multiplier).
    """

    def __init__(self, base_lr: float, head_lr_multiplier: float = 10.0, feature_extraction_iters: int = 0,
                 unfreeze_lr_drop: float = 0.1, warmup_iters: int = 0):
        self.base = WarmupOnlyScheduler(base_lr, warmup_iters)
        self.head_lr_multiplier, self.unfreeze_lr_drop = head_lr_multiplier, unfreeze_lr_drop
        self.feature_extraction_iters = feature_extraction_iters

    def get_lr(self, iteration: int, is_frozen: bool | None = None) -> dict[str, float]:
        frozen = iteration < self.feature_extraction_iters if is_frozen is None else is_frozen
        base = self.base.get_lr(iteration)
        return {"transformer": 0.0 if frozen else base * self.unfreeze_lr_drop, "head": base * self.head_lr_multiplier}


def make_schedule(kind: str, peak_lr: float, min_lr: float | None, total_steps: int,
                  warmup_steps: int | None, warmup_ratio: float | None, *, plateau_patience: int = 3,
                  plateau_factor: float = 0.5) -> LRSchedule | AdaptiveScheduler:
    """Resolve warmup given as steps or as a ratio of the run; min_lr defaults to a tenth of the peak
    (for plateau: a thousandth, the floor of its reductions)."""
    if warmup_steps is None:
        warmup_steps = round((warmup_ratio or 0.0) * total_steps)
    warmup_steps = min(warmup_steps, total_steps)
    if kind == "plateau":
        return AdaptiveScheduler(peak_lr, plateau_patience, plateau_factor,
                                 peak_lr / 1000 if min_lr is None else min_lr, warmup_steps)
    return LRSchedule(kind=kind, peak_lr=peak_lr, min_lr=peak_lr / 10 if min_lr is None else min_lr,
                      warmup_steps=warmup_steps, total_steps=total_steps)
