"""Transfer learning controls (the `transfer` config section).

- Where a finetuning run starts: `init_from_checkpoint` names a run, an experiment or a checkpoint;
  its backbone weights are loaded, its language-model head is left behind, the task head is new.
- Surgery: `remove_n_layers` builds the backbone with fewer blocks (the checkpoint's top blocks
  are simply not loaded); `reinit_n_layers` re-draws the top blocks' weights after loading.
- Freezing: frozen parameters keep `requires_grad = False`, so they get no gradient and AdamW
  skips them entirely (no update, no weight decay). They stay in the optimizer's groups, so
  unfreezing mid-run needs no new optimizer: their Adam state starts fresh at the first step
  they train, and the head's state is untouched.
- Learning rates per part: each parameter gets a group label and an LR scale (head, backbone,
  or one per block with layer-wise decay); the schedule multiplies the scale, so the ratios hold.

Everything here is a function of the config and the step, so a resumed run freezes, unfreezes
and scales exactly as the uninterrupted one did.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import asdict
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from model_foundry.config.experiments import find_run
from model_foundry.config.schema import TransferSection
from model_foundry.errors import UserError
from model_foundry.models.base import INIT_STD, read_model_config
from model_foundry.models.hf_conversion import bert_config_from_hf, gpt_config_from_hf
from model_foundry.training.checkpoints import first_checkpoint
from model_foundry.training.weights import tied_parameter_names

HEAD = "head"
BACKBONE = "backbone"
HF_PREFIX = "hf:"
HF_CONFIG = "config.json"
# Hugging Face model_type -> (our architecture, config converter).
HF_CONFIG_CONVERTERS = {"gpt2": ("gpt", gpt_config_from_hf), "bert": ("bert", bert_config_from_hf)}


def resolve_init_checkpoint(spec: str) -> Path:
    """A checkpoint directory from a checkpoint path, a run directory (best, else last) or an experiment name;
    `hf:DIR` names a Hugging Face GPT-2 or BERT directory (config.json + model.safetensors)."""
    if spec.startswith(HF_PREFIX):
        return hf_directory(spec)
    path = Path(spec)
    if not path.exists():
        try:
            path = find_run(spec)
        except UserError:
            raise UserError(f"transfer.init_from_checkpoint = {spec!r}: no such checkpoint, run directory or "
                            "experiment name.") from None
    found = first_checkpoint([path, path / "checkpoints" / "best", path / "checkpoints" / "last"])
    if found is not None:
        return found
    raise UserError(f"transfer.init_from_checkpoint = {spec!r}: {path} holds no checkpoint (expected "
                    "model.safetensors and model_config.json, or a run directory with checkpoints/best or last).")


def hf_directory(spec: str) -> Path:
    path = Path(spec.removeprefix(HF_PREFIX))
    if not (path / HF_CONFIG).is_file():
        raise UserError(f"transfer.init_from_checkpoint = {spec!r}: {path} has no {HF_CONFIG}; hf: needs a "
                        "Hugging Face model directory (config.json + model.safetensors).")
    if not (path / "model.safetensors").is_file():
        hint = " (it holds pytorch_model.bin: convert it to safetensors first)" if (
            path / "pytorch_model.bin").is_file() else ""
        raise UserError(f"transfer.init_from_checkpoint = {spec!r}: {path} has no model.safetensors{hint}; "
                        "pickled weights are never loaded.")
    return path


def is_hf_directory(checkpoint: Path) -> bool:
    return (checkpoint / HF_CONFIG).is_file() and not (checkpoint / "model_config.json").is_file()


def checkpoint_model_config(checkpoint: Path) -> dict:
    """`model_config.json` of a checkpoint; for a Hugging Face directory, the same built from its config.json."""
    if not is_hf_directory(checkpoint):
        return read_model_config(checkpoint)
    hf_config = json.loads((checkpoint / HF_CONFIG).read_text(encoding="utf-8"))
    model_type = hf_config.get("model_type")
    if model_type not in HF_CONFIG_CONVERTERS:
        raise UserError(f"{checkpoint / HF_CONFIG} describes a {model_type!r} model; hf: imports into our "
                        f"backbones only {', '.join(HF_CONFIG_CONVERTERS)} (use model.architecture: hf for others).")
    architecture, convert = HF_CONFIG_CONVERTERS[model_type]
    return {"architecture": architecture, "config": asdict(convert(hf_config))}


def hf_state_dict_as_ours(state: dict, checkpoint: Path, config) -> dict:
    """The tensors of a Hugging Face GPT-2 / BERT directory under our names (`config` gives the depth)."""
    from model_foundry.models import hf_conversion

    if checkpoint_model_config(checkpoint)["architecture"] == "gpt":
        return hf_conversion.gpt_state_dict_from_hf_gpt2(state, config)
    return hf_conversion.bert_state_dict_from_hf_bert(state, config)


def load_backbone_weights(model: nn.Module, checkpoint: Path, strict: bool) -> None:
    """Copy the checkpoint's `backbone.*` tensors into `model` and say what was left out.

    Blocks beyond the model's depth (removed with `remove_n_layers`) and the pretraining head are
    expected leftovers. With `strict`, a backbone weight the checkpoint lacks is an error.
    """
    try:
        state = load_file(checkpoint / "model.safetensors")
    except Exception as exc:  # safetensors raises several types for damaged files
        raise UserError(f"Weights file {checkpoint / 'model.safetensors'} cannot be read ({exc}).") from None
    if is_hf_directory(checkpoint):
        state = hf_state_dict_as_ours(state, checkpoint, model.config)
    own = model.state_dict()
    backbone = {k: v for k, v in state.items() if k.startswith("backbone.") and k in own}
    mismatched = [k for k, v in backbone.items() if v.shape != own[k].shape]
    if mismatched:
        raise UserError(f"transfer.init_from_checkpoint {checkpoint}: tensors of other shapes than the model's, "
                        f"for example {mismatched[0]} {tuple(backbone[mismatched[0]].shape)} vs "
                        f"{tuple(own[mismatched[0]].shape)}; the backbone settings must match the checkpoint's "
                        "model_config.json (leave model.n_layer, n_embd, ... unset to take them from it).")
    model.load_state_dict(backbone, strict=False)
    tied = tied_parameter_names(model)
    missing = [k for k in own if k.startswith("backbone.") and k not in backbone and k not in tied]
    left_behind = sorted({k.split(".")[0] for k in state if not k.startswith("backbone.")})
    removed = [k for k in state if k.startswith("backbone.") and k not in own]
    if missing and strict:
        raise UserError(f"transfer.init_from_checkpoint {checkpoint} lacks backbone weights the model needs: "
                        f"{missing[:6]}{' ...' if len(missing) > 6 else ''}. Check the model settings, or set "
                        "transfer.strict: false to start those weights fresh.")
    report = f"Loaded {len(backbone)} backbone tensors from {checkpoint}"
    if left_behind:
        report += f"; left behind: {', '.join(left_behind)} (not part of the backbone)"
    if removed:
        report += f"; {len(removed)} tensors of removed blocks skipped"
    if missing:
        report += f"; {len(missing)} backbone tensors not in the checkpoint start fresh: {missing[:6]}"
    print(report + ".", file=sys.stderr)


def reinit_last_layers(model: nn.Module, n: int) -> None:
    """Re-draw the weights of the last `n` blocks (BERT finetuning folklore: the top layers are the
    most pretraining-specific)."""
    blocks = model.backbone.blocks
    if n > len(blocks):
        raise UserError(f"transfer.reinit_n_layers is {n}, but the backbone has only {len(blocks)} blocks.")
    for block in list(blocks)[len(blocks) - n:]:
        for module in block.modules():
            reinit_own_parameters(module)


@torch.no_grad()
def reinit_own_parameters(module: nn.Module) -> None:
    """GPT-2/BERT initialisation for any layer type, ours or Hugging Face's (Conv1D, RMSNorm, ...):
    norms back to weight 1 and bias 0, other matrices ~ N(0, 0.02), biases 0."""
    is_norm = "norm" in type(module).__name__.lower()
    for name, param in module.named_parameters(recurse=False):
        if name == "bias" or (is_norm and name != "weight"):
            param.zero_()
        elif is_norm:
            param.fill_(1.0)
        elif param.dim() >= 2:
            nn.init.normal_(param, mean=0.0, std=INIT_STD)
        elif hasattr(module, "reset_parameters"):
            module.reset_parameters()


def part_and_depth(name: str, num_blocks: int) -> tuple[str, int | None]:
    """(head | backbone, block index) of a parameter; embeddings get -1, the final norm the top block."""
    if not name.startswith("backbone."):
        return HEAD, None
    parts = name.split(".")
    if parts[1] == "blocks":
        return BACKBONE, int(parts[2])
    if "embedding" in parts[1]:
        return BACKBONE, -1
    return BACKBONE, num_blocks - 1


class TransferPlan:
    """Which parameters are frozen until when, and each parameter's LR group and scale."""

    def __init__(self, settings: TransferSection, model: nn.Module, steps_per_epoch: float):
        self.settings, self.model = settings, model
        self.num_blocks = len(model.backbone.blocks)
        self.frozen_at_start = self.initially_frozen()
        self.unfreeze_step = self.resolve_unfreeze_step(steps_per_epoch)

    def initially_frozen(self) -> list[nn.Parameter]:
        s = self.settings
        bad = [i for i in s.freeze_layer_indices if not -self.num_blocks <= i < self.num_blocks]
        if bad or s.freeze_n_layers > self.num_blocks:
            raise UserError(f"transfer.freeze_n_layers / freeze_layer_indices name blocks the backbone does not have "
                            f"(it has {self.num_blocks}: indices 0 to {self.num_blocks - 1}, or negative from the end).")
        blocks = set(range(s.freeze_n_layers)) | {i % self.num_blocks for i in s.freeze_layer_indices}
        whole = s.freeze_transformer or (s.freeze_epochs is not None and not (blocks or s.freeze_embeddings))
        frozen = []
        for name, param in self.model.named_parameters():
            part, depth = part_and_depth(name, self.num_blocks)
            if part == BACKBONE and (whole or depth in blocks or (depth == -1 and s.freeze_embeddings)):
                frozen.append(param)
        return frozen

    def resolve_unfreeze_step(self, steps_per_epoch: float) -> int | None:
        s = self.settings
        if s.unfreeze_at_iteration is not None:
            return s.unfreeze_at_iteration
        if s.freeze_epochs is not None:
            return max(1, math.ceil(s.freeze_epochs * steps_per_epoch))
        return None

    def group_of(self, name: str) -> tuple[str | None, float, str]:
        """(group label, LR scale, part) for a parameter. Plain runs keep one unlabelled group."""
        s = self.settings
        part, depth = part_and_depth(name, self.num_blocks)
        if part == HEAD:
            return (HEAD if self.is_transfer else None), s.head_lr_mult, HEAD
        scale = s.backbone_lr_mult
        if s.layer_lr_decay == 1.0:
            return (BACKBONE if self.is_transfer else None), scale, BACKBONE
        exponent = self.num_blocks if depth == -1 else self.num_blocks - 1 - depth
        label = "embeddings" if depth == -1 else f"block{depth}"
        return label, scale * s.layer_lr_decay ** exponent, BACKBONE

    @property
    def is_transfer(self) -> bool:
        """Whether head and backbone are told apart (a task head on a backbone, or per-part settings)."""
        s = self.settings
        return (hasattr(self.model, "head_config") or s.head_lr_mult != 1.0 or s.backbone_lr_mult != 1.0
                or s.layer_lr_decay != 1.0)

    def apply(self, step: int, optimizer: torch.optim.Optimizer) -> bool:
        """Freeze or unfreeze for `step` (before its update); True exactly when unfreezing happens now."""
        if not self.frozen_at_start:
            return False
        frozen = self.unfreeze_step is None or step < self.unfreeze_step
        for param in self.frozen_at_start:
            param.requires_grad_(not frozen)
        if step != self.unfreeze_step:
            return False
        for group in optimizer.param_groups:
            if group.get("part") == BACKBONE:
                group["lr_scale"] *= self.settings.unfreeze_lr_multiplier
        return True
