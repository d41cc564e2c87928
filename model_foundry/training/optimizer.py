"""The run's optimizer, with named parameter groups: AdamW, or Muon with AdamW (`training.optimizer`).

Weight decay applies to matrices of linear layers only: never to biases, norms or embeddings
(decaying an embedding pulls rare tokens toward zero). Every group carries a `name` (it becomes
the `lr_<name>` column of metrics/train.csv) and an `lr_scale`: the schedule sets each group's
rate to `scale x base rate`, so per-group ratios survive every schedule. With Muon, the hidden
blocks' matrices form groups of their own (`muon`, or `<label>_muon`; see `muon`).
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Collection

import torch
from torch import nn

from model_foundry.config.schema import TrainingSection
from model_foundry.errors import UserError
from model_foundry.training.muon import MuonWithAdamW, hidden_matrices


GroupOf = Callable[[str], tuple[str | None, float, str]]


def parameter_groups(model: nn.Module, weight_decay: float, group_of: GroupOf | None = None,
                     muon: Collection[int] = frozenset(), decay_embeddings: bool = False) -> list[dict]:
    """Split parameters into named groups: `decay` / `no_decay` (and `muon`), times the label `group_of` gives.

    `group_of(name) -> (label, lr_scale, part)` sorts parameters by part of the model (head,
    backbone, one block); a None label means a single group per decay kind. The parameters whose ids
    are in `muon` go to groups marked `"optimizer": "muon"`, with weight decay. Embedding tables are
    never decayed unless `decay_embeddings`. Frozen parameters are
    included: without a gradient AdamW and Muon skip them, and they train as soon as they are unfrozen.
    """
    embedding_params = set() if decay_embeddings else {
        id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    groups: dict[str, dict] = {}
    seen: set[int] = set()
    for name, param in model.named_parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        label, scale, part = group_of(name) if group_of else (None, 1.0, "all")
        if id(param) in muon:
            kind = "muon"
        else:
            kind = "decay" if param.dim() >= 2 and id(param) not in embedding_params else "no_decay"
        group_name = kind if label is None else f"{label}_{kind}"
        group = groups.setdefault(group_name, {"name": group_name, "params": [], "lr_scale": scale, "part": part,
                                               "weight_decay": 0.0 if kind == "no_decay" else weight_decay})
        if kind == "muon":
            group["optimizer"] = "muon"
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


def make_optimizer(model: nn.Module, training: TrainingSection, device: torch.device,
                   group_of: GroupOf | None = None) -> torch.optim.AdamW | MuonWithAdamW:
    """The optimizer `training.optimizer` names over `model`'s groups: AdamW, or Muon for the hidden
    blocks' matrices (`muon.hidden_matrices`) with AdamW for the rest."""
    betas = (training.beta1, training.beta2)
    if training.optimizer == "adamw":
        groups = parameter_groups(model, training.weight_decay, group_of, decay_embeddings=training.decay_embeddings)
        return build_optimizer(groups, training.learning_rate, betas, device)
    hidden = hidden_matrices(model)
    if not hidden:
        raise UserError(f"training.optimizer: muon found no weight matrix for Muon in this "
                        f"{type(model).__name__}: Muon updates the 2-D weights inside a model's `blocks` lists "
                        "(the hidden layers), and this model has none. Use training.optimizer: adamw.")
    groups = parameter_groups(model, training.weight_decay, group_of, muon=hidden,
                              decay_embeddings=training.decay_embeddings)
    muon_groups = [group for group in groups if group.get("optimizer") == "muon"]
    adamw = build_optimizer([group for group in groups if group.get("optimizer") != "muon"],
                            training.learning_rate, betas, device)
    return MuonWithAdamW(muon_groups, adamw, training.learning_rate, training.muon_learning_rate,
                         training.muon_momentum, training.weight_decay)


def check_saved_optimizer(saved: str, configured: str) -> None:
    """Refuse to resume optimizer state saved by another `training.optimizer` (a checkpoint from
    before the key existed was saved by AdamW)."""
    if saved != configured:
        raise UserError(f"The checkpoint was trained with training.optimizer: {saved}, and this run sets "
                        f"training.optimizer: {configured}; its optimizer state cannot continue under another "
                        f"optimizer. Resume with training.optimizer: {saved}, or take its weights only with "
                        "training.load_only_model_state: true (with training.resume_from).")
