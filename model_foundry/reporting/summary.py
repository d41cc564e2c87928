"""Model summary: a table of modules with output shapes, parameters and memory, and weight statistics.

Output shapes come from forward hooks on one real batch. The pass runs in eval mode without
gradients, so it changes nothing: dropout is off and BatchNorm-style running statistics are not
updated (torchinfo runs its pass in train mode and does update them).

Parameters are counted once: a tied weight (GPT's output head shares the token embedding) belongs
to the first module that registers it, and the module that shares it shows a count of 0 and
names the owner. So the table's totals equal `model.get_parameter_count()`.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, is_dataclass
from typing import Any

import torch
from torch import Tensor, nn

from model_foundry.reporting.runs import format_table

SUMMARY_COLUMNS = ("module", "type", "output shape", "params", "trainable", "memory")
STATISTICS_COLUMNS = ("parameter", "shape", "mean", "std", "min", "max", "zeros")
CONTAINER = "-"  # the output shape shown for ModuleList / ModuleDict, which are never called


@dataclass
class ModuleRow:
    """One module of the model; counts cover its whole subtree."""

    name: str  # dotted path inside the model; "" for the model itself
    type: str
    depth: int  # 0 for the model, 1 for its direct children, ...
    output_shape: str | None  # None when the forward pass never called the module; CONTAINER for lists
    calls: int  # how often the forward pass called it (a shared module more than once)
    params: int
    trainable_params: int
    memory_bytes: int  # parameters and buffers
    tied_to: str | None = None  # the module that owns a weight this one shares

    @property
    def trainable(self) -> str:
        """all / none / partial, or "-" for a module without parameters."""
        if self.params == 0:
            return "-"
        if self.trainable_params == self.params:
            return "all"
        return "none" if self.trainable_params == 0 else "partial"


def summarize(model: nn.Module, batch: dict[str, Any]) -> list[ModuleRow]:
    """Every module of `model` in registration order, with the output shape it produced on `batch`."""
    outputs = record_outputs(model, batch)
    sizes = subtree_sizes(model)
    tied = tied_owners(model)
    rows = []
    for name, module in model.named_modules():
        shape, calls = outputs.get(name, (CONTAINER if is_container(module) else None, 0))
        params, trainable, memory = sizes.get(name, (0, 0, 0))
        rows.append(ModuleRow(name=name, type=type(module).__name__, depth=name.count(".") + 1 if name else 0,
                              output_shape=shape, calls=calls, params=params, trainable_params=trainable,
                              memory_bytes=memory, tied_to=tied.get(name)))
    return rows


def is_container(module: nn.Module) -> bool:
    """ModuleList and ModuleDict only hold modules; they have no forward pass of their own."""
    return isinstance(module, (nn.ModuleList, nn.ModuleDict))


def record_outputs(model: nn.Module, batch: dict[str, Any]) -> dict[str, tuple[str, int]]:
    """{module name: (description of its first output, number of calls)} for one forward pass."""
    seen: dict[str, tuple[str, int]] = {}

    def hook_for(name: str):
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            shape, calls = seen.get(name, (describe_output(output), 0))
            seen[name] = (shape, calls + 1)
        return hook

    handles = [module.register_forward_hook(hook_for(name)) for name, module in model.named_modules()]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(**batch)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return seen


def describe_output(output: Any) -> str:
    """A tensor's shape as [8, 32, 64]; tuples and dataclasses (ModelOutput) list their tensors."""
    if isinstance(output, Tensor):
        return str(list(output.shape))
    if is_dataclass(output):
        named = {f.name: getattr(output, f.name) for f in fields(output)}
        return ", ".join(f"{key} {describe_output(value)}" for key, value in named.items() if value is not None)
    if isinstance(output, dict):
        return ", ".join(f"{key} {describe_output(value)}" for key, value in output.items() if value is not None)
    if isinstance(output, (tuple, list)):
        return "(" + ", ".join(describe_output(item) for item in output if item is not None) + ")"
    return type(output).__name__


def owner_module(tensor_name: str) -> str:
    """"backbone.blocks.0.attn.qkv.weight" -> "backbone.blocks.0.attn.qkv"."""
    return tensor_name.rpartition(".")[0]


def ancestors(module_name: str) -> list[str]:
    """The module and every module above it, up to the model itself ("")."""
    parts = module_name.split(".") if module_name else []
    return [".".join(parts[:i]) for i in range(len(parts), -1, -1)]


