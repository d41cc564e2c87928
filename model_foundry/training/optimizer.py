"""AdamW with named parameter groups.

Weight decay applies to matrices of linear layers only: never to biases, norms or embeddings
(decaying an embedding pulls rare tokens toward zero). Every group carries a `name` (it becomes
the `lr_<name>` column of metrics/train.csv) and an `lr_scale`: the schedule sets each group's
rate to `scale x base rate`, so per-group ratios survive every schedule.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from torch import nn


GroupOf = Callable[[str], tuple[str | None, float, str]]


def parameter_groups(model: nn.Module, weight_decay: float, group_of: GroupOf | None = None) -> list[dict]:
    """Split parameters into named groups: `decay` / `no_decay`, times the label `group_of` gives.

    `group_of(name) -> (label, lr_scale, part)` sorts parameters by part of the model (head,
    backbone, one block); a None label means a single group per decay kind. Frozen parameters are
    included: without a gradient AdamW skips them, and they train as soon as they are unfrozen.
    """
    embedding_params = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    groups: dict[str, dict] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        label, scale, part = group_of(name) if group_of else (None, 1.0, "all")
        kind = "decay" if param.dim() >= 2 and id(param) not in embedding_params else "no_decay"
        group_name = kind if label is None else f"{label}_{kind}"
        group = groups.setdefault(group_name, {"name": group_name, "params": [], "lr_scale": scale, "part": part,
                                               "weight_decay": weight_decay if kind == "decay" else 0.0})
        group["params"].append(param)
    return list(groups.values())


def build_optimizer(groups: list[dict], lr: float, betas: tuple[float, float],
                    device: torch.device) -> torch.optim.AdamW:
    """AdamW, fused where this torch build supports it for the device, else foreach."""
    for group in groups:
        group.setdefault("lr", lr * group.get("lr_scale", 1.0))
    kwargs: dict = {"lr": lr, "betas": betas}
    if "fused" in inspect.signature(torch.optim.AdamW).parameters and device.type in ("cuda", "cpu"):
        kwargs["fused"] = True
    else:
        kwargs["foreach"] = True
    return torch.optim.AdamW(groups, **kwargs)
