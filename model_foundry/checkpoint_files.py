"""The files of a model directory and of a checkpoint: their names, writing and reading them, and
replacing a checkpoint atomically (with the recovery after a kill).

A model directory holds `model.safetensors` (the weights; a tied tensor stored once) and
`model_config.json`: `{"format_version": 1, "architecture": ..., "config": {...}}` plus the entries
of the model's parts (`task_head`, `lora`); a LoRA model adds `adapter/` in peft's format. A
checkpoint is a model directory plus `trainer_state.pt`. Nothing read from these files runs code:
weights are safetensors, descriptions JSON, the trainer state `torch.load(weights_only=True)`.

This module sits at the bottom of the package (it imports only `model_foundry.errors`), and torch
and safetensors only inside functions: the config layer uses the names and the recovery, and
reading a config loads no torch.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from model_foundry.errors import UserError

if TYPE_CHECKING:
    from torch import Tensor, nn

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "model_config.json"
STATE_FILE = "trainer_state.pt"
ADAPTER_DIR = "adapter"
ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
HF_CONFIG = "config.json"  # a Hugging Face model directory: config.json + model.safetensors
FORMAT_VERSION = 1  # of model_config.json


# ---- model directories -------------------------------------------------------------------------------
def is_checkpoint(directory: Path) -> bool:
    """Whether `directory` holds a model of ours (weights and description)."""
    return (directory / WEIGHTS_FILE).is_file() and (directory / CONFIG_FILE).is_file()


def write_model_directory(directory: Path, model: nn.Module, description: dict[str, Any]) -> None:
    """`model.safetensors` (each shared tensor once, under its alphabetically first name) and
    `model_config.json` holding `description` into `directory` (created if needed)."""
    import safetensors.torch

    directory.mkdir(parents=True, exist_ok=True)
    safetensors.torch.save_model(model, str(directory / WEIGHTS_FILE))
    write_json(directory / CONFIG_FILE, {"format_version": FORMAT_VERSION, **description})


def write_weights(path: Path, tensors: dict[str, Tensor]) -> None:
    """A safetensors file of `tensors` (none of them sharing memory), marked as PyTorch's."""
    from safetensors.torch import save_file

    save_file({name: tensor.detach().contiguous() for name, tensor in tensors.items()}, str(path),
              metadata={"format": "pt"})


def write_json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n", encoding="utf-8")


def read_model_config(directory: Path) -> dict:
    """The parsed `model_config.json` of `directory`, checked for the fields every loader needs."""
    path = directory / CONFIG_FILE
    if not path.is_file():
        raise UserError(f"{path} does not exist; a model directory holds {CONFIG_FILE} and {WEIGHTS_FILE} "
                        "(written by save_pretrained or by training).")
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}).") from None
    if not isinstance(meta, dict) or not {"architecture", "config"} <= meta.keys():
        raise UserError(f"{path} must be a JSON object with 'format_version', 'architecture' and 'config'.")
    if meta.get("format_version", FORMAT_VERSION) > FORMAT_VERSION:
        raise UserError(f"{path} has format_version {meta['format_version']}, newer than this version of "
                        f"model_foundry reads ({FORMAT_VERSION}); upgrade model_foundry.")
    return meta


# ---- reading weights ---------------------------------------------------------------------------------
def read_weights(path: Path) -> dict[str, Tensor]:
    """The tensors of a safetensors file, on the CPU; the one error for a missing or damaged file."""
    from safetensors.torch import load_file

    if not path.is_file():
        raise UserError(f"{path} does not exist; the model directory is incomplete.")
    try:
        return load_file(path)
    except Exception as exc:  # safetensors raises several types for truncated or foreign files
        raise UserError(f"{path} cannot be loaded: it is not a complete safetensors file ({exc}). It may be "
                        "damaged or cut short (an interrupted copy); copy it again, or use another checkpoint.") from None


@dataclass
class LoadReport:
    """What a load took from a checkpoint and what did not match."""

    loaded: int
    missing: list[str] = field(default_factory=list)  # model weights the checkpoint lacks (tied aliases aside)
    unexpected: list[str] = field(default_factory=list)  # checkpoint tensors the model has no place for
    left_out: list[str] = field(default_factory=list)  # checkpoint tensors outside the selected `prefix`


def load_weights(model: nn.Module, directory: Path, strict: bool = True, prefix: str | None = None,
                 relax_with: str | None = None) -> LoadReport:
    """Copy `directory/model.safetensors` into `model` (see `load_state`); a non-strict load that did not
    match in full says so on stderr."""
    report = load_state(model, read_weights(directory / WEIGHTS_FILE), directory, strict, prefix, relax_with)
    if report.missing or report.unexpected:
        print(f"Loaded {directory} non-strictly: {len(report.missing)} missing keys {report.missing[:8]}, "
              f"{len(report.unexpected)} unexpected keys {report.unexpected[:8]}.", file=sys.stderr)
    return report


