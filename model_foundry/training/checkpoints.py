"""Checkpoints that survive a kill at any moment, a full or read-only disk, and load without running code.

A checkpoint is a model directory (the model's own `save_pretrained`) plus `trainer_state.pt`
(optimizer, scaler, schedule, counters, data position, RNG states), which holds only tensors and
plain Python values so `torch.load(weights_only=True)` reads it. The files, and the atomic swap
that puts a new checkpoint in place, are `model_foundry.checkpoint_files`'s. Which checkpoint a
run, an experiment name or a path means is decided in one place: `config.experiments.locate_checkpoint`.
"""
from __future__ import annotations

import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

# is_checkpoint and recover: the run code reaches them as `ckpt.is_checkpoint`, `ckpt.recover`.
from model_foundry.checkpoint_files import STATE_FILE, is_checkpoint, recover, write_atomically  # noqa: F401
from model_foundry.errors import UserError

STATE_FORMAT_VERSION = 1


def save_checkpoint(directory: Path, model: torch.nn.Module, state: dict) -> None:
    """Write model weights and trainer state to `directory`, replacing it atomically (a full or
    read-only disk is a UserError, and the previous `directory` stays)."""
    def write(staging: Path) -> None:
        model.save_pretrained(staging)
        with open(staging / STATE_FILE, "wb") as handle:
            torch.save({"format_version": STATE_FORMAT_VERSION, **state}, handle)

    write_atomically(directory, write)


def load_trainer_state(directory: Path) -> dict:
    """The trainer state of a checkpoint, read without executing any pickled code."""
    path = directory / STATE_FILE
    if not path.is_file():
        raise UserError(f"Checkpoint {directory} has no {STATE_FILE}, so it cannot resume a run's full state; "
                        "set training.load_only_model_state: true to start from its weights only.")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any unpickling failure means a damaged or foreign file
        raise UserError(f"Checkpoint state {path} cannot be read ({exc.__class__.__name__}: {exc}); "
                        "it may be damaged or not written by Model Foundry.") from None
    if not isinstance(state, dict) or state.get("format_version") != STATE_FORMAT_VERSION:
        raise UserError(f"Checkpoint state {path} has an unknown format; expected format_version "
                        f"{STATE_FORMAT_VERSION}.")
    return state


def step_checkpoints(checkpoint_root: Path) -> list[Path]:
    """The periodic `step_N` checkpoints, oldest first."""
    found = [p for p in checkpoint_root.glob("step_*") if re.fullmatch(r"step_\d+", p.name)]
    return sorted(found, key=lambda p: int(p.name.split("_")[1]))


def prune_step_checkpoints(checkpoint_root: Path, keep_last_n: int) -> None:
    """Delete all but the newest `keep_last_n` step checkpoints."""
    old = step_checkpoints(checkpoint_root)
    for path in old[: max(0, len(old) - keep_last_n)]:
        shutil.rmtree(path, ignore_errors=True)


def capture_rng() -> dict:
    """Every RNG a training step can touch, as tensors and plain values (safe for weights_only)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    random.setstate(state["python"])
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
