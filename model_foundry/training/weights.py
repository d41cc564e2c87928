"""Loading checkpoint weights into a model, strictly or not, reporting what did not match."""
from __future__ import annotations

import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from model_foundry.errors import UserError


def load_weights(model: torch.nn.Module, checkpoint: Path, strict: bool = True) -> None:
    """Copy `checkpoint/model.safetensors` into `model`.

    Tied weights are stored once, under one of their names; the model's own tying fills the other.
    With `strict`, any other missing or unexpected key is an error; without it they are listed.
    """
    path = checkpoint / "model.safetensors"
    try:
        state = load_file(path)
    except Exception as exc:  # safetensors raises several types for damaged files
        raise UserError(f"Weights file {path} cannot be read ({exc}); it may be damaged.") from None
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches are raised even when not strict
        raise UserError(f"Checkpoint {checkpoint} has tensors of other shapes than the model "
                        f"({str(exc).splitlines()[-1].strip()}); the model settings (vocab size, widths, "
                        "layers) must match the checkpoint's model_config.json.") from None
    tied = tied_parameter_names(model)
    missing = [k for k in result.missing_keys if k not in tied]
    unexpected = list(result.unexpected_keys)
    if strict and (missing or unexpected):
        raise UserError(f"Checkpoint {checkpoint} does not match the model: missing keys {missing[:8]}, "
                        f"unexpected keys {unexpected[:8]}. Check model settings against the checkpoint's "
                        "model_config.json, or set training.strict: false to load what matches.")
    if missing or unexpected:
        print(f"Loaded {checkpoint} non-strictly: {len(missing)} missing keys {missing[:8]}, "
              f"{len(unexpected)} unexpected keys {unexpected[:8]}.", file=sys.stderr)


def tied_parameter_names(model: torch.nn.Module) -> set[str]:
    """Names under which a parameter appears a second (or later) time: they share storage with another."""
    seen: dict[int, str] = {}
    aliases: set[str] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            aliases.update({name, seen[id(param)]})
        else:
            seen[id(param)] = name
    return aliases
