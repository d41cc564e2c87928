"""Load a finished run's model and tokenizer, or rebuild the whole run (config, tokenizer, task,
model) for eval, predict, summary and the dry run, from a run directory or an experiment name."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from model_foundry.config import FoundryConfig, load_config
from model_foundry.config.experiments import find_run, locate_checkpoint
from model_foundry.errors import UserError
from model_foundry.models import BaseLanguageModel
from model_foundry.tasks import Task, build_task
from model_foundry.tokenizer import load_any_tokenizer


def checkpoint_of(run_dir: Path, checkpoint: str = "best") -> Path:
    """`checkpoints/<checkpoint>` of a run; `best` falls back to `last` (runs without a val split)."""
    return locate_checkpoint(run_dir, f"the run's checkpoint {checkpoint!r}",
                             prefer=(checkpoint, "last") if checkpoint == "best" else (checkpoint,))


def load_model(run: str | Path, checkpoint: str = "best") -> BaseLanguageModel:
    """The model of `run` in eval mode; `checkpoint` is best (default, else last), last, step_N,
    words_N or tokens_N (any directory under the run's checkpoints/)."""
    return BaseLanguageModel.from_pretrained(checkpoint_of(find_run(run), checkpoint)).eval()


def load_tokenizer(run: str | Path):
    return load_any_tokenizer(find_run(run) / "tokenizer")


@dataclass
class Run:
    """A trained run rebuilt as training left it: its resolved config, tokenizer, task and weights."""

    directory: Path
    config: FoundryConfig
    tokenizer: object
    task: Task
    model: nn.Module
    checkpoint: Path


def rebuild_run(run: str | Path, checkpoint: str = "best") -> Run:
    """The run's task (with the labels its model was trained with) and the model of `checkpoint`."""
    run_dir = find_run(run)
    resolved = run_dir / "resolved_config.yaml"
    if not resolved.is_file():
        raise UserError(f"{run_dir} has no resolved_config.yaml, so it is not a Model Foundry run directory.")
    config = load_config(resolved).config
    tokenizer = load_tokenizer(run_dir)
    task = build_task(config, tokenizer)
    path = checkpoint_of(run_dir, checkpoint)
    model = BaseLanguageModel.from_pretrained(path)
    task.use_trained_model(model)
    return Run(run_dir, config, tokenizer, task, model, path)
