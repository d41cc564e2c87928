"""Model Foundry: train tokenizers, pretrain small language models, transfer and fine-tune them.

`train`, `load_model` and `embed` are the Python entry points; they import torch lazily so that
`import model_foundry` stays fast for the CLI's help and config commands.
"""
from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from model_foundry.config import FoundryConfig

__version__ = "0.1.0"
__all__ = ["__version__", "create_model", "embed", "load_model", "register_architecture", "train"]


def train(config_or_path: str | Path | dict | FoundryConfig, overrides: dict[str, Any] | list[str] | None = None,
          out: str | Path | None = None, kind: str | None = None, *, mode: str | None = None) -> dict:
    """Run what `foundry train` runs and return the results dict (see results.json).

    `kind` sets experiment.kind (pretraining / finetuning), as `foundry train --kind` does. `mode=`
    is its older spelling (the CLI's `-m`): it still works, with a DeprecationWarning.
    """
    from model_foundry.training.run import train as run_training

    if mode is not None:
        if kind is not None:
            raise TypeError("model_foundry.train() takes kind=, or its older spelling mode=, not both.")
        warnings.warn("model_foundry.train(mode=...) is the older spelling of kind=...; it still works.",
                      DeprecationWarning, stacklevel=2)
        kind = mode
    return run_training(config_or_path, overrides=overrides, out=out, kind=kind)


def load_model(run, checkpoint: str = "best"):
    """The trained model of a run directory or experiment name, in eval mode, ready for inference."""
    from model_foundry.inference.loading import load_model as load

    return load(run, checkpoint=checkpoint)


def embed(run, texts, pooler: str | None = None, checkpoint: str = "best", batch_size: int = 64):
    """Sentence vectors of `texts` under a run: a float32 numpy array (len(texts), hidden).

    `pooler` is mean, cls or last; None takes the run's natural one (a finetuned classifier's own
    pooler, mean for models that read both ways, the last token for causal ones).
    """
    from model_foundry.inference.embedding import embed as embed_run

    return embed_run(run, texts, pooler=pooler, checkpoint=checkpoint, batch_size=batch_size)


def __getattr__(name: str):
    if name in ("create_model", "register_architecture"):
        from model_foundry import models

        return getattr(models, name)
    raise AttributeError(f"module 'model_foundry' has no attribute {name!r}")
