"""The task registry (`task.type` names one of these) and the decisions that depend on it: which
architecture a run trains, which objective it trains by default, and whether the config's
task, architecture and settings go together (`check_compatibility`, before anything is written)."""
from __future__ import annotations

from types import SimpleNamespace

from model_foundry.config.experiments import locate_checkpoint
from model_foundry.errors import UserError, did_you_mean
from model_foundry.models import get_architecture, read_checkpoint_config

TASKS: dict[str, type] = {}


def register_task(name: str):
    """Class decorator: make a Task selectable as `task.type: name`."""
    def decorate(cls: type) -> type:
        if name in TASKS:
            raise ValueError(f"task {name!r} is registered twice")
        cls.name = name
        TASKS[name] = cls
        return cls
    return decorate


def get_task(name: str) -> type:
    if name not in TASKS:
        raise UserError(f"task.type {name!r} is not a known task; {did_you_mean(name, TASKS)} "
                        f"Registered tasks: {', '.join(sorted(TASKS))}.")
    return TASKS[name]


def check_choices(config) -> None:
    """Refuse an unknown `model.architecture` or `task.type` before anything is written, naming the
    registered ones (they are registries, so the schema cannot list them)."""
    get_architecture(config.model.architecture)
    if config.task.type is not None:
        get_task(config.task.type)


def check_compatibility(config) -> None:
    """Every rule about what goes with what, in one pass before a run writes anything: the
    architecture and the task are registered ones, and the task can train this architecture with
    these settings (the rules each task states in its own `check_config`). Give it the resolved
    config (`training.run.resolved_config`), whose architecture is the one the run trains."""
    check_choices(config)
    task_class(config).check_config(config)


def architecture_of(config) -> str:
    """The architecture a run trains: the one recorded in `transfer.init_from_checkpoint` when the
    config does not name one, else `model.architecture`. Every caller asks here."""
    init = config.transfer.init_from_checkpoint
    if init and "architecture" not in config.model.model_fields_set:
        return read_checkpoint_config(locate_checkpoint(init, "transfer.init_from_checkpoint"))["architecture"]
    return config.model.architecture


def build_task(config, tokenizer):
    """The task a config asks for, with the run's tokenizer."""
    return task_class(config)(config, tokenizer)


def task_class(config) -> type:
    """The class of the task a config asks for; without `task.type`, the architecture's natural objective."""
    return get_task(config.task.type or default_task(config))


def default_task(config) -> str:
    """The architecture's natural objective; a model made bidirectional cannot learn causal LM (it would
    see the tokens it predicts), so it defaults to masked LM."""
    name = get_architecture(architecture_of(config)).default_task
    if name == "causal_lm" and sees_both_directions(SimpleNamespace(**config.model.architecture_values())):
        return "masked_lm"
    return name


def sees_both_directions(settings) -> bool:
    """True for a model (config) whose every position reads the whole sequence: it cannot learn or
    score causal LM, as each position would see the token it predicts."""
    return getattr(settings, "attention_type", None) == "bidirectional" or bool(getattr(settings, "bidirectional", False))


def bidirectional_key(settings) -> str:
    """The config key that made `settings` bidirectional, for messages."""
    if getattr(settings, "bidirectional", False):
        return "model.bidirectional: true"
    return "model.attention_type: bidirectional"


__all__ = ["TASKS", "architecture_of", "bidirectional_key", "build_task", "check_choices", "check_compatibility",
           "default_task", "get_task", "register_task", "sees_both_directions", "task_class"]
