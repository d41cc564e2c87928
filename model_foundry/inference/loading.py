"""Load a finished run's model (and tokenizer) by run directory or experiment name."""
from __future__ import annotations

from pathlib import Path

from model_foundry.config.experiments import find_run
from model_foundry.errors import UserError
from model_foundry.training.checkpoints import first_checkpoint


def checkpoint_of(run_dir: Path, checkpoint: str = "best") -> Path:
    """`checkpoints/<checkpoint>` of a run, falling back from best to last (runs without a val split)."""
    names = [checkpoint, "last"] if checkpoint == "best" else [checkpoint]
    found = first_checkpoint([run_dir / "checkpoints" / name for name in names])
    if found is not None:
        return found
    raise UserError(f"Run {run_dir} has no checkpoints/{checkpoint} to load; has it been trained?")


def load_model(run: str | Path, checkpoint: str = "best"):
    """The model of `run` in eval mode; `checkpoint` is best (default, else last), last or step_N."""
    from model_foundry.models import BaseLanguageModel

    run_dir = find_run(run)
    model = BaseLanguageModel.from_pretrained(checkpoint_of(run_dir, checkpoint))
    model.eval()
    return model


def load_tokenizer(run: str | Path):
    from model_foundry.tokenizer import load_any_tokenizer

    return load_any_tokenizer(find_run(run) / "tokenizer")
