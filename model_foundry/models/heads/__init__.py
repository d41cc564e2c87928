"""Task heads for finetuning: poolers, heads and criteria, each chosen by name from a registry.

A task model is backbone -> pooler (sequence tasks) -> head -> criterion. Adding a pooler, head
or criterion is one class in its module and one line in the registry below; the names are the
values of `task.pooler`, `task.head` and `task.criterion`.
"""
from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence

from torch import nn

from model_foundry.errors import UserError, did_you_mean
from model_foundry.models.heads.bitempered import BiTemperedCriterion
from model_foundry.models.heads.losses import BinaryCrossEntropyCriterion, CrossEntropyCriterion, MSECriterion
from model_foundry.models.heads.poolers import (AttentionPooler, FirstTokenPooler, GeMPooler, LastTokenPooler,
                                                MaxPooler, MeanPooler, Pooler)
from model_foundry.models.heads.task_heads import LinearHead, SequentialHead

POOLERS: dict[str, type[Pooler]] = {
    "cls": FirstTokenPooler,
    "first": FirstTokenPooler,
    "last": LastTokenPooler,
    "mean": MeanPooler,
    "max": MaxPooler,
    "attention": AttentionPooler,
    "gem": GeMPooler,
}
HEADS: dict[str, type[nn.Module]] = {
    "linear": LinearHead,
    "sequential": SequentialHead,
}
CRITERIA: dict[str, type[nn.Module]] = {
    "cross_entropy": CrossEntropyCriterion,
    "bce": BinaryCrossEntropyCriterion,
    "mse": MSECriterion,
    "bitempered": BiTemperedCriterion,
}
# make_criterion's defaults, which mean "not set", and the config key that sets each option.
UNSET_OPTIONS = {"label_smoothing": 0.0, "class_weights": None, "t1": 0.8, "t2": 1.2}
OPTION_KEYS = {"label_smoothing": "task.label_smoothing", "class_weights": "task.class_weights",
               "t1": "task.bitempered_t1", "t2": "task.bitempered_t2"}


def lookup(registry: Mapping[str, type[nn.Module]], name: str, key: str) -> type[nn.Module]:
    """The class registered as `name`, or a UserError naming the config key and the valid names."""
    if name not in registry:
        raise UserError(f"{key} {name!r} is not known; {did_you_mean(name, registry)} "
                        f"Valid names for {key}: {', '.join(sorted(registry))}.")
    return registry[name]


def make_pooler(name: str, hidden_size: int) -> nn.Module:
    """A pooler: forward(hidden [B, T, H], attention_mask [B, T] | None) -> [B, H]."""
    return lookup(POOLERS, name, "task.pooler")(hidden_size)


def make_head(name: str, hidden_size: int, num_outputs: int, dropout: float = 0.1) -> nn.Module:
    """A head: forward([..., H]) -> [..., num_outputs]."""
    return lookup(HEADS, name, "task.head")(hidden_size, num_outputs, dropout)


def make_criterion(name: str, *, label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None,
                   t1: float = 0.8, t2: float = 1.2) -> nn.Module:
    """A criterion: forward(logits, targets) -> scalar loss.

    Each criterion receives the options its constructor takes. An option set away from its
    default for a criterion that would ignore it (say label smoothing with mse) is a UserError
    rather than a silent no-op.
    """
    criterion_class = lookup(CRITERIA, name, "task.criterion")
    if not 0.0 <= label_smoothing < 1.0:
        raise UserError(f"task.label_smoothing must be in [0, 1), got {label_smoothing}.")
    options = {"label_smoothing": label_smoothing, "class_weights": class_weights, "t1": t1, "t2": t2}
    accepted = inspect.signature(criterion_class).parameters
    for option, value in options.items():
        if option not in accepted and value != UNSET_OPTIONS[option]:
            users = sorted(n for n, c in CRITERIA.items() if option in inspect.signature(c).parameters)
            raise UserError(f"{OPTION_KEYS[option]} = {value!r} has no effect with task.criterion {name!r}; "
                            f"it applies to {', '.join(users)}. Remove it or choose one of those criteria.")
    return criterion_class(**{option: value for option, value in options.items() if option in accepted})


__all__ = ["CRITERIA", "HEADS", "POOLERS", "make_criterion", "make_head", "make_pooler"]
