"""Where metrics go: `metrics/train.csv`, `metrics/eval.csv`, and TensorBoard or W&B when asked.

TensorBoard and W&B are optional extras, imported only when the config turns them on. On resume,
rows logged after the checkpoint being resumed are dropped first, so the CSVs read as if the run
had never been interrupted.
"""
from __future__ import annotations

import csv
import hashlib
import os
from pathlib import Path

from model_foundry.errors import UserError


class CsvLog:
    """An append-only CSV whose columns are fixed by its first row."""

    def __init__(self, path: Path):
        self.path = path
        self.columns: list[str] | None = None
        if path.is_file():
            with open(path, newline="", encoding="utf-8") as handle:
                self.columns = next(csv.reader(handle), None)

    def append(self, row: dict) -> None:
        if self.columns is None:
            self.columns = list(row)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "w", newline="", encoding="utf-8") as handle:
                csv.writer(handle).writerow(self.columns)
        with open(self.path, "a", newline="", encoding="utf-8") as handle:
            csv.DictWriter(handle, fieldnames=self.columns, extrasaction="ignore").writerow(row)

    def truncate_after(self, step: int) -> None:
        """Drop rows whose step is past `step` (they belong to an interrupted stretch of the run)."""
        if not self.path.is_file():
            return
        with open(self.path, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
        if not rows:
            return
        kept = [rows[0]] + [r for r in rows[1:] if r and int(float(r[0])) <= step]
        tmp = self.path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="", encoding="utf-8") as handle:
            csv.writer(handle).writerows(kept)
        os.replace(tmp, self.path)


class MetricsLogger:
    def __init__(self, run_dir: Path, *, csv_enabled: bool, tensorboard: bool, wandb: bool,
                 wandb_mode: str, project: str, run_name: str, config: dict):
        metrics = run_dir / "metrics"
        self.train_csv = CsvLog(metrics / "train.csv") if csv_enabled else None
        self.eval_csv = CsvLog(metrics / "eval.csv") if csv_enabled else None
        self.tensorboard = open_tensorboard(run_dir / "tensorboard") if tensorboard else None
        self.wandb = open_wandb(run_dir, wandb_mode, project, run_name, config) if wandb else None

    def resume_at(self, step: int) -> None:
        for log in (self.train_csv, self.eval_csv):
            if log is not None:
                log.truncate_after(step)

    def log_train(self, row: dict) -> None:
        if self.train_csv:
            self.train_csv.append(row)
        self._log_scalars("train", row)

    def log_eval(self, step: int, split: str, metrics: dict) -> None:
        scalars = {k: v for k, v in metrics.items() if isinstance(v, (int, float))}
        if self.eval_csv:
            self.eval_csv.append({"step": step, "split": split, **scalars})
        self._log_scalars(split, {"step": step, **scalars})

    def _log_scalars(self, prefix: str, row: dict) -> None:
        step = row["step"]
        values = {f"{prefix}/{k}": v for k, v in row.items() if k != "step" and isinstance(v, (int, float))}
        if self.tensorboard:
            for key, value in values.items():
                self.tensorboard.add_scalar(key, value, step)
        if self.wandb:
            self.wandb.log(values, step=step)

    def close(self) -> None:
        if self.tensorboard:
            self.tensorboard.close()
        if self.wandb:
            self.wandb.finish()


def open_tensorboard(log_dir: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("logging.tensorboard is true but TensorBoard is not installed; "
                        "pip install 'model-foundry[tensorboard]' or set logging.tensorboard: false.") from None
    return SummaryWriter(log_dir=str(log_dir))


def open_wandb(run_dir: Path, mode: str, project: str, run_name: str, config: dict):
    try:
        import wandb
    except ImportError:
        raise UserError("logging.wandb is true but wandb is not installed; "
                        "pip install 'model-foundry[wandb]' or set logging.wandb: false.") from None
    return wandb.init(project=project, name=run_name, dir=str(run_dir), mode=mode, config=config,
                      resume="allow", id=stable_run_id(run_dir))


def stable_run_id(run_dir: Path) -> str:
    """The same W&B run id every time this run directory resumes (Python's hash() is salted per process)."""
    return hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:16]
