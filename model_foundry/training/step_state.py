"""What the training loop counts and carries between steps: a step's loss left on the device, the
host-side token counts, the log window, and the counters a checkpoint restores."""
from __future__ import annotations

import signal
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import torch


# The masks our collators write; one that hides no token says nothing the model does not assume.
MASK_KEYS = ("attention_mask", "mlm_attention_mask")


def without_full_masks(batch: dict) -> dict:
    """The host batch less the attention masks that hide nothing.

    Models read a missing mask as "every token is real", which such a mask says too. Knowing it here,
    on the host, lets attention take its fused no-mask kernels without asking the device whether
    the mask has padding, which would be a host-device sync on every forward.
    """
    return {k: v for k, v in batch.items() if k not in MASK_KEYS or not bool(v.all())}


@dataclass
class StepLoss:
    """One optimizer step's loss, left on the device: reading it waits for the device, so the loop
    reads only the losses it logs."""

    counts: list[int]  # each micro-batch's (or piece's) targets
    total: int  # the targets of the step's whole global batch, at least 1 (every process's)
    losses: list[torch.Tensor] = field(default_factory=list)  # each micro-batch's mean, detached

    def value(self) -> float:
        """The mean over the step's targets, with one host-device sync for all micro-batches.

        Summed in Python floats in micro-batch order, so it is the number a per-micro-batch
        `float(loss)` gave to the last bit.
        """
        values = torch.stack(self.losses).tolist()
        return sum(v * c for v, c in zip(values, self.counts)) / self.total

    def local_sum(self) -> torch.Tensor:
        """This process's summed loss over its targets, on the device. A piece without targets adds
        nothing: its mean is 0 / 0 (cutting a micro-batch can leave a piece with no masked token)."""
        terms = [loss.float() * count for loss, count in zip(self.losses, self.counts) if count]
        return torch.stack(terms).sum() if terms else torch.zeros((), device=self.losses[0].device)


class StepResult(NamedTuple):
    """What one optimizer step hands the loop: its loss (on the device) and, counted on the host,
    the real tokens it trained on and their estimated training FLOPs."""

    loss: StepLoss
    tokens: int
    flops: float


@dataclass
class Window:
    """The steps since the previous log row: its tokens/s and MFU are over them."""

    start: float
    tokens: int = 0
    flops: float = 0.0


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; `checkpoints/last` was saved before raising."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoints/last holds the run so far")
        self.exit_code = 128 + signum


def install_stop_handlers(request_stop: Callable[[int, object], None]) -> dict:
    """Let SIGINT/SIGTERM call `request_stop` (the loop saves `last` at the next step boundary and
    stops); returns the handlers they replace, for `restore_handlers`."""
    previous = {}
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            previous[sig] = signal.signal(sig, request_stop)
        except ValueError:  # not the main thread: leave signals alone
            pass
    return previous


def restore_handlers(previous: dict) -> None:
    for sig, handler in previous.items():
        signal.signal(sig, handler)


@dataclass
class Counters:
    """Everything about the loop's position that a checkpoint must restore."""

    step: int = 0
    tokens: int = 0  # real (non-padding) input tokens trained on, every process's
    rows: int = 0  # rows (windows, examples) trained on, every process's
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    elapsed_s: float = 0.0
