"""Criteria: task outputs and labels in, a scalar loss out, computed in float32.

Labels of -100 mark positions without a target (padding, sub-word continuations, unknown
labels) and are left out of the loss and of the average, so an all-ignored batch has loss 0.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_foundry.errors import UserError

IGNORE_INDEX = -100


def class_weight_tensor(class_weights: Sequence[float] | None) -> Tensor | None:
    """`task.class_weights` as a float32 tensor, checked: non-negative with at least one positive."""
    if class_weights is None:
        return None
    weights = torch.tensor([float(w) for w in class_weights], dtype=torch.float32)
    if weights.numel() == 0 or (weights < 0).any() or not (weights > 0).any():
        raise UserError(f"task.class_weights {list(class_weights)} must be one non-negative number per class, "
                        "at least one of them positive.")
    return weights


def check_num_classes(class_weights: Tensor | None, num_classes: int) -> None:
    if class_weights is not None and class_weights.numel() != num_classes:
        raise UserError(f"task.class_weights has {class_weights.numel()} values but the model predicts "
                        f"{num_classes} classes; give one weight per label, in label order.")


def target_weights(targets: Tensor, class_weights: Tensor | None) -> Tensor:
    """Each target's weight in the average: its class weight (or 1), and 0 when it is ignored."""
    valid = targets != IGNORE_INDEX
    if class_weights is None:
        return valid.float()
    return class_weights[targets.clamp_min(0)] * valid


def weighted_mean(losses: Tensor, weights: Tensor) -> Tensor:
    """sum(losses) / sum(weights); 0 rather than NaN when every weight is 0."""
    return losses.sum() / weights.sum().clamp_min(torch.finfo(weights.dtype).tiny)


class CrossEntropyCriterion(nn.Module):
    """Single-label classification: logits [..., C] against class ids [...].

    With class weights the average divides by the summed weights of the real targets, as
    `F.cross_entropy` does, so the loss scale does not depend on the batch's class mix.
    """

    def __init__(self, label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None):
        super().__init__()
        self.label_smoothing = label_smoothing
        # Not persistent: weights come from the config, and a checkpoint must load whatever they are.
        self.register_buffer("class_weights", class_weight_tensor(class_weights), persistent=False)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return weighted_mean(*self.token_losses(logits, targets))

    def token_losses(self, logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """(each target's loss times its weight, the weights), shaped like `targets`; the loss is
        their sums' ratio. Loss modifiers reweigh these terms."""
        flat_logits = logits.reshape(-1, logits.shape[-1]).float()
        flat_targets = targets.reshape(-1).long()
        check_num_classes(self.class_weights, flat_logits.shape[-1])
        losses = F.cross_entropy(flat_logits, flat_targets, weight=self.class_weights, ignore_index=IGNORE_INDEX,
                                 label_smoothing=self.label_smoothing, reduction="none")
        return losses.view(targets.shape), target_weights(flat_targets, self.class_weights).view(targets.shape)


class BinaryCrossEntropyCriterion(nn.Module):
    """Multi-label classification: logits [B, C] against 0/1 targets [B, C], one sigmoid per class.

    `class_weights` multiply each class's loss terms (positives and negatives alike; this is not
    `pos_weight`), and the mean runs over all non-ignored (example, class) entries. Label
    smoothing moves the targets towards 1/2: y * (1 - s) + s / 2.
    """

    def __init__(self, label_smoothing: float = 0.0, class_weights: Sequence[float] | None = None):
        super().__init__()
        self.label_smoothing = label_smoothing
        self.register_buffer("class_weights", class_weight_tensor(class_weights), persistent=False)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        if logits.shape != targets.shape:
            raise ValueError(f"bce needs logits and targets of one shape, got {tuple(logits.shape)} "
                             f"and {tuple(targets.shape)}.")
        check_num_classes(self.class_weights, logits.shape[-1])
        valid = targets != IGNORE_INDEX
        smoothed = targets.float().masked_fill(~valid, 0.0) * (1 - self.label_smoothing) + self.label_smoothing / 2
        losses = F.binary_cross_entropy_with_logits(logits.float(), smoothed, weight=self.class_weights,
                                                    reduction="none")
        return weighted_mean(losses.masked_fill(~valid, 0.0), valid.float())


class MSECriterion(nn.Module):
    """Regression / scoring: predictions [B] or [B, 1] against float targets [B].

    The trailing size-1 dimension is squeezed first: comparing [B, 1] with [B] would otherwise
    broadcast to [B, B] and silently train on every pair. Every target counts (-100 is a number here).
    """

    def forward(self, predictions: Tensor, targets: Tensor) -> Tensor:
        if predictions.dim() == targets.dim() + 1 and predictions.shape[-1] == 1:
            predictions = predictions.squeeze(-1)
        if predictions.shape != targets.shape:
            raise ValueError(f"mse needs one prediction per target, got predictions {tuple(predictions.shape)} "
                             f"and targets {tuple(targets.shape)}.")
        return F.mse_loss(predictions.float(), targets.float())
