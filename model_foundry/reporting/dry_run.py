"""Dry run: one real training batch forward and backward, to catch a broken model before training.

It checks what silently wastes a run: a loss that is NaN or infinite from the start, trainable
parameters that get no gradient (a module the forward pass never calls), gradients that are
NaN or infinite, and parameters the transfer plan freezes that still receive a gradient.

The model is rebuilt exactly as training builds it (task, data, transfer freezing at step 0), but
there is no optimizer step, and gradients and buffers are put back as they were: the weights and
the run directory are left untouched.
"""
from __future__ import annotations

import contextlib
import math
import tempfile
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from model_foundry.config import load_config
from model_foundry.config.experiments import find_run
from model_foundry.errors import UserError
from model_foundry.inference.loading import Run, checkpoint_of, rebuild_run
from model_foundry.tasks import check_compatibility
from model_foundry.tasks.base import move_to
from model_foundry.training.precision import autocast as autocast_for
from model_foundry.training.run import build_trainer, cache_directory, resolved_config, seed_everything
from model_foundry.training.trainer import Trainer

NAMES_SHOWN = 8


@dataclass
class DryRunReport:
    """What one forward and backward pass revealed; `passed` when nothing is wrong."""

    loss: float
    checked: int  # trainable parameter tensors whose gradient was checked
    frozen: int  # parameter tensors that must get no gradient
    unused: list[str] = field(default_factory=list)  # trainable, but no gradient reached them
    non_finite: list[str] = field(default_factory=list)  # trainable, gradient with NaN or inf
    frozen_with_gradient: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return math.isfinite(self.loss) and not (self.unused or self.non_finite or self.frozen_with_gradient)

    def problems(self) -> list[str]:
        """One sentence per kind of problem, naming the parameters and the likely cause."""
        found = []
        if not math.isfinite(self.loss):
            found.append(f"the loss is {self.loss} (check the labels, the precision: fp16 "
                         "overflows easily, and the initialisation)")
        if self.unused:
            found.append(f"{len(self.unused)} trainable parameters got no gradient: {name_list(self.unused)} "
                         "(a module the forward pass never uses; remove it or freeze it)")
        if self.non_finite:
            found.append(f"{len(self.non_finite)} parameters got a NaN or infinite gradient: "
                         f"{name_list(self.non_finite)}")
        if self.frozen_with_gradient:
            found.append(f"{len(self.frozen_with_gradient)} parameters the transfer settings freeze still got a "
                         f"gradient, so training would update them: {name_list(self.frozen_with_gradient)}")
        return found

    def describe(self) -> str:
        """A PASS or FAIL paragraph."""
        if self.passed:
            frozen = f", and the {self.frozen} frozen ones none" if self.frozen else ""
            return (f"Dry run PASSED: the loss of one training batch is {self.loss:.4f}, and all "
                    f"{self.checked} trainable parameter tensors got a finite gradient{frozen}.")
        return "Dry run FAILED on one training batch: " + "; ".join(self.problems()) + "."


