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
    name = config.task.type or default_task(config)
    return get_task(name)(config, tokenizer)


def default_task(config) -> str:
    """The architecture's natural objective; a model made bidirectional cannot learn causal LM (it would
    see the tokens it predicts), so it defaults to masked LM."""
    from model_foundry.models import get_architecture

    name = get_architecture(config.model.architecture).default_task
    values = config.model.architecture_values()
    if name == "causal_lm" and (values.get("bidirectional") or values.get("attention_type") == "bidirectional"):
        return "masked_lm"
    return name
