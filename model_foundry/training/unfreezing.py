"""The one unfreezing rule: when weights frozen at the start begin to train, and the rate they get.

The `transfer` config section (through `transfer.TransferPlan`), the nanoGPT-compatible API
(`GPT.maybe_unfreeze`) and its `TransferLearningScheduler` all follow it, so the three cannot
disagree. Everything here is a function of the settings and the step, so a resumed run unfreezes
exactly as the uninterrupted one did.
"""
from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from model_foundry.config.schema import TransferSection

# Written once, in the config schema (which says why 0.1); the nanoGPT-compatible API and
# TransferLearningScheduler take the same default.
DEFAULT_UNFREEZE_LR_MULTIPLIER: float = TransferSection.model_fields["unfreeze_lr_multiplier"].default


@dataclass(frozen=True)
class Unfreezing:
    """Weights frozen at the start train from optimizer step `step` on (never, when `step` is None);
    from then on the optimizer groups holding them run at `lr_multiplier` times their rate. Their
    Adam state starts fresh at that step, which is why the default drop is below 1 (the schema says
    more). A config or a facade that gives an unfreeze step without saying what to freeze freezes
    the whole backbone until then (`freezes_whole_backbone`).
    """

    step: int | None = None
    lr_multiplier: float = DEFAULT_UNFREEZE_LR_MULTIPLIER

    def is_frozen(self, step: int) -> bool:
        return self.step is None or step < self.step

    def happens_at(self, step: int) -> bool:
        return self.step is not None and step == self.step

    def drop_rates(self, groups: Iterable[dict]) -> None:
        """Multiply the rate of the optimizer groups whose weights unfreeze now: `lr` for a loop that
        keeps the optimizer's rates, `lr_scale` for our schedules (which rewrite `lr` every step)."""
        for group in groups:
            group["lr"] *= self.lr_multiplier
            group["lr_scale"] = group.get("lr_scale", 1.0) * self.lr_multiplier


def freezes_whole_backbone(freeze_transformer: bool, partial: bool, unfreeze_step_given: bool) -> bool:
    """Whether the whole backbone starts frozen: when asked, or when an unfreeze point is given and
    nothing else is frozen (`partial`: some blocks or the embeddings), since unfreezing nothing
    would silently do nothing."""
    return freeze_transformer or (unfreeze_step_given and not partial)


def unfreeze_step(settings: TransferSection, steps_per_epoch: float) -> int | None:
    """The optimizer step the `transfer` section unfreezes at: `unfreeze_at_iteration`, else the first
    step after `freeze_epochs` epochs (at least 1), else None (nothing unfreezes)."""
    if settings.unfreeze_at_iteration is not None:
        return settings.unfreeze_at_iteration
    if settings.freeze_epochs is not None:
        return max(1, math.ceil(settings.freeze_epochs * steps_per_epoch))
    return None


def ignored_unfreezing_keys(settings: TransferSection, steps_per_epoch: float, total_steps: int) -> list[str]:
    """The unfreezing keys that have no effect in a run of `total_steps`, one message each."""
    step = unfreeze_step(settings, steps_per_epoch)
    if step is None:
        unused = settings.unfreeze_lr_multiplier != DEFAULT_UNFREEZE_LR_MULTIPLIER
        return ["transfer.unfreeze_lr_multiplier has no effect: nothing unfreezes (set "
                "transfer.unfreeze_at_iteration or transfer.freeze_epochs)."] if unused else []
    if step < total_steps:
        return []
    key = "unfreeze_at_iteration" if settings.unfreeze_at_iteration is not None else "freeze_epochs"
    return [f"transfer.{key} unfreezes at step {step}, but the run ends at step {total_steps}: the frozen "
            "weights stay frozen for the whole run."]
