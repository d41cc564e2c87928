"""Write new experiments from the commented templates in this folder (see the package docstring)."""
from __future__ import annotations

from dataclasses import fields
from importlib import resources
from pathlib import Path

import yaml

from model_foundry.config.choices import default_pooler
from model_foundry.config.experiments import DEFAULT_ROOT, find_experiment_config, find_run, locate_checkpoint
from model_foundry.errors import UserError
from model_foundry.models import ARCHITECTURES, read_checkpoint_config
from model_foundry.tasks import TASKS
from model_foundry.tasks.finetuning import FinetuningTask

# What the template shows for settings an architecture (a recurrent one) does not have.
TEMPLATE_FALLBACKS = {"positional": "learned", "norm_position": "pre", "attention_type": "causal"}
# The recipe and optimizer a new pretraining experiment starts from, per architecture: the ones that learned
# fastest where measured over three seeds (docs/measurements.md, "The modern recipe"); elsewhere the classic
# layout and AdamW.
TEMPLATE_RECIPES = {"gpt": "modern"}
TEMPLATE_OPTIMIZERS = {"gpt": "muon", "bert": "muon", "hybrid": "muon"}


def template_architectures() -> dict[str, type]:
    """Registered architectures that pretrain from a template (each under its own name, not an alias):
    those whose objective is a pretraining task."""
    return {name: cls for name, cls in ARCHITECTURES.items()
            if name == cls.architecture_name and not issubclass(TASKS[cls.default_task], FinetuningTask)}


def finetuning_tasks() -> dict[str, type[FinetuningTask]]:
    return {name: cls for name, cls in TASKS.items() if issubclass(cls, FinetuningTask)}


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
    architectures = template_architectures()
    if arch not in architectures:
        raise UserError(f"--arch {arch!r} has no pretraining template; choose one of {', '.join(architectures)}.")
    cls = architectures[arch]
    template = resources.files("model_foundry.templates").joinpath("pretraining.yaml").read_text()
    recipe = TEMPLATE_RECIPES.get(arch)
    settings = architecture_defaults(cls, recipe)
    return template.format(name=name, arch=arch, output_dir=root.as_posix(), resume="false", resume_from="",
                           architectures=" | ".join(architectures), positional=settings["positional"],
                           norm=settings["norm_position"], attention=settings["attention_type"],
                           task=cls.default_task, tokenizer=cls.default_tokenizer,
                           recipe=f"recipe: {recipe}" if recipe else "# recipe: classic",
                           optimizer=TEMPLATE_OPTIMIZERS.get(arch, "adamw"))


def architecture_defaults(cls, recipe: str | None = None) -> dict:
    """The template-visible settings of an architecture: its config class's defaults under `recipe`'s."""
    defaults = {f.name: f.default for f in fields(cls.config_class)}
    defaults.update(cls.recipes.get(recipe, {}) if recipe else {})
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


def new_finetuning(name: str, pretrain: str, task: str = "sequence_classification",
                   root: Path = DEFAULT_ROOT) -> Path:
    """Write `root/finetuning/NAME/config.yaml` starting from pretraining run PRETRAIN."""
    tasks = finetuning_tasks()
    if task not in tasks:
        raise UserError(f"--task {task!r} is not a finetuning task; choose one of {', '.join(tasks)}.")
    target = root / "finetuning" / name / "config.yaml"
    if target.exists():
        raise UserError(f"{target} already exists; choose another name or edit that file.")
    source = pretrain if Path(pretrain).exists() else find_run(pretrain, root)
    run_dir = Path(source).resolve()
    backbone = read_checkpoint_config(locate_checkpoint(run_dir, "--from"))
    settings = backbone["config"]
    # Transformers record attention_type; recurrent models record whether they are bidirectional.
    attention = settings.get("attention_type") or ("bidirectional" if settings.get("bidirectional") else "causal")
    template = resources.files("model_foundry.templates").joinpath("finetuning.yaml").read_text()
    text = template.format(name=name, pretrain_name=Path(pretrain).name, output_dir=root.as_posix(),
                           tokenizer=(run_dir / "tokenizer").as_posix(), checkpoint=run_dir.as_posix(),
                           arch=backbone["architecture"], attention=attention, task=task,
                           pooler=default_pooler(attention),
                           best_metric=tasks[task].default_best_metric, **tasks[task].default_columns)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text, encoding="utf-8")
    return target
