"""Muon for the hidden layers' weight matrices, AdamW for every other parameter (`training.optimizer: muon`).

Muon (Keller Jordan, 2024; `torch.optim.Muon`) replaces each matrix's momentum by its nearest
semi-orthogonal matrix (five Newton-Schulz iterations), so every direction of the update gets the
same size. It is meant for the matrices of hidden layers only: embeddings and output layers see
one row per token, and their updates must stay per-row, so they keep AdamW (`hidden_matrices`).

Learning rates: Keller Jordan's convention (`adjust_lr_fn="original"`), where a matrix of r rows
and c columns steps by `rate x sqrt(max(1, r / c))` times an orthogonal matrix, and
`training.muon_learning_rate` (0.02, the modded-nanogpt value) is that rate's peak. The other
convention torch offers, "match_rms_adamw" (Moonshot's), rescales updates to AdamW's size so one
rate could serve both; it was not chosen because the well-tested Muon settings for small GPTs
are Keller Jordan's, stated in his rates. The schedule gives one base rate per step for
`learning_rate`; a Muon group's `lr_scale` carries the factor `muon_learning_rate /
learning_rate`, so warmup, decay, plateau reductions, per-part scales and the drop at unfreezing
shape both rates alike and metrics/train.csv logs the rate Muon really used (`lr_muon`).

Weight decay is torch's decoupled kind: each step a Muon matrix is multiplied by
`1 - rate x weight_decay` with Muon's rate, so the same `weight_decay` shrinks Muon matrices
`muon_learning_rate / learning_rate` times faster per step than AdamW's.
"""
from __future__ import annotations

import torch
from torch import nn

from model_foundry.models.lora import is_adapter_parameter

# Every architecture keeps its hidden layers in lists of this name: a backbone's, the hybrid's
# causal stack, ELECTRA's generator, and the layers of Hugging Face backbones (`hf_backbone`).
BLOCK_LISTS = "blocks"


def hidden_matrices(model: nn.Module) -> set[int]:
    """The ids of the parameters Muon updates: the 2-D weights inside the model's `blocks` lists.

    Everything outside the blocks is an input or output layer and stays with AdamW: token,
    position and segment embeddings, the language-model head (tied to the embedding or not), MLM,
    discriminator and task heads (their dense transforms included), poolers, and ELECTRA's
    projection into its generator. Inside the blocks, AdamW keeps biases and norms (not 2-D),
    anything shared with an nn.Embedding (a relative-position table), and LoRA's factors: a rank-r
    factor is not a hidden layer's matrix, and LoRA is tuned for AdamW (docs/training.md says more).
    """
    embedding = {id(p) for m in model.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    hidden: set[int] = set()
    for module_name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or module_name.rpartition(".")[2] != BLOCK_LISTS:
            continue
        for name, param in module.named_parameters(prefix=module_name):
            if param.dim() == 2 and id(param) not in embedding and not is_adapter_parameter(name):
                hidden.add(id(param))
    return hidden


class MuonWithAdamW:
    """A torch.optim.Muon over the groups marked `"optimizer": "muon"` and a torch.optim.AdamW over
    the rest, which the trainer, the schedules, freezing and checkpoints drive as one optimizer.

    `param_groups` lists both optimizers' groups (the live dicts, also after `load_state_dict`
    replaces them), so writing a group's `lr` or `lr_scale` reaches the optimizer that uses it.
    `state_dict()` holds both optimizers' own state dicts, so a resumed run continues with the
    same momentum buffers and Adam moments, bit for bit.
    """

    def __init__(self, muon_groups: list[dict], adamw: torch.optim.AdamW, learning_rate: float,
                 muon_learning_rate: float, momentum: float, weight_decay: float):
        for group in muon_groups:
            group["lr_scale"] = group.get("lr_scale", 1.0) * muon_learning_rate / learning_rate
            group.setdefault("lr", learning_rate * group["lr_scale"])
        self.muon = torch.optim.Muon(muon_groups, lr=muon_learning_rate, weight_decay=weight_decay,
                                     momentum=momentum, nesterov=True, adjust_lr_fn="original")
        self.adamw = adamw

    @property
    def param_groups(self) -> list[dict]:
        return [*self.muon.param_groups, *self.adamw.param_groups]

    def step(self) -> None:
        self.muon.step()
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.muon.load_state_dict(state["muon"])
        self.adamw.load_state_dict(state["adamw"])
