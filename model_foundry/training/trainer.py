"""One training loop for every task.

The loop knows a model, a task (collator, training loss, metrics, target counting) and the data;
nothing about architectures or objectives. Each optimizer step gathers its micro-batches first, so
the loss can be normalised by the real targets of the whole accumulated batch: averaging
per-micro-batch means would over-weight short micro-batches.

Exactness: the data order comes from the BatchStream's (seed, epoch) permutation, learning rates
are a function of the step (and, for `plateau`, of the evaluations so far, saved with its state),
and the RNGs, optimizer, scaler and data position are saved with every checkpoint, so a killed run
resumed from `checkpoints/last` ends bit-for-bit where the uninterrupted run ends.

The hot loop never waits for the device: targets and tokens are counted on the host batches before
they move, each step's loss stays on the device, and the loop reads it only at log steps, once per
`log_interval` (evaluation and checkpoints wait for the device anyway). A loss or weights that stop
being finite end the run before a checkpoint holds them (`non_finite`).

Several processes (`model_foundry.training.distributed`) train the model one process trains: each
takes its share of every step's rows, the loss is normalised by the targets of all of them, and
rank 0 alone writes. Every process gets the same evaluation metrics (see `Trainer.evaluate`), so all
of them take the same decisions (best checkpoint, early stopping, a plateau's learning rate).
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

from model_foundry.config.schema import FoundryConfig
from model_foundry.data import BatchStream
from model_foundry.errors import UserError
from model_foundry.tasks import DatasetSplits, Task, metric_is_maximised
from model_foundry.tasks.base import add_totals, move_to, real_tokens
from model_foundry.training import checkpoints as ckpt
from model_foundry.training.compilation import compiled, replays_cuda_graphs
from model_foundry.training.distributed import Workers, check_world_size, step_pieces
from model_foundry.training.evaluation import evaluate_stream, stream_totals
from model_foundry.training.flops import TrainingFlops, model_flops_utilisation, peak_flops
from model_foundry.training.ignored_keys import ignored_training_keys, warn
from model_foundry.training.metrics_log import MetricsLogger
from model_foundry.training.milestones import TextMilestones
from model_foundry.training.non_finite import FiniteGuard
from model_foundry.training.optimizer import check_saved_optimizer, make_optimizer
from model_foundry.training.precision import (autocast, make_grad_scaler, precision_note, resolve_device,
                                              resolve_precision)
from model_foundry.training.progress import Progress
from model_foundry.training.schedules import make_schedule, total_steps
from model_foundry.training.step_state import (Counters, StepLoss, StepResult, TrainingInterrupted, Window,
                                               install_stop_handlers, restore_handlers, without_full_masks)
from model_foundry.training.transfer import TransferPlan


class Trainer:
    def __init__(self, config: FoundryConfig, model: torch.nn.Module, task: Task, splits: DatasetSplits,
                 run_dir: Path, workers: Workers = Workers()):
        self.config, self.task, self.splits, self.run_dir = config, task, splits, run_dir
        tc = config.training
        check_world_size(tc, workers.world_size)
        self.workers = workers
        self.pieces = step_pieces(tc.batch_size, tc.gradient_accumulation_steps, workers.world_size, workers.rank)
        self.device = workers.device or resolve_device(tc.device)
        self.precision = resolve_precision(tc.precision, self.device)
        note = precision_note(tc.precision, self.device, self.precision)
        if note and workers.is_writer:
            print(note, file=sys.stderr)
        self.model_state = workers.model_state(model, tc.distributed)
        self.model = model.to(self.device)
        # `model` stays the plain module (saving, evaluation); `wrapped` is what training runs through.
        self.wrapped = workers.wrap(self.model, tc.distributed, self.precision)
        self.forward = compiled(self.wrapped, tc.compile_mode) if tc.compile else self.wrapped
        self.replays_cuda_graphs = replays_cuda_graphs(tc.compile, tc.compile_mode)
        self.flops = TrainingFlops.of(self.model)
        seed = config.experiment.seed
        collate = task.collator()
        self.train_stream = BatchStream(splits.train, tc.batch_size, collate, seed=seed,
                                        lengths=getattr(splits.train, "lengths", None))
        self.eval_streams = {name: BatchStream(ds, tc.batch_size, collate, seed=seed, shuffle=False,
                                               drop_last=False)
                             for name, ds in (("val", splits.val), ("test", splits.test)) if ds is not None}
        self.total_steps = total_steps(tc, self.train_stream.batches_per_epoch)
        self.milestones = TextMilestones.of(tc, splits.train)
        self.rows_per_step = tc.batch_size * tc.gradient_accumulation_steps  # the stream's batches are full (drop_last)
        steps_per_epoch = self.train_stream.batches_per_epoch / tc.gradient_accumulation_steps
        self.transfer = TransferPlan(config.transfer, self.model, steps_per_epoch)
        self.optimizer = make_optimizer(self.model, tc, self.device, self.transfer.group_of)
        self.schedule = make_schedule(tc.lr_schedule, tc.learning_rate, tc.min_lr, self.total_steps,
                                      tc.warmup_steps, tc.warmup_ratio, plateau_patience=tc.plateau_patience,
                                      plateau_factor=tc.plateau_factor)
        self.scaler = make_grad_scaler(self.device, self.precision)
        task.check_loss_settings()
        self.best_metric = tc.best_metric or task.default_best_metric
        if self.best_metric not in task.metric_names:
            raise UserError(f"training.best_metric {self.best_metric!r} is not reported by task "
                            f"{task.name!r}; it reports {', '.join(task.metric_names)}.")
        for message in ignored_training_keys(config, "val" in self.eval_streams, self.train_stream.batches_per_epoch,
                                             workers.alone):
            warn(message)
        self.counters = Counters()
        self.checkpoint_root = run_dir / "checkpoints"
        self.stop_signal: int | None = None
        self.finite_guard = FiniteGuard(self.model, workers, self.scaler, tc, self.precision,
                                        self.checkpoint_root / "last")
        # The device's peak FLOP/s for MFU, settled when `fit` starts: on a CPU it may be measured (about a
        # second, once per process; `flops.peak_flops`), which building a trainer must not wait for.
        self.peak_flops: float | None = None

    # ---- state ---------------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything a checkpoint restores; with several processes, each one's RNG states too (a
        collective: every process calls it)."""
        c = self.counters
        state = {"step": c.step, "tokens": c.tokens, "rows": c.rows, "best_metric": c.best_metric,
                 "best_step": c.best_step, "evals_without_improvement": c.evals_without_improvement,
                 "elapsed_s": c.elapsed_s,
                 "epoch": self.train_stream.epoch, "data": self.train_stream.state_dict(),
                 "optimizer": self.model_state.optimizer_state(self.model, self.optimizer),
                 "optimizer_name": self.config.training.optimizer,
                 "scaler": self.scaler.state_dict(), "schedule": self.schedule.state_dict(), "rng": ckpt.capture_rng()}
        if not self.workers.alone:
            state.update(world_size=self.workers.world_size, rank_rng=self.workers.gather_objects(state["rng"]))
        return state

    def load_state_dict(self, state: dict) -> None:
        check_saved_optimizer(state.get("optimizer_name", "adamw"), self.config.training.optimizer)
        self.model_state.load_optimizer_state(self.model, self.optimizer, state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])
        self.train_stream.load_state_dict(state["data"])
        self.schedule.load_state_dict(state["schedule"])
        self.restore_rng(state)
        # A checkpoint from before rows were counted: every step's global batch is full (drop_last).
        rows = state.get("rows", state["step"] * self.rows_per_step)
        self.counters = Counters(step=state["step"], tokens=state["tokens"], rows=rows,
                                 best_metric=state["best_metric"], best_step=state["best_step"],
                                 evals_without_improvement=state["evals_without_improvement"],
                                 elapsed_s=state["elapsed_s"])
        self.milestones.skip_reached(self.counters)
        self.finite_guard.finite_at = self.counters.step  # checkpoints are written finite

    def restore_rng(self, state: dict) -> None:
        """This process's RNG states as saved, when the run was saved by as many processes as run now.

        On another number the data still continues at the saved global position (every step trains
        on the examples it would have), but the processes' random streams (dropout) cannot be
        matched to the saved ones: they keep the streams they were seeded with, and rank 0 says so.
        """
        saved = state.get("world_size", 1)
        if saved == self.workers.world_size:
            ckpt.restore_rng(state["rank_rng"][self.workers.rank] if saved > 1 else state["rng"])
        elif self.workers.is_writer:
            warn(f"resuming a run saved by {saved} process(es) on {self.workers.world_size}: weights, optimizer and "
                 "the data position (the same examples in the same steps) are restored; the random streams "
                 "(dropout) start afresh, so the run is not bit for bit the uninterrupted one.")

    def save(self, name: str) -> None:
        """Write checkpoint `name` (rank 0; every process takes part and waits until it is written), once
        its weights are known to be finite."""
        self.finite_guard.check_weights(self.counters.step)
        state = self.state_dict()
        model = self.model_state.saved_model(self.model)
        if self.workers.is_writer:
            ckpt.save_checkpoint(self.checkpoint_root / name, model, state)
        self.workers.barrier()
        if name == "last":
            self.finite_guard.last_written_at = self.counters.step

    def load_weights(self, checkpoint: Path) -> None:
        """Load a checkpoint's weights into the training model (every process; sharded under FSDP)."""
        self.model_state.load_weights(self.model, checkpoint)

    # ---- the loop ------------------------------------------------------------------------------
    def fit(self, logger: MetricsLogger, label: str = "train") -> Counters:
        """Train up to `total_steps`; returns the counters (best step and metric among them).

        Each step: stop if a signal asked to, set this step's frozen parts and rates, train, then, at
        their intervals, log, evaluate and write checkpoints. `last` is written once when the run ends.
        """
        progress = Progress(self.total_steps, self.counters.step, label, enabled=self.workers.is_writer)
        if announcement := self.milestones.announcement():
            progress.message(announcement)
        previous_handlers = install_stop_handlers(self.request_stop)
        self.model.train()
        self.peak_flops = peak_flops(self.device, self.precision)  # before the clock: no log window pays for it
        started = time.perf_counter() - self.counters.elapsed_s
        window = Window(time.perf_counter())
        try:
            while self.counters.step < self.total_steps:
                self.stop_if_signalled(progress, started)
                lr = self.start_step(progress)
                result = self.train_step()
                self.count_step(result, window)
                if self.at_interval(self.config.training.log_interval):
                    window = self.log_step(logger, progress, result.loss, lr, window, started)
                stop_early = self.at_interval(self.config.training.eval_interval) and \
                    self.evaluate_and_track(logger, progress)
                self.counters.elapsed_s = time.perf_counter() - started
                self.save_step_checkpoints(ending=stop_early or self.counters.step == self.total_steps)
                if stop_early:
                    progress.message(f"Early stopping at step {self.counters.step}: {self.best_metric} has not "
                                     f"improved for {self.config.training.early_stopping_patience} evaluations.")
                    break
            self.save("last")
        finally:
            restore_handlers(previous_handlers)
            progress.close()
        return self.counters

    def request_stop(self, signum: int, frame: object = None) -> None:
        """A signal handler: stop at the next step boundary (`stop_if_signalled`)."""
        self.stop_signal = signum

    def stop_if_signalled(self, progress: Progress, started: float) -> None:
        """After SIGINT/SIGTERM (on any process: all agree), save `last` and raise TrainingInterrupted."""
        stop_signal = self.workers.agreed_signal(self.stop_signal)
        if stop_signal is None:
            return
        self.counters.elapsed_s = time.perf_counter() - started
        self.save("last")
        progress.message(f"Saved checkpoints/last at step {self.counters.step}.")
        raise TrainingInterrupted(stop_signal)

    def start_step(self, progress: Progress) -> float:
        """Freeze or unfreeze for the coming step and set its learning rates; returns the base rate."""
        if self.transfer.apply(self.counters.step, self.optimizer):
            progress.message(f"step {self.counters.step}: unfreezing the backbone "
                             f"(its LR x {self.config.transfer.unfreeze_lr_multiplier}).")
        return self.schedule.apply(self.optimizer, self.counters.step)

    def count_step(self, result: StepResult, window: Window) -> None:
        """Count a finished step: the step itself, its rows, and its tokens and FLOPs for the run and the log window."""
        self.counters.step += 1
        self.counters.tokens += result.tokens
        self.counters.rows += self.rows_per_step
        window.tokens += result.tokens
        window.flops += result.flops

    def at_interval(self, interval: int) -> bool:
        """Whether the step just finished is one of every `interval`-th, or the run's last."""
        return self.counters.step % interval == 0 or self.counters.step == self.total_steps

    def save_step_checkpoints(self, ending: bool) -> None:
        """`step_N` every `save_interval` steps (the newest `keep_last_n` kept), `tokens_N` and `words_N` at
        the step that reaches N (`milestones`), and `last` at every eval or save step the run goes on
        from; when it is `ending`, `fit` writes `last` once, after the loop."""
        tc, step = self.config.training, self.counters.step
        for name in self.milestones.due(self.counters):
            self.save(name)
        at_save = bool(tc.save_interval) and step % tc.save_interval == 0
        if at_save:
            self.save(f"step_{step}")
            if self.workers.is_writer:
                ckpt.prune_step_checkpoints(self.checkpoint_root, tc.keep_last_n)
        if (at_save or step % tc.eval_interval == 0) and not ending:
            self.save("last")

    def log_step(self, logger: MetricsLogger, progress: Progress, loss: StepLoss, lr: float, window: Window,
                 started: float) -> Window:
        """Write the train row and progress line for the window that ends here; returns the next window.

        Reading the loss is the interval's one wait for the device; the clock stops after it, so
        tokens/s and MFU cover the device's work, not only the host's queueing of it.
        """
        value = self.loss_value(loss)
        self.finite_guard.check_loss(self.counters.step, value)
        now = time.perf_counter()
        seconds = max(now - window.start, 1e-9)
        # Tokens and FLOPs are the whole global batch's; MFU is over the peak of every process's device.
        per_device = window.flops / self.workers.world_size
        rate, mfu = window.tokens / seconds, model_flops_utilisation(per_device / seconds, self.peak_flops)
        self.counters.elapsed_s = now - started
        logger.log_train(self.train_row(self.counters.step, value, lr, rate, mfu))
        progress.update(self.counters.step, value, rate, lr, mfu)
        return Window(now)

    def loss_value(self, loss: StepLoss) -> float:
        """The step's mean loss over the targets of every process (one device read, at log steps only)."""
        if self.workers.alone:
            return loss.value()
        return float(self.workers.sum_on_device(loss.local_sum())) / loss.total

    def train_step(self) -> StepResult:
        """One optimizer step over `gradient_accumulation_steps` micro-batches (this process's pieces of
        them), counted before they move; targets, tokens and FLOPs are summed over the processes."""
        batches = self.step_batches()
        counts = [self.task.count_targets(b) for b in batches]
        tokens = [real_tokens(b) for b in batches]
        flops = sum(n * self.flops.per_token(b["input_ids"].shape[-1]) for n, b in zip(tokens, batches))
        total_targets, total_tokens, total_flops = self.workers.sum_on_host(sum(counts), sum(tokens), flops)
        loss = self.accumulate_gradients(batches, counts, total_targets)
        self.update_parameters()
        return StepResult(loss, total_tokens, total_flops)

    def step_batches(self) -> list[dict]:
        """This process's pieces of the next step's micro-batches (one process: the micro-batches whole).

        Every process reads the same stream; a micro-batch it has no piece of is skipped unread, so the
        position stays the same everywhere.
        """
        pieces = {piece.micro_batch: piece for piece in self.pieces}
        batches = []
        for index in range(self.config.training.gradient_accumulation_steps):
            if index in pieces:
                batches.append(pieces[index].of(next(self.train_stream)))
            else:
                self.train_stream.skip()
        return batches

    def accumulate_gradients(self, batches: list[dict], counts: list[int] | None = None,
                             total: int | None = None) -> StepLoss:
        """Backward over host micro-batches, each weighted by its share of the real targets of the step.

        The result equals the gradient of one big batch's mean loss over its targets. The targets are
        counted before a batch moves to the device, so the weights cost no sync; returns the loss.
        `counts` are the batches' targets (counted here by default), `total` those of the whole
        global batch over every process (default: these batches' own). DDP averages the processes'
        gradients, so each loss is also multiplied by their number: the sum is the one-process
        gradient. Gradients are synchronised in the last batch's backward only.
        """
        counts = [self.task.count_targets(b) for b in batches] if counts is None else counts
        loss = StepLoss(counts=counts, total=max(1, sum(counts) if total is None else total))
        processes = self.workers.world_size
        if self.replays_cuda_graphs:
            # One replay generation per optimizer step: the gradients the first micro-batches leave in
            # `.grad` are CUDA graph outputs, which a new generation would overwrite before they add up.
            torch.compiler.cudagraph_mark_step_begin()
        for index, (batch, count) in enumerate(zip(batches, counts)):
            inputs = move_to(without_full_masks(batch), self.device)
            with self.workers.gradient_sync(self.wrapped, synchronise=index == len(batches) - 1):
                with autocast(self.device, self.precision):
                    micro_loss = self.task.training_loss(self.forward, inputs)
                self.scaler.scale(micro_loss * (count * processes / loss.total)).backward()
            # A CUDA graph's next replay overwrites its outputs: keep a copy of the loss, there only.
            loss.losses.append(micro_loss.detach().clone() if self.replays_cuda_graphs else micro_loss.detach())
        return loss

    def update_parameters(self) -> None:
        clip = self.config.training.grad_clip
        if clip:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)

    def train_row(self, step: int, loss: float, lr: float, rate: float, mfu: float | None) -> dict:
        """A row of metrics/train.csv; `mfu` is empty where the device's peak is not known."""
        row = {"step": step, "loss": round(loss, 6), "lr": max(g["lr"] for g in self.optimizer.param_groups)}
        row.update({f"lr_{g['name']}": g["lr"] for g in self.optimizer.param_groups})
        row.update(tokens_per_sec=round(rate, 1), mfu=None if mfu is None else round(mfu, 4),
                   elapsed_s=round(self.counters.elapsed_s, 3))
        return row

    # ---- evaluation ----------------------------------------------------------------------------
    def evaluate(self, split: str, limit: int | None = None) -> dict:
        """The task's metrics on a split (the first `limit` batches of a fixed order, or all).

        Under DDP each process evaluates every N-th batch and the totals of all (sums, and every
        prediction where a metric needs them) make the metrics, so they are one process's, up to the
        order of summation. FSDP's forward needs every process on every batch, so there each
        evaluates the whole split and rank 0's metrics are shared. Either way all processes get the
        same metrics and take the same decisions.
        """
        stream = self.eval_streams[split]
        if self.config.training.distributed == "fsdp":
            metrics = evaluate_stream(self.task, self.model, stream, self.device, self.precision, limit)
            return self.workers.broadcast_object(metrics)
        share = (self.workers.rank, self.workers.world_size)  # one process: (0, 1), every batch
        totals = stream_totals(self.task, self.model, stream, self.device, self.precision, limit, share)
        return self.task.metrics_from_totals(add_totals(self.workers.gather_objects(totals)))

    def evaluate_and_track(self, logger: MetricsLogger, progress: Progress) -> bool:
        """Evaluate val, save `best` on improvement; True when early stopping should end the run."""
        if "val" not in self.eval_streams:
            return False
        step = self.counters.step
        self.finite_guard.check_weights(step)
        metrics = self.evaluate("val", self.config.training.eval_iters)
        self.finite_guard.check_val_loss(step, metrics["loss"])
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