def load_state(model: nn.Module, state: dict[str, Tensor], source: Path, strict: bool = True,
               prefix: str | None = None, relax_with: str | None = None) -> LoadReport:
    """Copy `state` (read from `source`) into `model`.

    Tied weights are stored once, under one of their names; the model's own tying fills the other.
    `prefix` (such as "backbone.") selects the tensors of the model's names under it; the others are
    `left_out`, and only weights under it can be missing. With `strict`, a missing or unexpected key
    is an error; `relax_with` names the setting that turns strictness off, for the message. A tensor
    of another shape is always an error.
    """
    own = model.state_dict()
    if prefix is None:
        taken, left_out = state, []
    else:
        taken = {k: v for k, v in state.items() if k.startswith(prefix) and k in own}
        left_out = [k for k in state if k not in taken]
    mismatched = [k for k, v in taken.items() if k in own and v.shape != own[k].shape]
    if mismatched:
        name = mismatched[0]
        raise UserError(f"Checkpoint {source} has tensors of other shapes than the model, for example {name} "
                        f"{tuple(taken[name].shape)} vs {tuple(own[name].shape)}; the model settings (vocab size, "
                        f"widths, layers) must match the checkpoint's {CONFIG_FILE}.")
    result = model.load_state_dict(taken, strict=False)
    tied = tied_parameter_names(model)
    missing = [k for k in result.missing_keys if k not in tied and (prefix is None or k.startswith(prefix))]
    report = LoadReport(len(taken), missing, list(result.unexpected_keys), left_out)
    if strict and (report.missing or report.unexpected):
        raise mismatch_error(source, report.missing, report.unexpected, relax_with)
    return report


def mismatch_error(source: Path, missing: list[str], unexpected: list[str], relax_with: str | None) -> UserError:
    relax = f", or set {relax_with}: false to load what matches" if relax_with else ""
    return UserError(f"Checkpoint {source} does not match the model: missing keys {missing[:8]}, unexpected keys "
                     f"{unexpected[:8]}. Check the model settings against the checkpoint's {CONFIG_FILE}{relax}.")


def tied_parameter_names(model: nn.Module) -> set[str]:
    """Every name of a parameter that has several (tied weights): the file holds it under one of them."""
    seen: dict[int, str] = {}
    aliases: set[str] = set()
    for name, param in model.named_parameters(remove_duplicate=False):
        if id(param) in seen:
            aliases.update({name, seen[id(param)]})
        else:
            seen[id(param)] = name
    return aliases


# ---- replacing a checkpoint atomically ---------------------------------------------------------------
def staging_path(directory: Path) -> Path:
    return directory.parent / f".{directory.name}.tmp"


def previous_path(directory: Path) -> Path:
    return directory.parent / f".{directory.name}.old"


def write_atomically(directory: Path, write: Callable[[Path], None]) -> None:
    """Let `write` fill a hidden staging directory, then swap it in for `directory`.

    A kill at any moment leaves `directory` (or, between the two renames, its previous copy, which
    `recover` puts back) complete. When the disk is full, read-only or refuses the write, the
    staging copy is removed and a UserError says so; `directory` is left as it was.
    """
    staging = staging_path(directory)
    try:
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        write(staging)
        for path in staging.rglob("*"):
            if path.is_file():
                fsync_path(path)  # a full disk can refuse the data only now (delayed allocation)
        swap_in(staging, directory)
    except Exception as exc:
        with contextlib.suppress(OSError):  # on a read-only file system nothing can be cleaned up
            shutil.rmtree(staging, ignore_errors=True)
            recover(directory)
        code = os_error_behind(exc)
        if code is None:
            raise
        raise UserError(write_failure_message(directory, code)) from None


def swap_in(staging: Path, directory: Path) -> None:
    """Replace `directory` by `staging`; at every instant one complete copy exists under a known name."""
    previous = previous_path(directory)
    shutil.rmtree(previous, ignore_errors=True)
    if directory.exists():
        os.rename(directory, previous)
    os.rename(staging, directory)
    fsync_path(directory.parent)
    shutil.rmtree(previous, ignore_errors=True)


def recover(directory: Path) -> None:
    """Undo a swap that a kill interrupted between its two renames: the previous copy comes back."""
    previous = previous_path(directory)
    if not directory.exists() and previous.is_dir():
        os.rename(previous, directory)


def fsync_path(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def os_error_behind(exc: BaseException) -> int | None:
    """The errno of the operating-system error that made a write fail, or None for any other failure.

    It is the exception itself, or the one it was raised while handling (torch.save turns a failed
    write into a RuntimeError), or the one safetensors names in its message ("os error 28").
    """
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, OSError) and seen.errno:
            return seen.errno
        seen = seen.__cause__ or seen.__context__
    found = re.search(r"os error (\d+)", str(exc))
    return int(found.group(1)) if found else None


# errno -> (what happened, what to do)
WRITE_FAILURES = {
    errno.ENOSPC: ("the disk is full", "free space on it (training.keep_last_n keeps fewer step checkpoints)"),
    errno.EDQUOT: ("the disk quota is used up", "free space or raise the quota"),
    errno.EROFS: ("the file system is read-only", "make it writable, or train into a writable directory (--out)"),
    errno.EACCES: ("permission is denied", "make the directory writable for this user"),
    errno.EPERM: ("the operation is not permitted", "make the directory writable for this user"),
}


def write_failure_message(directory: Path, code: int) -> str:
    cause, remedy = WRITE_FAILURES.get(code, ("the operating system refused the write", "fix the disk"))
    return (f"Could not write checkpoint {directory}: {cause} ({errno.errorcode.get(code, code)}: "
            f"{os.strerror(code)}). The partial copy was removed; the checkpoints written before it in "
            f"{directory.parent} are unchanged and load and resume as before. To go on, {remedy}, then "
            "continue the run with --set training.resume=true.")
