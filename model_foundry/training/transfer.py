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

import sys
from pathlib import Path

import torch
from torch import nn

from model_foundry.checkpoint_files import WEIGHTS_FILE, load_state, read_weights
from model_foundry.config.schema import TransferSection
from model_foundry.errors import UserError
from model_foundry.models.base import INIT_STD
from model_foundry.models.hf_formats import hf_state_dict_as_ours, is_hf_directory
from model_foundry.training.unfreezing import Unfreezing, freezes_whole_backbone, unfreeze_step

HEAD = "head"
BACKBONE = "backbone"


def load_backbone_weights(model: nn.Module, checkpoint: Path, strict: bool) -> None:
    """Copy the checkpoint's `backbone.*` tensors into `model` and say what was left out.

    Blocks beyond the model's depth (removed with `remove_n_layers`) and the pretraining head are
    expected leftovers. With `strict`, a backbone weight the checkpoint lacks is an error.
    """
    state = read_weights(checkpoint / WEIGHTS_FILE)
    if is_hf_directory(checkpoint):
        state = hf_state_dict_as_ours(state, checkpoint, model.config)
    report = load_state(model, state, checkpoint, strict=strict, prefix="backbone.", relax_with="transfer.strict")
    left_behind = sorted({k.split(".")[0] for k in report.left_out if not k.startswith("backbone.")})
    removed = [k for k in report.left_out if k.startswith("backbone.")]
    message = f"Loaded {report.loaded} backbone tensors from {checkpoint}"
    if left_behind:
        message += f"; left behind: {', '.join(left_behind)} (not part of the backbone)"
    if removed:
        message += f"; {len(removed)} tensors of removed blocks skipped"
    if report.missing:
        message += f"; {len(report.missing)} backbone tensors not in the checkpoint start fresh: {report.missing[:6]}"
    print(message + ".", file=sys.stderr)


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
    """Which parameters are frozen until when, and each parameter's LR group and scale.

    Unfreezing follows the one rule in `unfreezing.Unfreezing`, the nanoGPT-compatible API's too.
    """

    def __init__(self, settings: TransferSection, model: nn.Module, steps_per_epoch: float):
        self.settings, self.model = settings, model
        self.num_blocks = len(model.backbone.blocks)
        self.unfreezing = Unfreezing(unfreeze_step(settings, steps_per_epoch), settings.unfreeze_lr_multiplier)
        self.frozen_at_start = self.initially_frozen()

    @property
    def unfreeze_step(self) -> int | None:
        return self.unfreezing.step

    def initially_frozen(self) -> list[nn.Parameter]:
        s = self.settings
        bad = [i for i in s.freeze_layer_indices if not -self.num_blocks <= i < self.num_blocks]
        if bad or s.freeze_n_layers > self.num_blocks:
            raise UserError(f"transfer.freeze_n_layers / freeze_layer_indices name blocks the backbone does not have "
                            f"(it has {self.num_blocks}: indices 0 to {self.num_blocks - 1}, or negative from the end).")
        blocks = set(range(s.freeze_n_layers)) | {i % self.num_blocks for i in s.freeze_layer_indices}
        whole = freezes_whole_backbone(s.freeze_transformer, partial=bool(blocks) or s.freeze_embeddings,
                                       unfreeze_step_given=self.unfreeze_step is not None)
        frozen = []
        for name, param in self.model.named_parameters():
            part, depth = part_and_depth(name, self.num_blocks)
            if part == BACKBONE and (whole or depth in blocks or (depth == -1 and s.freeze_embeddings)):
                frozen.append(param)
        return frozen

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
        frozen = self.unfreezing.is_frozen(step)
        for param in self.frozen_at_start:
            param.requires_grad_(not frozen)
        if not self.unfreezing.happens_at(step):
            return False
        self.unfreezing.drop_rates(group for group in optimizer.param_groups if group.get("part") == BACKBONE)
        return True
