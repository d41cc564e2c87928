"""AdamW with named parameter groups.

Weight decay applies to matrices of linear layers only: never to biases, norms or embeddings
(decaying an embedding pulls rare tokens toward zero). Every group carries a `name` (it becomes
the `lr_<name>` column of metrics/train.csv) and an `lr_scale`: the schedule sets each group's
rate to `scale x base rate`, so per-group ratios survive every schedule.
"""
from __future__ import annotations

import inspect

import torch
from torch import nn


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Split trainable parameters into `decay` and `no_decay` groups."""
    embedding_params = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    decay, no_decay = [], []
    seen: set[int] = set()
    for param in model.parameters():
        if not param.requires_grad or id(param) in seen:
            continue
        seen.add(id(param))
        if param.dim() >= 2 and id(param) not in embedding_params:
            decay.append(param)
        else:
            no_decay.append(param)
    groups = [{"name": "decay", "params": decay, "weight_decay": weight_decay, "lr_scale": 1.0},
              {"name": "no_decay", "params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0}]
    return [g for g in groups if g["params"]]


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
