"""What a finished run leaves for people and scripts: `results.json` and `run.json`.

Final metrics come from `checkpoints/best` when there is a val split (the model selection the
user asked for), else from `checkpoints/last`, evaluated on the full val and test splits. With
several processes every one of them loads the checkpoint and takes part in evaluating it
(`Trainer.evaluate`), and rank 0 alone writes.
"""
from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path

import torch

from model_foundry.config.schema import FoundryConfig
from model_foundry.checkpoint_files import is_checkpoint

RESULTS_FORMAT_VERSION = 1
PACKAGES = ("model-foundry", "torch", "tokenizers", "safetensors", "numpy", "pydantic", "transformers", "peft")


def write_results(trainer, logger) -> dict:
    """Evaluate the chosen checkpoint on val and test, write results.json (rank 0), return its content."""
    best_dir = trainer.checkpoint_root / "best"
    use_best = "val" in trainer.eval_streams and is_checkpoint(best_dir)
    if use_best:
        trainer.load_weights(best_dir)
    counters = trainer.counters
    model = trainer.model
    results = {
        "format_version": RESULTS_FORMAT_VERSION,
        "task": trainer.task.name,
        "checkpoint": "best" if use_best else "last",
        "best_step": counters.best_step if use_best else counters.step,
        "run": {
            "params": model.get_parameter_count(),
            "trainable_params": model.get_parameter_count(trainable_only=True),
            "steps": counters.step,
            "tokens": counters.tokens,
            "tokens_per_sec": round(counters.tokens / counters.elapsed_s, 1) if counters.elapsed_s else 0.0,
            "wall_s": round(counters.elapsed_s, 2),
        },
    }
    results["run"].update(trainer.milestones.results(counters))
    for split in ("val", "test"):
        if split in trainer.eval_streams:
            results[split] = trainer.evaluate(split)
    if "test" in results:
        logger.log_eval(results["best_step"], "test", results["test"])
    if trainer.workers.is_writer:
        write_json_atomically(trainer.run_dir / "results.json", results)
    return results


def write_run_info(run_dir: Path, config: FoundryConfig, started: bool, previous: dict | None = None) -> dict:
    """run.json: versions, git commit, command line, times and hardware; updated at the end of the run."""
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if started:
        info = {"format_version": RESULTS_FORMAT_VERSION, "command": sys.argv, "start_time": now,
                "end_time": None, "packages": package_versions(), "git_commit": git_commit(),
                "hardware": hardware()}
    else:
        info = {**(previous or {}), "end_time": now}
    write_json_atomically(run_dir / "run.json", info)
    return info


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    """The commit of the working directory's repository, when there is one."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def hardware() -> dict:
    info = {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads()}
    if torch.cuda.is_available():
        info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return info


def write_json_atomically(path: Path, data: dict) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)
