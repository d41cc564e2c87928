"""Loss modifiers: reshape a token-level loss before it is averaged.

All three act on logits (B, T, V) and targets (B, T) with -100 = ignored, and return the scalar
loss the trainer minimises. The token losses are the cross-entropy by default, or a criterion's
own (`token_losses`, `weights` from `criterion.token_losses`, so class weights and the
bi-tempered loss keep working); with every modifier off the result is exactly the loss without
modifiers. The task decides when they apply (`Task.training_loss`).

- Target smoothing (`target_smoothing_factor` s): the target distribution is (1 - s) on the true
  token plus s spread uniformly over the vocabulary, so a token's loss is
  (1 - s) * CE + s * mean_v(-log p_v).
- Entropy weighting (`entropy_modifier_weight` a): a token's loss is weighted by
  1 + a * H(p) / log(V), where H(p) is the entropy of the model's prediction there (so 1 for a
  certain prediction, 1 + a for a uniform one): uncertain tokens count more. Weights are
  computed without gradient and rescaled to average 1 over the target tokens, so the loss keeps
  its scale.
- Mask-ratio weighting (`mask_ratio_weight_power` k): for masked LM, a sequence whose fraction
  of target tokens r_b is below the batch's mean fraction r gets its tokens up-weighted by
  (r / r_b)^k, so every sequence contributes about equally whatever its number of masked
  tokens; rescaled to average 1 over the target tokens. Without variation in r_b it changes nothing.

Which modifiers apply depends on the model mode: language models take all three, token
classifiers take all three, sequence scorers (one output per sequence) none.
"""
from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE_INDEX = -100
LANGUAGE_MODEL, TOKEN_CLASSIFIER, SEQUENCE_SCORER = "language_model", "token_classifier", "sequence_scorer"
MODES = (LANGUAGE_MODEL, TOKEN_CLASSIFIER, SEQUENCE_SCORER)


class LossModifier(ABC):
    name: str
    modes: frozenset[str] = frozenset({LANGUAGE_MODEL, TOKEN_CLASSIFIER})

    def token_losses(self, log_probs: Tensor, weights: Tensor, losses: Tensor) -> Tensor:
        """Per-token losses (each already times its weight) after this modifier; only smoothing changes them."""
        return losses

    def weights(self, log_probs: Tensor, targets: Tensor, valid: Tensor) -> Tensor | None:
        """Per-token weights (B, T) or None."""
        return None


class TargetSmoothing(LossModifier):
    name = "target_smoothing"

    def __init__(self, factor: float = 0.1):
        self.factor = factor

    def token_losses(self, log_probs: Tensor, weights: Tensor, losses: Tensor) -> Tensor:
        return (1 - self.factor) * losses - self.factor * log_probs.mean(dim=-1) * weights


class EntropyWeighting(LossModifier):
    name = "entropy_modifier"

    def __init__(self, weight: float = 1.0):
        self.weight = weight

    def weights(self, log_probs: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
        with torch.no_grad():
            entropy = -(log_probs.exp() * log_probs).sum(dim=-1)
            return 1.0 + self.weight * entropy / math.log(log_probs.size(-1))


class MaskRatioWeighting(LossModifier):
    name = "mask_ratio_weight"

    def __init__(self, power: float = 0.5):
        self.power = power

    def weights(self, log_probs: Tensor, targets: Tensor, valid: Tensor) -> Tensor:
        ratios = valid.float().mean(dim=1).clamp(min=1e-6)  # (B,)
        mean_ratio = valid.float().mean()
        return (mean_ratio / ratios).pow(self.power)[:, None].expand_as(targets).float()


class LossModifierPipeline:
    """The enabled modifiers; `for_mode` keeps those the mode supports."""

    def __init__(self, modifiers: list[LossModifier], mode: str | None = None):
        self.modifiers, self.mode = modifiers, mode

    def for_mode(self, mode: str) -> LossModifierPipeline:
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; modes are {', '.join(MODES)}")
        return LossModifierPipeline([m for m in self.modifiers if mode in m.modes], mode)

    def get_enabled_modifier_names(self) -> list[str]:
        return [m.name for m in self.modifiers]

    def __bool__(self) -> bool:
        return bool(self.modifiers)

    def __call__(self, logits: Tensor, targets: Tensor, token_losses: Tensor | None = None,
                 weights: Tensor | None = None) -> Tensor:
        """The modified mean loss over target tokens (0 when there are none).

        Without `token_losses` the loss of a token is its cross-entropy and every target weighs 1.
        A criterion's `token_losses` (already multiplied by their `weights`, such as class weights;
        both shaped like `targets`) replace them: the result is sum(losses * m) / sum(weights * m),
        m the modifiers' weights, which is the criterion's own loss when m = 1.
        """
        log_probs = F.log_softmax(logits.float(), dim=-1)
        valid = targets != IGNORE_INDEX
        if token_losses is None:
            safe_targets = targets.masked_fill(~valid, 0)
            token_losses = -log_probs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
            weights = valid.float()
        token_losses = token_losses * valid
        modifier_weights = torch.ones_like(token_losses)
        for modifier in self.modifiers:
            token_losses = modifier.token_losses(log_probs, weights, token_losses)
            extra = modifier.weights(log_probs, targets, valid)
            if extra is not None:
                modifier_weights = modifier_weights * extra
        modifier_weights = modifier_weights * valid
        return (token_losses * modifier_weights).sum() / (weights * modifier_weights).sum().clamp(min=1e-12)


def create_loss_modifier_pipeline(settings: dict) -> LossModifierPipeline:
    """The pipeline from a flat dict of `*_enabled` flags and their parameters (`loss_modifiers` config keys)."""
    if not settings.get("loss_modifiers_enabled", True):
        return LossModifierPipeline([])
    modifiers: list[LossModifier] = []
    if settings.get("entropy_modifier_enabled"):
        modifiers.append(EntropyWeighting(settings.get("entropy_modifier_weight", 1.0)))
    if settings.get("target_smoothing_enabled"):
        modifiers.append(TargetSmoothing(settings.get("target_smoothing_factor", 0.1)))
    if settings.get("mask_ratio_weight_enabled"):
        modifiers.append(MaskRatioWeighting(settings.get("mask_ratio_weight_power", 0.5)))
    return LossModifierPipeline(modifiers)
