"""One training loop for every task.

The loop knows a model, a task (collator, training loss, metrics, target counting) and the data; nothing about architectures or objectives. Each optimizer step gathers its micro-batches
first, so the loss can be normalised by the real targets of the whole accumulated batch: averaging
per-micro-batch means would over-weight short micro-batches.

Exactness: the data order comes from the BatchStream's (seed, epoch) permutation, learning rates
are a pure function of the step, and the RNGs, optimizer, scaler and data position are saved with
every checkpoint, so a killed run resumed from `checkpoints/last` ends bit-for-bit where the
uninterrupted run ends.
"""
from __future__ import annotations

import math
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from model_foundry.config.schema import FoundryConfig, TrainingSection
from model_foundry.data import BatchStream
from model_foundry.errors import UserError
from model_foundry.tasks import DatasetSplits, Task, metric_is_maximised
from model_foundry.tasks.base import move_to
from model_foundry.training import checkpoints as ckpt
from model_foundry.training.metrics_log import MetricsLogger
from model_foundry.training.optimizer import build_optimizer, parameter_groups
from model_foundry.training.precision import autocast, make_grad_scaler, resolve_device, resolve_precision
from model_foundry.training.progress import Progress
from model_foundry.training.schedules import ignored_schedule_keys, make_schedule
from model_foundry.training.transfer import TransferPlan


def warn(message: str) -> None:
    """One warning line on stderr: a key that has no effect here is worth a line, never an error."""
    print(f"warning: {message}", file=sys.stderr)


def evaluate_stream(task: Task, model: torch.nn.Module, stream: BatchStream, device: torch.device,
                    precision: str, limit: int | None = None) -> dict:
    """The task's metrics over one ordered pass of `stream` (its first `limit` batches, or all)."""
    batches = (move_to(b, device) for i, b in enumerate(stream.one_pass()) if limit is None or i < limit)
    was_training = model.training
    model.eval()
    with torch.no_grad():
        metrics = task.evaluate(model, batches, autocast(device, precision))
    model.train(was_training)
    return metrics


class TrainingInterrupted(Exception):
    """SIGINT or SIGTERM arrived; `checkpoints/last` was saved before raising."""

    def __init__(self, signum: int):
        super().__init__(f"stopped by {signal.Signals(signum).name}; checkpoints/last holds the run so far")
        self.exit_code = 128 + signum


@dataclass
class Counters:
    """Everything about the loop's position that a checkpoint must restore."""

    step: int = 0
    tokens: int = 0
    best_metric: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    elapsed_s: float = 0.0