def subtree_sizes(model: nn.Module) -> dict[str, tuple[int, int, int]]:
    """{module name: (parameters, trainable parameters, bytes)} with every tensor counted once."""
    sizes: dict[str, list[int]] = {}
    # named_parameters / named_buffers skip repeated tensors, so a tied weight counts at its first owner.
    for name, param in model.named_parameters():
        for module_name in ancestors(owner_module(name)):
            size = sizes.setdefault(module_name, [0, 0, 0])
            size[0] += param.numel()
            size[1] += param.numel() if param.requires_grad else 0
            size[2] += param.numel() * param.element_size()
    for name, buffer in model.named_buffers():
        for module_name in ancestors(owner_module(name)):
            sizes.setdefault(module_name, [0, 0, 0])[2] += buffer.numel() * buffer.element_size()
    return {name: (size[0], size[1], size[2]) for name, size in sizes.items()}


def tied_owners(model: nn.Module) -> dict[str, str]:
    """{module name: owner} for modules whose parameters are all registered first by another module.

    The owner is the deepest module holding all of them: GPT's `lm_head` -> `backbone.token_embedding`,
    a view that reuses a whole stack -> that stack.
    """
    first_owner = {id(param): owner_module(name) for name, param in model.named_parameters()}
    tied = {}
    for module_name, module in model.named_modules():
        owners = [first_owner[id(param)] for param in module.parameters()]
        if owners and not any(is_within(owner, module_name) for owner in owners):
            tied[module_name] = common_ancestor(owners)
    return tied


def is_within(name: str, module_name: str) -> bool:
    return not module_name or name == module_name or name.startswith(module_name + ".")


def common_ancestor(module_names: list[str]) -> str:
    """The deepest module name every one of `module_names` lies within ("" for the model)."""
    paths = [name.split(".") for name in module_names]
    shared = []
    for parts in zip(*paths):
        if len(set(parts)) > 1:
            break
        shared.append(parts[0])
    return ".".join(shared)


def weight_statistics(model: nn.Module) -> list[dict[str, Any]]:
    """Per parameter tensor (tied ones once): name, shape, mean, std, min, max, fraction of exact zeros.

    The std is the population std (divisor n), so it is defined for one-element tensors too.
    Statistics are computed in float64, so they do not depend on the weights' dtype's rounding.
    """
    rows = []
    for name, param in model.named_parameters():
        values = param.detach().double()
        rows.append({"name": name, "shape": list(param.shape), "mean": values.mean().item(),
                     "std": values.std(correction=0).item(), "min": values.min().item(),
                     "max": values.max().item(), "zeros": (values == 0).double().mean().item()})
    return rows


def human_bytes(count: int) -> str:
    """1536 -> "1.5 KiB" (powers of 1024, read off the bit length so exact powers are not misrounded)."""
    units = ("B", "KiB", "MiB", "GiB", "TiB")
    exponent = min(max(count.bit_length() - 1, 0) // 10, len(units) - 1)
    if exponent == 0:
        return f"{count} B"
    return f"{count / 1024 ** exponent:.1f} {units[exponent]}"


def format_summary(rows: list[ModuleRow], depth: int = 3) -> str:
    """The module table down to `depth` levels of nesting, then the model's totals.

    `rows` are `summarize`'s, whose first row is the model itself.
    """
    shown = [row for row in rows if row.depth <= depth]
    table = [{"module": "  " * max(row.depth - 1, 0) + (row.name.rpartition(".")[2] or "(model)"),
              "type": row.type,
              "output shape": describe_calls(row),
              "params": f"{row.params:,}" + (f" (tied to {row.tied_to})" if row.tied_to is not None else ""),
              "trainable": row.trainable,
              "memory": human_bytes(row.memory_bytes)} for row in shown]
    model = rows[0]
    totals = (f"Total parameters: {model.params:,} (trainable {model.trainable_params:,}, "
              f"frozen {model.params - model.trainable_params:,})\n"
              f"Memory of parameters and buffers: {human_bytes(model.memory_bytes)}")
    return format_table(table, SUMMARY_COLUMNS) + "\n\n" + totals


def describe_calls(row: ModuleRow) -> str:
    if row.output_shape is None:
        return "not called"
    return row.output_shape + (f" (x{row.calls} calls)" if row.calls > 1 else "")


def format_weight_statistics(statistics: list[dict[str, Any]]) -> str:
    """`weight_statistics` as a table; zeros as a percentage."""
    table = [{"parameter": row["name"], "shape": str(row["shape"]), "mean": f"{row['mean']:+.4g}",
              "std": f"{row['std']:.4g}", "min": f"{row['min']:+.4g}", "max": f"{row['max']:+.4g}",
              "zeros": f"{100 * row['zeros']:.1f}%"} for row in statistics]
    return format_table(table, STATISTICS_COLUMNS)
