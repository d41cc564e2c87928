"""`training.compile`: the model's forward and backward through `torch.compile`, in a chosen mode.

Off by default: compiling costs seconds to tens of seconds at the start of a run (and again for
each new input shape), which short runs never earn back. The modes are torch's: `default` fuses
operations; `reduce-overhead` also captures each step as CUDA graphs and replays them, so a step
costs a few launches instead of hundreds, which is where small models on a GPU spend their time
(benchmarks/gpu/compile_modes.py); `max-autotune` adds a search over matmul kernels.
"""
from __future__ import annotations

import torch
from torch import nn

# The modes that replay CUDA graphs: a replay overwrites the previous replay's outputs.
CUDA_GRAPH_MODES = ("reduce-overhead", "max-autotune")


def compiled(module: nn.Module, mode: str) -> nn.Module:
    """`module` through `torch.compile` in `mode` (`default`: torch's default)."""
    return torch.compile(module, mode=None if mode == "default" else mode)


def replays_cuda_graphs(enabled: bool, mode: str) -> bool:
    """Whether training (compiled when `enabled`) replays CUDA graphs, so that each optimizer step
    must be marked as the start of a new replay generation."""
    return enabled and mode in CUDA_GRAPH_MODES
