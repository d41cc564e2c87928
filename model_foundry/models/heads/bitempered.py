"""The bi-tempered logistic loss (Amid, Warmuth, Anil, Koren 2019, "Robust Bi-Tempered Logistic
Loss Based on Bregman Divergences"), for classification with noisy labels.

Cross-entropy is softmax followed by the log loss; both use exp and log. The bi-tempered loss
swaps them for tempered versions, with two temperatures:

- t1 < 1 in the loss makes it bounded, so a confidently "wrong" example (often a mislabelled
  one) cannot dominate the gradient;
- t2 > 1 in the softmax gives it a heavier tail, so probabilities decay polynomially rather
  than exponentially away from the decision boundary.

With t1 = t2 = 1 both become the ordinary ones and the loss is cross-entropy.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_foundry.errors import UserError
from model_foundry.models.heads.losses import (check_num_classes, class_weight_tensor, target_weights,
                                               weighted_mean)


def log_t(x: Tensor, t: float) -> Tensor:
    """Tempered logarithm (x^(1-t) - 1) / (1 - t); the natural log at t = 1."""
    if t == 1.0:
        return torch.log(x)
    return (x.pow(1.0 - t) - 1.0) / (1.0 - t)


def exp_t(x: Tensor, t: float) -> Tensor:
    """Tempered exponential [1 + (1 - t) x]_+ ^ (1 / (1 - t)), the inverse of log_t; exp at t = 1."""
    if t == 1.0:
        return torch.exp(x)
    return (1.0 + (1.0 - t) * x).clamp_min(0.0).pow(1.0 / (1.0 - t))


def tempered_softmax(logits: Tensor, t: float, num_iters: int = 5) -> Tensor:
    """exp_t(a - lambda(a)) over the last dimension, with lambda chosen so each row sums to 1.

    Unlike exp, exp_t(a - lambda) does not factor into exp_t(a) / constant, so lambda has no
    closed form. The paper's fixed point (t > 1) uses exp_t(x + y) = exp_t(x) exp_t(y / (1 + (1-t) x)):
    with a~ = a - max(a), sum_i exp_t(a~_i - lambda) = 1 holds exactly when
    Z = sum_i exp_t(a~_i * Z^(1-t)), and then lambda = -log_t(1 / Z). Iterating
    a~ <- (a - max(a)) * Z^(1-t) converges fast: 5 rounds normalise rows to ~1e-5 at t = 1.2.
    """
    if t == 1.0:
        return torch.softmax(logits, dim=-1)
    if t < 1.0:
        raise ValueError(f"tempered_softmax supports t >= 1 (heavy tails), got t={t}.")
    max_logit = logits.amax(dim=-1, keepdim=True)
    shifted = logits - max_logit
    scaled = shifted
    for _ in range(num_iters):
        partition = exp_t(scaled, t).sum(dim=-1, keepdim=True)
        scaled = shifted * partition.pow(1.0 - t)
    partition = exp_t(scaled, t).sum(dim=-1, keepdim=True)
    normaliser = -log_t(1.0 / partition, t) + max_logit
    return exp_t(logits - normaliser, t)


def tempered_divergence(targets: Tensor, probabilities: Tensor, t: float) -> Tensor:
    """The Bregman divergence of the tempered log between two distributions, summed over classes:

    sum_i  y_i (log_t y_i - log_t p_i) - (y_i^(2-t) - p_i^(2-t)) / (2 - t)

    It is the KL divergence at t = 1, i.e. cross-entropy minus the targets' entropy (which is 0
    for one-hot targets). For t < 1 it stays below 1 / (1 - t) + 1 / (2 - t) however small p gets.
    """
    # A floor of the smallest normal number keeps 0 * log_t(0) at 0 and gradients finite.
    tiny = torch.finfo(probabilities.dtype).tiny
    target_term = targets * log_t(targets.clamp_min(tiny), t)
    cross_term = targets * log_t(probabilities.clamp_min(tiny), t)
    power_term = (targets.pow(2.0 - t) - probabilities.pow(2.0 - t)) / (2.0 - t)
    return (target_term - cross_term - power_term).sum(dim=-1)


class BiTemperedCriterion(nn.Module):
    """Bi-tempered logistic loss for logits [..., C] against class ids [...] (-100 ignored).

    Label smoothing follows `F.cross_entropy`'s convention (targets (1 - s) * one_hot + s / C),
    and class weights weight each target's loss in the average as in `CrossEntropyCriterion`.
    """

    def __init__(self, t1: float = 0.8, t2: float = 1.2, label_smoothing: float = 0.0,
                 class_weights: Sequence[float] | None = None, num_iters: int = 5):
        super().__init__()
        if not (0.0 < t1 <= 1.0 and t2 >= 1.0):
            raise UserError(f"The bi-tempered loss needs 0 < task.bitempered_t1 <= 1 (bounded loss) and "
                            f"task.bitempered_t2 >= 1 (heavy tail); got t1={t1}, t2={t2}.")
        self.t1, self.t2, self.num_iters = t1, t2, num_iters
        self.label_smoothing = label_smoothing
        self.register_buffer("class_weights", class_weight_tensor(class_weights), persistent=False)

    def forward(self, logits: Tensor, targets: Tensor) -> Tensor:
        return weighted_mean(*self.token_losses(logits, targets))

    def token_losses(self, logits: Tensor, targets: Tensor) -> tuple[Tensor, Tensor]:
        """(each target's loss times its weight, the weights), shaped like `targets` (see CrossEntropyCriterion)."""
        num_classes = logits.shape[-1]
        flat_logits = logits.reshape(-1, num_classes).float()
        flat_targets = targets.reshape(-1).long()
        check_num_classes(self.class_weights, num_classes)
        weights = target_weights(flat_targets, self.class_weights)
        one_hot = F.one_hot(flat_targets.clamp_min(0), num_classes).float()  # ignored rows get weight 0 below
        distribution = one_hot * (1.0 - self.label_smoothing) + self.label_smoothing / num_classes
        probabilities = tempered_softmax(flat_logits, self.t2, self.num_iters)
        losses = tempered_divergence(distribution, probabilities, self.t1)
        return (losses * weights).view(targets.shape), weights.view(targets.shape)
