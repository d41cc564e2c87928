"""Load a finished run's model and tokenizer, or rebuild the whole run (config, tokenizer, task,
model) for eval, predict, summary and the dry run, from a run directory or an experiment name.
`load_model` and `load_tokenizer` also read a Hugging Face directory named `hf:DIR` (what
`foundry export --format hf` writes, or a GPT-2, GPT-NeoX, BERT or RoFormer one)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from torch import nn

from model_foundry.config import FoundryConfig, load_config
from model_foundry.checkpoint_files import WEIGHTS_FILE, load_state, read_weights
from model_foundry.config.experiments import HF_PREFIX, find_run, locate_checkpoint
from model_foundry.errors import UserError
from model_foundry.models import BaseLanguageModel, read_checkpoint_config
from model_foundry.models.base import build_described_model
from model_foundry.models.hf_formats import hf_state_dict_as_ours, is_self_contained
from model_foundry.tasks import Task, build_task
from model_foundry.tokenizer import FoundryTokenizer, load_any_tokenizer


def checkpoint_of(run_dir: Path, checkpoint: str = "best") -> Path:
    """`checkpoints/<checkpoint>` of a run; `best` falls back to `last` (runs without a val split)."""
    return locate_checkpoint(run_dir, f"the run's checkpoint {checkpoint!r}",
                             prefer=(checkpoint, "last") if checkpoint == "best" else (checkpoint,))


def load_model(run: str | Path, checkpoint: str = "best") -> BaseLanguageModel:
    """The model of `run` in eval mode; `checkpoint` is best (default, else last), last, step_N,
    words_N or tokens_N (any directory under the run's checkpoints/); `run` may be `hf:DIR`."""
    if str(run).startswith(HF_PREFIX):
        return load_hf_directory(locate_checkpoint(str(run), "the model"))
    return BaseLanguageModel.from_pretrained(checkpoint_of(find_run(run), checkpoint)).eval()


def load_hf_directory(directory: Path) -> BaseLanguageModel:
    """Our model with the weights of a Hugging Face directory, every tensor accounted for."""
    meta = read_checkpoint_config(directory)
    model = build_described_model(meta, directory / "config.json")
    state = hf_state_dict_as_ours(read_weights(directory / WEIGHTS_FILE), directory, model.config)
    load_state(model, state, directory)
    model.tie_weights()
    return model.eval()


def load_tokenizer(run: str | Path):
    """The run's tokenizer; for `hf:DIR`, ours where we exported it self-contained (its tokenizer.json is
    the run's own file), else the directory's Hugging Face tokenizer."""
    if str(run).startswith(HF_PREFIX):
        directory = locate_checkpoint(str(run), "the model")
        return FoundryTokenizer.load(directory) if is_self_contained(directory) else load_any_tokenizer(directory)
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
    if str(run).startswith(HF_PREFIX):
        raise UserError(f"{run} is a Hugging Face directory, not a run: it has no data, task or labels to "
                        "rebuild. It takes the zero-shot evaluations (foundry eval hf:DIR --minimal-pairs FILE, "
                        "or --similarity FILE) and foundry embed; split metrics and predictions need the run.")
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
