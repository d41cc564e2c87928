"""Poolers, heads and criteria of the task models: hand-computed values, padding on either side,
reference losses from torch.nn.functional, and the bi-tempered loss's defining properties."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from model_foundry.errors import UserError
from model_foundry.models.heads import CRITERIA, HEADS, POOLERS, make_criterion, make_head, make_pooler
from model_foundry.models.heads.bitempered import tempered_softmax

HUGE = 1e30

# Two sequences, hidden size 2. Row 0 has 3 real tokens, row 1 has 2; T = 4.
REAL = [
    [[1.0, -2.0], [3.0, -4.0], [-5.0, -1.0]],
    [[2.0, -3.0], [-6.0, -7.0]],
]


def padded(side: str, pad_value: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """REAL padded to length 4 on `side` with `pad_value`: (hidden [2, 4, 2], mask [2, 4])."""
    hidden = torch.full((2, 4, 2), pad_value)
    mask = torch.zeros(2, 4, dtype=torch.long)
    for row, tokens in enumerate(REAL):
        start = 0 if side == "right" else 4 - len(tokens)
        hidden[row, start:start + len(tokens)] = torch.tensor(tokens)
        mask[row, start:start + len(tokens)] = 1
    return hidden, mask


EXPECTED = {
    "cls": [[1.0, -2.0], [2.0, -3.0]],
    "first": [[1.0, -2.0], [2.0, -3.0]],
    "last": [[-5.0, -1.0], [-6.0, -7.0]],
    "mean": [[-1 / 3, -7 / 3], [-2.0, -5.0]],
    "max": [[3.0, -1.0], [2.0, -3.0]],
}


@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_parameter_free_poolers_match_hand_computed_values(name, side):
    pooler = make_pooler(name, hidden_size=2)
    for pad_value in (0.0, HUGE, -HUGE):
        hidden, mask = padded(side, pad_value)
        assert torch.equal(pooler(hidden, mask), torch.tensor(EXPECTED[name])), (pad_value, side)
        assert torch.equal(pooler(hidden, mask.bool()), torch.tensor(EXPECTED[name]))


def test_poolers_without_mask_use_every_position():
    hidden = torch.tensor([[[1.0, 5.0], [3.0, -1.0]]])
    assert torch.equal(make_pooler("cls", 2)(hidden, None), torch.tensor([[1.0, 5.0]]))
    assert torch.equal(make_pooler("last", 2)(hidden, None), torch.tensor([[3.0, -1.0]]))
    assert torch.equal(make_pooler("mean", 2)(hidden, None), torch.tensor([[2.0, 2.0]]))
    assert torch.equal(make_pooler("max", 2)(hidden, None), torch.tensor([[3.0, 5.0]]))


def test_last_pooler_never_pools_a_pad_that_equals_the_last_real_token():
    """A decoder with pad == eos: the pad hidden states look like real ones but must be skipped."""
    hidden = torch.tensor([[[1.0], [2.0], [9.0], [9.0]]])
    mask = torch.tensor([[1, 1, 0, 0]])
    assert make_pooler("last", 1)(hidden, mask).item() == 2.0


@pytest.mark.parametrize("side", ["left", "right"])
def test_attention_pooler_weights_cover_only_real_tokens_and_match_a_manual_softmax(side):
    torch.manual_seed(0)
    pooler = make_pooler("attention", hidden_size=2)
    hidden, mask = padded(side, HUGE)
    weights = pooler.attention_weights(hidden, mask)
    assert torch.allclose(weights.sum(dim=1), torch.ones(2))
    assert torch.all(weights[mask == 0] == 0)
    for row, tokens in enumerate(REAL):
        real = torch.tensor(tokens)
        scores = pooler.V(torch.tanh(pooler.W(real))).squeeze(-1)
        expected = torch.softmax(scores, dim=0) @ real
        assert torch.allclose(pooler(hidden, mask)[row], expected, atol=1e-6)


def test_attention_pooler_gives_pads_zero_weight_even_when_real_scores_are_very_negative():
    pooler = make_pooler("attention", hidden_size=1)
    with torch.no_grad():
        pooler.W.weight.fill_(1.0), pooler.W.bias.zero_()
        pooler.V.weight.fill_(1.0), pooler.V.bias.fill_(-1e6)  # every score is about -1e6
    hidden = torch.tensor([[[-3.0], [7.0], [0.0]]])
    mask = torch.tensor([[1, 1, 0]])
    assert pooler.attention_weights(hidden, mask)[0, 2].item() == 0.0


@pytest.mark.parametrize("side", ["left", "right"])
def test_gem_pooler_with_p_one_is_the_mean_of_clamped_values(side):
    pooler = make_pooler("gem", hidden_size=2)
    assert pooler.p.item() == 3.0
    with torch.no_grad():
        pooler.p.fill_(1.0)
    hidden, mask = padded(side, HUGE)
    expected = [[(1 + 3 + 1e-6) / 3, 1e-6], [(2 + 1e-6) / 2, 1e-6]]
    assert torch.allclose(pooler(hidden, mask), torch.tensor(expected), rtol=1e-5, atol=0)


@pytest.mark.parametrize("side", ["left", "right"])
def test_gem_pooler_matches_the_formula_and_huge_pads_leave_p_gradient_finite(side):
    pooler = make_pooler("gem", hidden_size=2)
    hidden, mask = padded(side, HUGE)
    pooled = pooler(hidden, mask)
    row0 = torch.tensor(REAL[0]).clamp(min=1e-6)
    assert torch.allclose(pooled[0], row0.pow(3).mean(dim=0).pow(1 / 3), rtol=1e-5)
    pooled.sum().backward()
    assert torch.isfinite(pooler.p.grad)


@pytest.mark.parametrize("name", ["linear", "sequential"])
def test_heads_map_the_last_dimension_of_pooled_and_per_token_states(name):
    head = make_head(name, hidden_size=8, num_outputs=3, dropout=0.1)
    assert head(torch.randn(5, 8)).shape == (5, 3)
    assert head(torch.randn(2, 7, 8)).shape == (2, 7, 3)


def test_head_layer_order_and_dropout():
    linear = make_head("linear", 8, 3, dropout=0.25)
    assert [type(m) for m in linear] == [nn.Dropout, nn.Linear]
    sequential = make_head("sequential", 8, 3, dropout=0.25)
    assert [type(m) for m in sequential] == [nn.Dropout, nn.Linear, nn.GELU, nn.Dropout, nn.Linear]
    assert (sequential.dense.in_features, sequential.dense.out_features) == (8, 8)
    assert (sequential.out_proj.in_features, sequential.out_proj.out_features) == (8, 3)
    assert all(m.p == 0.25 for m in sequential if isinstance(m, nn.Dropout))
    # In eval mode the head is exactly its layers composed.
    x = torch.randn(4, 8)
    expected = sequential.out_proj(F.gelu(sequential.dense(x)))
    assert torch.allclose(sequential.eval()(x), expected)


LOGITS = torch.tensor([[2.0, -1.0, 0.5], [0.1, 0.2, 3.0], [-1.0, 4.0, 0.0], [1.0, 1.0, 1.0]])
CLASSES = torch.tensor([0, 2, -100, 1])
WEIGHTS = [0.5, 2.0, 1.5]


@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("weights", [None, WEIGHTS])
def test_cross_entropy_matches_torch_with_smoothing_weights_and_ignored_targets(smoothing, weights):
    criterion = make_criterion("cross_entropy", label_smoothing=smoothing, class_weights=weights)
    reference = F.cross_entropy(LOGITS, CLASSES, label_smoothing=smoothing, ignore_index=-100,
                                weight=None if weights is None else torch.tensor(WEIGHTS))
    assert torch.allclose(criterion(LOGITS, CLASSES), reference, atol=1e-6)


def test_cross_entropy_on_token_logits_and_an_all_ignored_batch():
    criterion = make_criterion("cross_entropy")
    token_logits, token_labels = LOGITS.reshape(2, 2, 3), CLASSES.reshape(2, 2)
    assert torch.allclose(criterion(token_logits, token_labels), F.cross_entropy(LOGITS, CLASSES))
    ignored = torch.full((2, 2), -100)
    loss = criterion(token_logits.bfloat16().requires_grad_(), ignored)
    assert loss.item() == 0.0 and loss.dtype == torch.float32


def test_cross_entropy_rejects_class_weights_of_the_wrong_length():
    with pytest.raises(UserError, match=r"task.class_weights has 2 values .* 3 classes"):
        make_criterion("cross_entropy", class_weights=[1.0, 2.0])(LOGITS, CLASSES)
    with pytest.raises(UserError, match="non-negative"):
        make_criterion("cross_entropy", class_weights=[1.0, -2.0, 1.0])


def test_bce_matches_torch_with_weights_smoothing_and_ignored_entries():
    targets = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    weight = torch.tensor(WEIGHTS)
    reference = F.binary_cross_entropy_with_logits(LOGITS, targets, weight=weight)
    assert torch.allclose(make_criterion("bce", class_weights=WEIGHTS)(LOGITS, targets), reference)
    smoothed = F.binary_cross_entropy_with_logits(LOGITS, targets * 0.8 + 0.1)
    assert torch.allclose(make_criterion("bce", label_smoothing=0.2)(LOGITS, targets), smoothed)
    partly_ignored = targets.clone()
    partly_ignored[0, 1] = -100
    keep = torch.ones_like(targets, dtype=torch.bool)
    keep[0, 1] = False
    expected = F.binary_cross_entropy_with_logits(LOGITS[keep], targets[keep])
    assert torch.allclose(make_criterion("bce")(LOGITS, partly_ignored), expected)


def test_mse_squeezes_a_trailing_one_instead_of_broadcasting():
    predictions, targets = torch.tensor([[0.2], [0.9], [0.5]]), torch.tensor([0.0, 1.0, 0.5])
    expected = torch.tensor((0.04 + 0.01 + 0.0) / 3)
    assert torch.allclose(make_criterion("mse")(predictions, targets), expected)
    assert torch.allclose(make_criterion("mse")(predictions.squeeze(-1), targets), expected)
    with pytest.raises(ValueError, match="one prediction per target"):
        make_criterion("mse")(torch.zeros(3, 2), targets)


def test_tempered_softmax_normalises_rows_and_is_softmax_at_t_one():
    torch.manual_seed(0)
    logits = torch.randn(64, 5, dtype=torch.float64) * 4
    assert torch.allclose(tempered_softmax(logits, 1.2).sum(-1), torch.ones(64, dtype=torch.float64), atol=1e-4)
    assert torch.allclose(tempered_softmax(logits, 1.5, num_iters=30).sum(-1),
                          torch.ones(64, dtype=torch.float64), atol=1e-10)
    assert torch.allclose(tempered_softmax(logits, 1.0), torch.softmax(logits, -1))


def test_bitempered_with_unit_temperatures_is_cross_entropy():
    criterion = make_criterion("bitempered", t1=1.0, t2=1.0)
    assert torch.allclose(criterion(LOGITS, CLASSES), F.cross_entropy(LOGITS, CLASSES), atol=1e-5)
    weighted = make_criterion("bitempered", t1=1.0, t2=1.0, class_weights=WEIGHTS)
    reference = F.cross_entropy(LOGITS, CLASSES, weight=torch.tensor(WEIGHTS))
    assert torch.allclose(weighted(LOGITS, CLASSES), reference, atol=1e-5)


def test_bitempered_with_smoothing_at_unit_temperatures_is_cross_entropy_minus_target_entropy():
    s, num_classes = 0.3, 3
    smoothed = make_criterion("bitempered", t1=1.0, t2=1.0, label_smoothing=s)
    target = torch.full((num_classes,), s / num_classes)
    target[0] += 1 - s
    entropy = -(target * target.log()).sum()
    reference = F.cross_entropy(LOGITS, CLASSES, label_smoothing=s) - entropy
    assert torch.allclose(smoothed(LOGITS, CLASSES), reference, atol=1e-5)


def test_bitempered_loss_stays_bounded_where_cross_entropy_grows():
    t1 = 0.8
    bitempered, cross_entropy = make_criterion("bitempered", t1=t1, t2=1.2), make_criterion("cross_entropy")
    target = torch.tensor([0])
    losses = []
    for margin in (10.0, 1e3, 1e5):
        logits = torch.tensor([[-margin, 0.0, 0.0]], requires_grad=True)
        loss = bitempered(logits, target)
        loss.backward()
        assert torch.isfinite(logits.grad).all()
        assert loss.item() <= 1 / (1 - t1) + 1 / (2 - t1)
        assert cross_entropy(logits, target).item() >= margin
        losses.append(loss.item())
    assert losses[2] - losses[1] < 0.1  # saturated: 100x more wrong costs almost nothing more


def test_bitempered_ignores_targets_and_its_gradients_are_finite():
    logits = LOGITS.clone().requires_grad_()
    criterion = make_criterion("bitempered", label_smoothing=0.1)
    loss = criterion(logits, CLASSES)
    loss.backward()
    assert torch.isfinite(logits.grad).all() and torch.all(logits.grad[2] == 0)
    keep = CLASSES != -100
    assert torch.allclose(loss, criterion(LOGITS[keep], CLASSES[keep]))
    assert criterion(LOGITS, torch.full((4,), -100)).item() == 0.0


@pytest.mark.parametrize(("factory", "key", "registry", "typo", "hint"), [
    (lambda n: make_pooler(n, 4), "task.pooler", POOLERS, "maen", "'mean'"),
    (lambda n: make_head(n, 4, 2), "task.head", HEADS, "liner", "'linear'"),
    (lambda n: make_criterion(n), "task.criterion", CRITERIA, "cross_entopy", "'cross_entropy'"),
])
def test_unknown_names_raise_user_errors_naming_the_key_and_valid_names(factory, key, registry, typo, hint):
    with pytest.raises(UserError) as caught:
        factory(typo)
    message = str(caught.value)
    assert key in message and f"did you mean {hint}" in message
    assert all(name in message for name in registry)


def test_options_a_criterion_would_ignore_are_user_errors():
    with pytest.raises(UserError, match=r"task.label_smoothing = 0.1 has no effect with task.criterion 'mse'"):
        make_criterion("mse", label_smoothing=0.1)
    with pytest.raises(UserError, match="task.bitempered_t1 .* applies to bitempered"):
        make_criterion("cross_entropy", t1=0.5)
    with pytest.raises(UserError, match="task.bitempered_t2 >= 1"):
        make_criterion("bitempered", t2=0.5)
    with pytest.raises(UserError, match=r"task.label_smoothing must be in \[0, 1\)"):
        make_criterion("cross_entropy", label_smoothing=1.0)
