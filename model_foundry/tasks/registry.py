"""The task registry: `task.type` in a config names one of these."""
from __future__ import annotations

from model_foundry.errors import UserError, did_you_mean

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
        raise UserError(f"task.type {name!r} is not a known task; {did_you_mean(name, TASKS)}")
    return TASKS[name]


def build_task(config, tokenizer):
    """The task a config asks for; without `task.type`, the architecture's natural objective."""
    from model_foundry.models import get_architecture

    name = config.task.type or get_architecture(config.model.architecture).default_task
    return get_task(name)(config, tokenizer)
