"""Learning-rate schedules as pure functions of the step.

A schedule holds no hidden state, so a resumed run gets exactly the rate the uninterrupted run
had at the same step. `apply` writes `base rate x group lr_scale` into each parameter group.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

SCHEDULES = ("cosine", "linear", "constant", "warmup_only")


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
        if self.kind in ("constant", "warmup_only"):
            return self.peak_lr
        decay_steps = max(1, self.total_steps - self.warmup_steps)
        progress = min(1.0, (step - self.warmup_steps) / decay_steps)
        if self.kind == "cosine":
            factor = 0.5 * (1.0 + math.cos(math.pi * progress))
        else:
            factor = 1.0 - progress
        return self.min_lr + factor * (self.peak_lr - self.min_lr)

    def apply(self, optimizer: torch.optim.Optimizer, step: int) -> float:
        base = self.lr_at(step)
        for group in optimizer.param_groups:
            group["lr"] = base * group.get("lr_scale", 1.0)
        return base


def make_schedule(kind: str, peak_lr: float, min_lr: float | None, total_steps: int,
                  warmup_steps: int | None, warmup_ratio: float | None) -> LRSchedule:
    """Resolve warmup given as steps or as a ratio of the run; min_lr defaults to a tenth of the peak."""
    if warmup_steps is None:
        warmup_steps = round((warmup_ratio or 0.0) * total_steps)
    return LRSchedule(kind=kind, peak_lr=peak_lr, min_lr=peak_lr / 10 if min_lr is None else min_lr,
                      warmup_steps=min(warmup_steps, total_steps), total_steps=total_steps)