class Trainer:
    def __init__(self, config: FoundryConfig, model: torch.nn.Module, task: Task, splits: DatasetSplits,
                 run_dir: Path):
        self.config, self.task, self.splits, self.run_dir = config, task, splits, run_dir
        tc = config.training
        self.device = resolve_device(tc.device)
        self.precision = resolve_precision(tc.precision, self.device)
        self.model = model.to(self.device)
        self.forward = torch.compile(self.model) if tc.compile else self.model
        seed = config.experiment.seed
        collate = task.collator()
        self.train_stream = BatchStream(splits.train, tc.batch_size, collate, seed=seed,
                                        lengths=getattr(splits.train, "lengths", None))
        self.eval_streams = {name: BatchStream(ds, tc.batch_size, collate, seed=seed, shuffle=False,
                                               drop_last=False)
                             for name, ds in (("val", splits.val), ("test", splits.test)) if ds is not None}
        self.total_steps = self.resolve_total_steps()
        steps_per_epoch = self.train_stream.batches_per_epoch / tc.gradient_accumulation_steps
        self.transfer = TransferPlan(config.transfer, self.model, steps_per_epoch)
        self.optimizer = build_optimizer(parameter_groups(self.model, tc.weight_decay, self.transfer.group_of),
                                         tc.learning_rate, (tc.beta1, tc.beta2), self.device)
        self.schedule = make_schedule(tc.lr_schedule, tc.learning_rate, tc.min_lr, self.total_steps,
                                      tc.warmup_steps, tc.warmup_ratio, plateau_patience=tc.plateau_patience,
                                      plateau_factor=tc.plateau_factor)
        self.scaler = make_grad_scaler(self.device, self.precision)
        task.check_loss_settings()
        self.best_metric = tc.best_metric or task.default_best_metric
        if self.best_metric not in task.metric_names:
            raise UserError(f"training.best_metric {self.best_metric!r} is not reported by task "
                            f"{task.name!r}; it reports {', '.join(task.metric_names)}.")
        for message in self.ignored_keys():
            warn(message)
        self.counters = Counters()
        self.checkpoint_root = run_dir / "checkpoints"
        self.stop_signal: int | None = None

    def resolve_total_steps(self) -> int:
        """`max_steps`, else `epochs` (default 1) in optimizer steps. With both, max_steps wins and one
        warning line says so: the finetuning template sets `epochs`, so a `--set training.max_steps`
        beside it is common, and a silently shorter or longer run would be a surprise."""
        tc = self.config.training
        if tc.max_steps is not None:
            if tc.epochs is not None:
                warn(f"training.max_steps ({tc.max_steps}) and training.epochs ({tc.epochs:g}) are both set: "
                     "max_steps wins, epochs has no effect.")
            return tc.max_steps
        per_epoch = self.train_stream.batches_per_epoch / tc.gradient_accumulation_steps
        return max(1, math.ceil((tc.epochs or 1.0) * per_epoch))

    def ignored_keys(self) -> list[str]:
        """Every configured key that has no effect in this run, one message each (printed at the start)."""
        has_val = "val" in self.eval_streams
        return [*self.ignored_validation_keys(has_val), *ignored_schedule_keys(self.config.training, has_val),
                *self.transfer.ignored_keys(self.total_steps), *self.ignored_checkpoint_keys()]

    def ignored_validation_keys(self, has_val: bool) -> list[str]:
        """The keys that act on validation results, when there is no val split to produce any."""
        if has_val:
            return []
        tc = self.config.training
        effects = {"early_stopping_patience": (tc.early_stopping_patience, "the run never stops early"),
                   "best_metric": (tc.best_metric, "checkpoints/best is never written"),
                   "eval_iters": (tc.eval_iters, "nothing is evaluated during training")}
        return [f"training.{key} has no effect without a val split ({effect}). Set data.val or data.val_fraction."
                for key, (value, effect) in effects.items() if value is not None]

    def ignored_checkpoint_keys(self) -> list[str]:
        """`keep_last_n` prunes step checkpoints, which only `save_interval` writes."""
        tc = self.config.training
        if tc.save_interval is None and tc.keep_last_n != TrainingSection.model_fields["keep_last_n"].default:
            return ["training.keep_last_n has no effect without training.save_interval (no step checkpoints "
                    "are written)."]
        return []

    # ---- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        c = self.counters
        return {"step": c.step, "tokens": c.tokens, "best_metric": c.best_metric, "best_step": c.best_step,
                "evals_without_improvement": c.evals_without_improvement, "elapsed_s": c.elapsed_s,
                "epoch": self.train_stream.epoch, "data": self.train_stream.state_dict(),
                "optimizer": self.optimizer.state_dict(), "scaler": self.scaler.state_dict(),
                "schedule": self.schedule.state_dict(), "rng": ckpt.capture_rng()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.train_stream.load_state_dict(state["data"])
        self.schedule.load_state_dict(state["schedule"])
        ckpt.restore_rng(state["rng"])
        self.counters = Counters(step=state["step"], tokens=state["tokens"], best_metric=state["best_metric"],
                                 best_step=state["best_step"],
                                 evals_without_improvement=state["evals_without_improvement"],
                                 elapsed_s=state["elapsed_s"])

    def save(self, name: str) -> None:
        ckpt.save_checkpoint(self.checkpoint_root / name, self.model, self.state_dict())

    # ---- the loop ------------------------------------------------------------------------------
    def fit(self, logger: MetricsLogger, label: str = "train") -> Counters:
        """Train up to `total_steps`; returns the counters (best step and metric among them)."""
        tc = self.config.training
        progress = Progress(self.total_steps, self.counters.step, label)
        previous_handlers = self.install_signal_handlers()
        self.model.train()
        started = time.perf_counter() - self.counters.elapsed_s
        window_tokens, window_start = 0, time.perf_counter()
        try:
            while self.counters.step < self.total_steps:
                if self.stop_signal is not None:
                    self.counters.elapsed_s = time.perf_counter() - started
                    self.save("last")
                    progress.message(f"Saved checkpoints/last at step {self.counters.step}.")
                    raise TrainingInterrupted(self.stop_signal)
                if self.transfer.apply(self.counters.step, self.optimizer):
                    progress.message(f"step {self.counters.step}: unfreezing the backbone "
                                     f"(its LR x {self.config.transfer.unfreeze_lr_multiplier}).")
                lr = self.schedule.apply(self.optimizer, self.counters.step)
                loss, tokens = self.train_step()
                self.counters.step += 1
                self.counters.tokens += tokens
                window_tokens += tokens
                step = self.counters.step
                if step % tc.log_interval == 0 or step == self.total_steps:
                    now = time.perf_counter()
                    rate = window_tokens / max(now - window_start, 1e-9)
                    window_tokens, window_start = 0, now
                    self.counters.elapsed_s = now - started
                    logger.log_train(self.train_row(step, loss, lr, rate))
                    progress.update(step, loss, rate, lr)
                stop_early = False
                if step % tc.eval_interval == 0 or step == self.total_steps:
                    stop_early = self.evaluate_and_track(logger, progress)
                self.counters.elapsed_s = time.perf_counter() - started
                if tc.save_interval and step % tc.save_interval == 0:
                    self.save(f"step_{step}")
                    ckpt.prune_step_checkpoints(self.checkpoint_root, tc.keep_last_n)
                if step % tc.eval_interval == 0 or (tc.save_interval and step % tc.save_interval == 0):
                    self.save("last")
                if stop_early:
                    progress.message(f"Early stopping at step {step}: {self.best_metric} has not improved "
                                     f"for {tc.early_stopping_patience} evaluations.")
                    break
            self.save("last")
        finally:
            self.restore_signal_handlers(previous_handlers)
            progress.close()
        return self.counters

    def train_step(self) -> tuple[float, int]:
        """One optimizer step over `gradient_accumulation_steps` micro-batches; (mean loss, tokens)."""
        batches = [move_to(next(self.train_stream), self.device)
                   for _ in range(self.config.training.gradient_accumulation_steps)]
        loss = self.accumulate_gradients(batches)
        self.update_parameters()
        tokens = sum(int(b["attention_mask"].sum()) if "attention_mask" in b else b["input_ids"].numel()
                     for b in batches)
        return loss, tokens

    def accumulate_gradients(self, batches: list[dict]) -> float:
        """Backward over micro-batches, each weighted by its share of the real targets of them all.

        The result equals the gradient of one big batch's mean loss over its targets. Returns that loss.
        """
        counts = [self.task.count_targets(b) for b in batches]
        total = max(1, sum(counts))
        loss_sum = 0.0
        for batch, count in zip(batches, counts):
            with autocast(self.device, self.precision):
                loss = self.task.training_loss(self.forward, batch)
            self.scaler.scale(loss * (count / total)).backward()
            loss_sum += float(loss.detach()) * count
        return loss_sum / total

    def update_parameters(self) -> None:
        clip = self.config.training.grad_clip
        if clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def train_row(self, step: int, loss: float, lr: float, rate: float) -> dict:
        row = {"step": step, "loss": round(loss, 6), "lr": max(g["lr"] for g in self.optimizer.param_groups)}
        row.update({f"lr_{g['name']}": g["lr"] for g in self.optimizer.param_groups})
        row.update(tokens_per_sec=round(rate, 1), elapsed_s=round(self.counters.elapsed_s, 3))
        return row

    # ---- evaluation ----------------------------------------------------------------------------
    def evaluate(self, split: str, limit: int | None = None) -> dict:
        """The task's metrics on a split (the first `limit` batches of a fixed order, or all)."""
        return evaluate_stream(self.task, self.model, self.eval_streams[split], self.device, self.precision, limit)

    def evaluate_and_track(self, logger: MetricsLogger, progress: Progress) -> bool:
        """Evaluate val, save `best` on improvement; True when early stopping should end the run."""
        if "val" not in self.eval_streams:
            return False
        step = self.counters.step
        metrics = self.evaluate("val", self.config.training.eval_iters)
        logger.log_eval(step, "val", metrics)
        progress.message(f"step {step}: " + " | ".join(f"val {k} {v:.4f}" for k, v in metrics.items()
                                                      if isinstance(v, (int, float))))
        if self.best_metric not in metrics:
            raise UserError(f"training.best_metric {self.best_metric!r} is not among the metrics of this data "
                            f"({', '.join(k for k, v in metrics.items() if isinstance(v, float))}).")
        if self.schedule.observe(metrics["loss"]):
            progress.message(f"step {step}: val loss has not improved for {self.config.training.plateau_patience} "
                             f"evaluations; learning rate reduced to {self.schedule.current_lr:.3g}.")
        value = metrics[self.best_metric]
        best = self.counters.best_metric
        improved = best is None or (value > best if metric_is_maximised(self.best_metric) else value < best)
        if improved:
            self.counters.best_metric, self.counters.best_step = value, step
            self.counters.evals_without_improvement = 0
            self.save("best")
            return False
        self.counters.evals_without_improvement += 1
        patience = self.config.training.early_stopping_patience
        return patience is not None and self.counters.evals_without_improvement >= patience

    # ---- signals -------------------------------------------------------------------------------
    def install_signal_handlers(self) -> dict:
        """SIGINT/SIGTERM ask the loop to save `last` at the next step boundary and stop."""
        def request_stop(signum, frame):
            self.stop_signal = signum

        previous = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                previous[sig] = signal.signal(sig, request_stop)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return previous

    @staticmethod
    def restore_signal_handlers(previous: dict) -> None:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
