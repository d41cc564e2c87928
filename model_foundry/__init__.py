"""Model Foundry: train tokenizers, pretrain small language models, transfer and fine-tune them.

`train` and `load_model` are the Python entry points; they import torch lazily so that
`import model_foundry` stays fast for the CLI's help and config commands.
"""
from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["__version__", "create_model", "load_model", "register_architecture", "train"]


def train(config_or_path, overrides=None, out=None, mode=None) -> dict:
    """Run what `foundry train` runs and return the results dict (see results.json)."""
    from model_foundry.training.run import train as run_training

    return run_training(config_or_path, overrides=overrides, out=out, mode=mode)


def load_model(run, checkpoint: str = "best"):
    """The trained model of a run directory or experiment name, in eval mode, ready for inference."""
    from model_foundry.inference.loading import load_model as load

    return load(run, checkpoint=checkpoint)


def __getattr__(name: str):
    if name in ("create_model", "register_architecture"):
        from model_foundry import models

        return getattr(models, name)
    raise AttributeError(f"module 'model_foundry' has no attribute {name!r}")