def name_list(names: list[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")


LossFunction = Callable[[nn.Module, dict[str, Any]], Tensor]


def model_loss(model: nn.Module, batch: dict[str, Any]) -> Tensor:
    return model(**batch).loss


def dry_run(model: nn.Module, batch: dict[str, Any], frozen: Iterable[str] = (),
            autocast: AbstractContextManager | None = None, loss_fn: LossFunction = model_loss) -> DryRunReport:
    """Forward and backward `batch` in train mode and check the loss and every parameter's gradient.

    `loss_fn(model, batch)` is the loss training minimises (a task's `training_loss`; by default
    the model's own). `frozen` names the parameters that must get no gradient (the transfer plan's
    frozen set); parameters with `requires_grad=False` are expected to get none too. Every other
    parameter must get a finite gradient. The model's gradients, buffers and train/eval mode are
    restored after.
    """
    frozen_names = list(frozen)
    every_name = dict(model.named_parameters(remove_duplicate=False))
    unknown = [name for name in frozen_names if name not in every_name]
    if unknown:
        raise UserError(f"dry_run: frozen names {unknown[:NAMES_SHOWN]} are not parameters of the "
                        f"{type(model).__name__}.")
    frozen_ids = {id(every_name[name]) for name in frozen_names}
    parameters = dict(model.named_parameters())  # each tensor once, under its first name
    saved_grads = {name: param.grad for name, param in parameters.items()}
    saved_buffers = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    was_training = model.training
    try:
        for param in parameters.values():
            param.grad = None
        loss = forward_and_backward(model, batch, autocast or contextlib.nullcontext(), loss_fn)
        return inspect_gradients(parameters, frozen_ids, loss)
    finally:
        restore(model, parameters, saved_grads, saved_buffers)
        model.train(was_training)


def forward_and_backward(model: nn.Module, batch: dict[str, Any], autocast: AbstractContextManager,
                         loss_fn: LossFunction) -> float:
    """The batch's loss, with its gradients left in the parameters."""
    model.train()
    with autocast:
        loss = loss_fn(model, batch)
    if loss is None:
        raise UserError("dry_run: the model returned no loss; the batch needs `labels` (a training batch "
                        "from the task's collator has them).")
    if loss.requires_grad:  # when every parameter is frozen there is nothing to differentiate
        loss.backward()
    return float(loss.detach().float())


def inspect_gradients(parameters: dict[str, nn.Parameter], frozen_ids: set[int], loss: float) -> DryRunReport:
    report = DryRunReport(loss=loss, checked=0, frozen=0)
    for name, param in parameters.items():
        if id(param) in frozen_ids or not param.requires_grad:
            report.frozen += 1
            if param.grad is not None:
                report.frozen_with_gradient.append(name)
            continue
        report.checked += 1
        if param.grad is None:
            report.unused.append(name)
        elif not torch.isfinite(param.grad).all():
            report.non_finite.append(name)
    return report


def restore(model: nn.Module, parameters: dict[str, nn.Parameter], grads: dict[str, Tensor | None],
            buffers: dict[str, Tensor]) -> None:
    """Put back the gradients and buffers (a train-mode forward may update running statistics)."""
    for name, param in parameters.items():
        param.grad = grads[name]
    with torch.no_grad():
        for name, buffer in model.named_buffers():
            buffer.copy_(buffers[name])


# ---- building the model and one batch as training does ------------------------------------------------

@dataclass
class Inspection:
    """A model as training sees it at step 0, one real training batch, and the transfer plan's frozen set."""

    model: nn.Module
    batch: dict[str, Tensor]
    frozen: list[str]
    source: str
    device: torch.device
    precision: str
    loss_fn: LossFunction = model_loss  # the task's training loss

    def autocast(self) -> AbstractContextManager:
        """The training run's autocast context (a no-op in fp32)."""
        return autocast_for(self.device, self.precision)


def load_target(target: str | Path) -> Inspection:
    """A config YAML (a fresh model) or a run directory / experiment name (its best, else last, weights).

    An experiment that has not been trained yet is inspected from its config.
    """
    path = Path(target)
    if path.is_file():
        return inspect_config(path)
    run_dir = find_run(target)
    if (run_dir / "resolved_config.yaml").is_file() and has_checkpoint(run_dir):
        return inspect_run(rebuild_run(run_dir))
    for name in ("resolved_config.yaml", "config.yaml"):
        if (run_dir / name).is_file():
            return inspect_config(run_dir / name)
    raise UserError(f"{run_dir} holds neither checkpoints nor a config.yaml; pass a run directory, an "
                    "experiment name or a config YAML path.")


def has_checkpoint(run_dir: Path) -> bool:
    try:
        checkpoint_of(run_dir)
    except UserError:
        return False
    return True


def inspect_config(path: Path) -> Inspection:
    """The model `foundry train path` would start from, seeded and initialised the same way."""
    config = resolved_config(load_config(path).config)
    check_compatibility(config)  # the same rules, in the same pass, as `foundry train`
    seed_everything(config.experiment.seed)
    # A scratch run directory: a tokenizer trained for the occasion is saved there and thrown away.
    with tempfile.TemporaryDirectory() as scratch:
        trainer = build_trainer(config, Path(scratch))
    return step_zero(trainer, f"{path} (fresh weights)")


def inspect_run(run: Run) -> Inspection:
    """A trained run's weights with its task, data and transfer settings from resolved_config.yaml."""
    splits = run.task.build_datasets(cache_directory(run.config))
    # Building the Trainer writes nothing; it gives the same first batch and transfer plan as training.
    trainer = Trainer(run.config, run.model, run.task, splits, run.directory)
    return step_zero(trainer, f"{run.directory} ({run.checkpoint.name} checkpoint)")


def step_zero(trainer: Trainer, source: str) -> Inspection:
    """Freeze what the transfer plan freezes before step 0, and take the first training batch."""
    plan = trainer.transfer
    plan.apply(0, trainer.optimizer)
    # Unfreezing happens at step 1 at the earliest, so everything the plan freezes is frozen at step 0.
    names = {id(param): name for name, param in trainer.model.named_parameters()}
    frozen = [names[id(param)] for param in plan.frozen_at_start]
    batch = next(trainer.train_stream)
    # The hybrid's shared design trains one objective per batch (`objective`); without the draw the
    # model runs them all, so the dry run checks the parameters of every objective, not only one's.
    batch.pop("objective", None)
    batch = move_to(batch, trainer.device)
    return Inspection(model=trainer.model, batch=batch, frozen=frozen, source=source, device=trainer.device,
                      precision=trainer.precision, loss_fn=trainer.task.training_loss)
