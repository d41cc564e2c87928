"""Experiment directories: where a run lives, finding it by name, and writing new ones from templates.

The layout is the one seed 001's users know: `<output_dir>/<kind>/<name>/` holds `config.yaml`,
`checkpoints/`, `metrics/`, `tokenizer/` and `plots/`; the experiment directory is the run directory.
"""
from __future__ import annotations

from dataclasses import fields
from importlib import resources
from pathlib import Path

import yaml

from model_foundry.config.schema import FoundryConfig
from model_foundry.errors import UserError

KINDS = ("pretraining", "finetuning")
DEFAULT_ROOT = Path("experiments")
# The architecture's natural objective and tokenizer, so `foundry new pretraining X --arch bert` works as is.
# The model settings the template shows (positions, LayerNorm placement, attention) are read from the
# architecture's own config class, so they cannot disagree with what the model really uses.
ARCH_DEFAULTS = {
    "gpt": {"task": "causal_lm", "tokenizer": "bpe"},
    "bert": {"task": "masked_lm", "tokenizer": "wordpiece"},
    "hybrid": {"task": "hybrid", "tokenizer": "bpe"},
    "lstm": {"task": "causal_lm", "tokenizer": "bpe"},
    "gru": {"task": "causal_lm", "tokenizer": "bpe"},
    "rnn": {"task": "causal_lm", "tokenizer": "bpe"},
}
# What the template shows for settings a (recurrent) architecture does not have.
TEMPLATE_FALLBACKS = {"positional": "learned", "norm_position": "pre", "attention_type": "causal"}


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
                        "choose one with -m pretraining or -m finetuning.")
    existing = sorted(p.parent.name for k in kinds for p in (root / k).glob("*/config.yaml"))
    listing = ", ".join(existing) if existing else "none yet"
    raise UserError(f"No experiment named {name!r} under {root}/{'|'.join(kinds)}/ (experiments there: "
                    f"{listing}). Create one with `foundry new pretraining {name}`, or pass a YAML path.")


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


def new_pretraining(name: str, arch: str = "gpt", resume_from: str | None = None,
                    root: Path = DEFAULT_ROOT) -> Path:
    """Write `root/pretraining/NAME/config.yaml` from the commented template, or clone OLD to resume it."""
    target = root / "pretraining" / name / "config.yaml"
    if target.exists():
        raise UserError(f"{target} already exists; choose another name or edit that file.")
    if resume_from:
        text = clone_for_resume(name, resume_from, root)
    else:
        text = render_template(name, arch, root)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target


def render_template(name: str, arch: str, root: Path) -> str:
    from model_foundry.models import ARCHITECTURES

    if arch not in ARCH_DEFAULTS:
        known = ", ".join(a for a in ARCH_DEFAULTS if a in ARCHITECTURES)
        raise UserError(f"--arch {arch!r} has no pretraining template; choose one of {known}.")
    template = resources.files("model_foundry.config").joinpath("templates/pretraining.yaml").read_text()
    settings = architecture_defaults(ARCHITECTURES[arch])
    return template.format(name=name, arch=arch, output_dir=root.as_posix(), resume="false", resume_from="",
                           architectures=" | ".join(ARCH_DEFAULTS), positional=settings["positional"],
                           norm=settings["norm_position"], attention=settings["attention_type"], **ARCH_DEFAULTS[arch])


def architecture_defaults(cls) -> dict:
    """The template-visible settings of an architecture, from its config class's defaults."""
    defaults = {f.name: f.default for f in fields(cls.config_class)}
    return {key: defaults.get(key, fallback) for key, fallback in TEMPLATE_FALLBACKS.items()}


def clone_for_resume(name: str, old: str, root: Path) -> str:
    """OLD's config under the new name, with `resume_from` pointing at OLD's last checkpoint.

    The clone keeps OLD's settings but starts a new run directory, so OLD stays untouched.
    """
    old_config = find_experiment_config(old, "pretraining", root)
    raw = yaml.safe_load(old_config.read_text(encoding="utf-8")) or {}
    raw.setdefault("experiment", {})["name"] = name
    last = (old_config.parent / "checkpoints" / "last").resolve()
    training = raw.setdefault("training", {})
    training["resume"] = False
    training["resume_from"] = str(last)
    header = (f"# Cloned from {old_config} to resume it in a new run directory.\n"
              f"# training.resume_from loads {old}'s last checkpoint with its full state;\n"
              "# set training.load_only_model_state: true to take the weights only.\n")
    return header + yaml.safe_dump(raw, sort_keys=False, allow_unicode=True)


# Per finetuning task: the columns a user most likely has, and the metric that picks `best`.
TASK_DEFAULTS = {
    "sequence_classification": {"text_column": "text", "label_column": "label", "best_metric": "accuracy"},
    "sequence_scoring": {"text_column": "text", "label_column": "score", "best_metric": "pearson"},
    "token_classification": {"text_column": "tokens", "label_column": "upos", "best_metric": "token_accuracy"},
}


def new_finetuning(name: str, pretrain: str, task: str = "sequence_classification",
                   root: Path = DEFAULT_ROOT) -> Path:
    """Write `root/finetuning/NAME/config.yaml` starting from pretraining run PRETRAIN."""
    from model_foundry.models.base import read_model_config
    from model_foundry.training.transfer import resolve_init_checkpoint

    if task not in TASK_DEFAULTS:
        raise UserError(f"--task {task!r} is not a finetuning task; choose one of {', '.join(TASK_DEFAULTS)}.")
    target = root / "finetuning" / name / "config.yaml"
    if target.exists():
        raise UserError(f"{target} already exists; choose another name or edit that file.")
    source = pretrain if Path(pretrain).exists() else find_run(pretrain, root)
    run_dir = Path(source).resolve()
    checkpoint = resolve_init_checkpoint(str(run_dir))
    backbone = read_model_config(checkpoint)
    settings = backbone["config"]
    # Transformers record attention_type; recurrent models record whether they are bidirectional.
    attention = settings.get("attention_type") or ("bidirectional" if settings.get("bidirectional") else "causal")
    template = resources.files("model_foundry.config").joinpath("templates/finetuning.yaml").read_text()
    text = template.format(name=name, pretrain_name=Path(pretrain).name, output_dir=root.as_posix(),
                           tokenizer=(run_dir / "tokenizer").as_posix(), checkpoint=run_dir.as_posix(),
                           arch=backbone["architecture"], attention=attention, task=task,
                           pooler="last" if attention == "causal" else "cls", **TASK_DEFAULTS[task])
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target
