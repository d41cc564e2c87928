"""The nanoGPT-compatible API's schedulers, as thin layers over the trainer's schedules and unfreezing rule.

    from model_foundry.compat.schedulers import AdaptiveScheduler, TransferLearningScheduler, WarmupOnlyScheduler

A config gets the same rates from `training.lr_schedule` (`warmup_only` and `transfer` are aliases
of `constant`, `plateau` is `AdaptiveScheduler`) and the `transfer` section (per-part rates,
freezing, the drop at unfreezing).
"""
from __future__ import annotations

from model_foundry.training.schedules import AdaptiveScheduler, LRSchedule
from model_foundry.training.unfreezing import DEFAULT_UNFREEZE_LR_MULTIPLIER, Unfreezing

__all__ = ["AdaptiveScheduler", "TransferLearningScheduler", "WarmupOnlyScheduler"]


class WarmupOnlyScheduler:
    """Linear warmup to `base_lr` over `warmup_iters`, then constant (`lr_schedule: warmup_only`, an
    alias of `constant`)."""

    def __init__(self, base_lr: float, warmup_iters: int = 0):
        self.schedule = LRSchedule("constant", base_lr, base_lr, warmup_iters, max(warmup_iters, 1))

    def get_lr(self, iteration: int) -> float:
        return self.schedule.lr_at(iteration)


class TransferLearningScheduler:
    """Per-part rates for feature extraction, then full finetuning.

    While frozen (before `feature_extraction_iters`, or as `is_frozen` says) the transformer's rate
    is 0 and the head trains at `base_lr x head_lr_multiplier`; once it trains, the transformer runs
    at `base_lr x unfreeze_lr_drop` (the `Unfreezing` rule and default). A config gets the same rates
    under any `lr_schedule` from the `transfer` section (head_lr_mult, unfreeze_at_iteration or
    freeze_epochs, unfreeze_lr_multiplier).
    """

    def __init__(self, base_lr: float, head_lr_multiplier: float = 10.0, feature_extraction_iters: int = 0,
                 unfreeze_lr_drop: float = DEFAULT_UNFREEZE_LR_MULTIPLIER, warmup_iters: int = 0):
        self.base = WarmupOnlyScheduler(base_lr, warmup_iters)
        self.head_lr_multiplier = head_lr_multiplier
        self.unfreezing = Unfreezing(feature_extraction_iters, unfreeze_lr_drop)

    @property
    def feature_extraction_iters(self) -> int:
        return self.unfreezing.step

    @property
    def unfreeze_lr_drop(self) -> float:
        return self.unfreezing.lr_multiplier

    def get_lr(self, iteration: int, is_frozen: bool | None = None) -> dict[str, float]:
        frozen = self.unfreezing.is_frozen(iteration) if is_frozen is None else is_frozen
        base = self.base.get_lr(iteration)
        return {"transformer": 0.0 if frozen else base * self.unfreezing.lr_multiplier,
                "head": base * self.head_lr_multiplier}
