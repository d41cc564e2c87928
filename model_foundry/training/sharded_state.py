"""Checkpoints of a model trained by several processes, in the one-process format.

DDP (and one process) hold the whole model and optimizer state in every process (`ReplicatedState`);
FSDP2 gathers the full weights and optimizer state from the shards for every checkpoint
(`ShardedState`), so eval, predict, export and resuming on any number of processes read them
unchanged.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from model_foundry.checkpoint_files import WEIGHTS_FILE, load_weights, mismatch_error, read_weights


class ReplicatedState:
    """One process, or DDP: every process holds the whole model and optimizer state, read as they are."""

    def saved_model(self, model: nn.Module) -> nn.Module | None:
        """The module whose `save_pretrained` writes the checkpoint's weights."""
        return model

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        return optimizer.state_dict()

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        optimizer.load_state_dict(state)

    def load_weights(self, model: nn.Module, checkpoint: Path) -> None:
        load_weights(model, checkpoint)


class ShardedState:
    """FSDP2: the full weights and optimizer state are gathered from the shards for every checkpoint
    (a collective), in the one-process format, so eval, predict, export and resuming on any number
    of processes read them unchanged. Rank 0 keeps an unsharded CPU copy of the model, whose
    `save_pretrained` writes the weights exactly as one process does (tied weights once, configs)."""

    def __init__(self, host_copy: nn.Module | None):
        self.host_copy = host_copy.cpu() if host_copy is not None else None

    def saved_model(self, model: nn.Module) -> nn.Module | None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        resharded(model)
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if self.host_copy is not None:
            self.host_copy.load_state_dict(full)
        return self.host_copy

    def optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        resharded(model)
        full = get_optimizer_state_dict(model, optimizer,
                                        options=StateDictOptions(full_state_dict=True, cpu_offload=True))
        if not full:  # gathered on rank 0 only, which alone writes it
            return full
        names = parameter_names(model, optimizer)
        index = {name: i for i, name in enumerate(names)}
        groups, local = full["param_groups"], optimizer.state_dict()["param_groups"]
        return {"state": {index[name]: value for name, value in full["state"].items()},
                "param_groups": [{**group, "params": own["params"]} for group, own in zip(groups, local)]}

    def load_optimizer_state(self, model: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        names = parameter_names(resharded(model), optimizer)
        by_name = {"state": {names[i]: value for i, value in state["state"].items()},
                   "param_groups": [{**group, "params": [names[i] for i in group["params"]]}
                                    for group in state["param_groups"]]}
        set_optimizer_state_dict(model, optimizer, by_name, options=StateDictOptions(full_state_dict=True))

    def load_weights(self, model: nn.Module, checkpoint: Path) -> None:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

        weights = read_weights(checkpoint / WEIGHTS_FILE)
        names: dict[int, list[str]] = {}
        for name, param in resharded(model).named_parameters(remove_duplicate=False):
            names.setdefault(id(param), []).append(name)
        aliases = set()
        for tied in names.values():
            # A tied weight is stored once, under one of its names; the state-dict functions take it
            # under its first name (as named_parameters gives it) and only there.
            stored = next((name for name in tied if name in weights), tied[0])
            weights[tied[0]] = weights.pop(stored, None)
            aliases.update(tied[1:])
        loaded = set_model_state_dict(model, {k: v for k, v in weights.items() if v is not None},
                                      options=StateDictOptions(full_state_dict=True, strict=False))
        missing = set(loaded.missing_keys) - aliases
        if missing or loaded.unexpected_keys:
            raise mismatch_error(checkpoint, sorted(missing), sorted(loaded.unexpected_keys), relax_with=None)


def resharded(model: nn.Module) -> nn.Module:
    """`model` with every FSDP2 module's parameters sharded again. A forward without a backward (an
    evaluation) leaves the root's gathered, and the state-dict functions expect the sharded ones,
    the parameters the optimizer holds."""
    from torch.distributed.fsdp import FSDPModule

    for module in model.modules():
        if isinstance(module, FSDPModule):
            module.reshard()
    return model


def parameter_names(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[str]:
    """The name of each optimizer parameter, in the order `optimizer.state_dict()` numbers them."""
    names = {id(param): name for name, param in model.named_parameters()}
    return [names[id(param)] for group in optimizer.param_groups for param in group["params"]]
