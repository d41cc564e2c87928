"""Experiment directories: where a run lives, finding it by name, and which checkpoint of it to load.

`<output_dir>/<kind>/<name>/` holds `config.yaml`, `checkpoints/`, `metrics/`, `tokenizer/` and
`plots/`; the experiment directory is the run directory. A checkpoint is a model directory
(`checkpoints/best`, `checkpoints/last`, `step_N`; its files: `model_foundry.checkpoint_files`).
"""
from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from model_foundry.checkpoint_files import CONFIG_FILE, HF_CONFIG, WEIGHTS_FILE, is_checkpoint, recover
from model_foundry.config.schema import FoundryConfig
from model_foundry.errors import UserError

KINDS = ("pretraining", "finetuning")
DEFAULT_ROOT = Path("experiments")
HF_PREFIX = "hf:"  # transfer.init_from_checkpoint: hf:DIR starts from a Hugging Face GPT-2 or BERT directory


def run_directory(config: FoundryConfig, out: str | Path | None) -> Path:
    """`--out` when given, else `<output_dir>/<kind>/<name>/`, made absolute against the cwd."""
    if out is not None:
        return Path(out).resolve()
    exp = config.experiment
    return (Path(exp.output_dir) / exp.kind / exp.name).resolve()


def find_experiment_config(name: str, kind: str | None = None, root: Path = DEFAULT_ROOT) -> Path:
    """The config.yaml of experiment `name` under `root/<kind>/`; the error lists what exists."""
    kinds = [kind] if kind else list(KINDS)
    found = [root / k / name / "config.yaml" for k in kinds if (root / k / name / "config.yaml").is_file()]
    if len(found) == 1:
        return found[0]
    if len(found) > 1:
        raise UserError(f"Experiment {name!r} exists as both pretraining and finetuning under {root}; "
                        "choose one with --kind pretraining or --kind finetuning.")
    existing = sorted(p.parent.name for k in kinds for p in (root / k).glob("*/config.yaml"))
    listing = ", ".join(existing) if existing else "none yet"
    raise UserError(f"No experiment named {name!r} under {root}/{'|'.join(kinds)}/ (experiments there: "
                    f"{listing}). Create one with `foundry new pretraining {name}`, or pass a YAML path.")


def locate_checkpoint(spec: str | Path, key: str, prefer: Sequence[str] = ("best", "last"),
                      root: Path = DEFAULT_ROOT) -> Path:
    """The checkpoint directory that `spec` means, for every command and config key that loads one.

    `spec` is a checkpoint directory itself, a run directory, its `checkpoints/` folder, or an
    experiment name under `root`; in a run the first of `prefer` that exists is taken
    (`("best", "last")`: the selected model, else the final one of a run without a val split).
    `hf:DIR` names a Hugging Face GPT-2 or BERT directory (`HF_CONFIG` + `WEIGHTS_FILE`).
    `key` names the setting or argument in the error.
    """
    if str(spec).startswith(HF_PREFIX):
        return hugging_face_directory(str(spec), key)
    path = Path(spec)
    if not path.exists():
        try:
            path = find_run(spec, root)
        except UserError:
            raise UserError(f"{key} = {str(spec)!r}: no such checkpoint, run directory or experiment name "
                            f"(experiments are looked up under {root}/pretraining and {root}/finetuning).") from None
    candidates = [path, *(path / "checkpoints" / name for name in prefer), *(path / name for name in prefer)]
    for candidate in candidates:
        recover(candidate)
        if is_checkpoint(candidate):
            return candidate
    wanted = " or ".join(f"checkpoints/{name}" for name in prefer)
    raise UserError(f"{key} = {str(spec)!r}: {path} holds no checkpoint (expected {WEIGHTS_FILE} and "
                    f"{CONFIG_FILE} there, or a run directory with {wanted}; has the run been trained?).")


def hugging_face_directory(spec: str, key: str) -> Path:
    path = Path(spec.removeprefix(HF_PREFIX))
    if not (path / HF_CONFIG).is_file():
        raise UserError(f"{key} = {spec!r}: {path} has no {HF_CONFIG}; hf: needs a Hugging Face model directory "
                        f"({HF_CONFIG} + {WEIGHTS_FILE}).")
    if not (path / WEIGHTS_FILE).is_file():
        hint = " (it holds pytorch_model.bin: convert it to safetensors first)" if (
            path / "pytorch_model.bin").is_file() else ""
        raise UserError(f"{key} = {spec!r}: {path} has no {WEIGHTS_FILE}{hint}; pickled weights are never loaded.")
    return path


def find_run(target: str | Path, root: Path = DEFAULT_ROOT) -> Path:
    """A run directory from a path or an experiment name (for eval, plot, export, ...)."""
    path = Path(target)
    if path.is_dir():
        return path.resolve()
    for kind in KINDS:
        candidate = root / kind / str(target)
        if candidate.is_dir():
            return candidate.resolve()
    raise UserError(f"{target!s} is neither a run directory nor an experiment under {root}/pretraining or "
                    f"{root}/finetuning.")
