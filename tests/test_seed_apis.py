"""The nanoGPT-compatible API: the multi-mode facade, loss modifiers and schedulers."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from model_foundry.compat.nanogpt import GPT, GPTConfig, ModelMode
from model_foundry.training.loss_modifiers import create_loss_modifier_pipeline
from model_foundry.compat.schedulers import AdaptiveScheduler, TransferLearningScheduler, WarmupOnlyScheduler
from model_foundry.training.schedules import make_schedule

TINY = {"n_layer": 2, "n_head": 2, "n_embd": 16, "vocab_size": 40, "block_size": 16}


def test_facade_shapes_per_mode():
    idx = torch.randint(0, 40, (3, 10))
    lm = GPT(GPTConfig(**TINY))
    logits, loss = lm(idx, idx)
    assert logits.shape == (3, 10, 40) and loss.ndim == 0
    logits, loss = lm(idx)
    assert logits.shape == (3, 1, 40) and loss is None
    tagger = GPT(GPTConfig(**TINY, mode=ModelMode.TOKEN_CLASSIFIER, num_token_classes=5, attention_type="bidirectional"))
    logits, loss = tagger(idx, torch.randint(0, 5, (3, 10)))
    assert logits.shape == (3, 10, 5) and torch.isfinite(loss)
    scorer = GPT(GPTConfig(**TINY, mode="sequence_scorer", cls_token_id=1, attention_type="bidirectional"))
    logits, loss = scorer(idx, torch.rand(3))
    assert logits.shape == (3,) and bool(((logits > 0) & (logits < 1)).all()) and torch.isfinite(loss)


def test_classifier_modes_switch_to_bidirectional_with_a_warning():
    with pytest.warns(UserWarning, match="bidirectional"):
        config = GPTConfig(**TINY, mode=ModelMode.TOKEN_CLASSIFIER)
    assert config.attention_type == "bidirectional"
    assert GPT(config).model.config.attention_type == "bidirectional"


def test_facade_freezing_and_unfreeze_at_iteration():
    model = GPT(GPTConfig(**TINY, freeze_transformer=True, unfreeze_at_iteration=3, unfreeze_lr_multiplier=0.1))
    assert model.get_frozen_status() is True
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.0)
    assert model.maybe_unfreeze(2, optimizer) is False and model.get_frozen_status()
    assert model.maybe_unfreeze(3, optimizer) is True and not model.get_frozen_status()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)
    assert model.maybe_unfreeze(3, optimizer) is False  # once only: nothing frozen any more
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1)


def test_facade_unfreeze_point_alone_freezes_until_then_with_the_config_default():
    """The facade follows the config's rule: an unfreeze point without freeze_transformer freezes the
    transformer until then, and the LR drop defaults to transfer.unfreeze_lr_multiplier's default."""
    model = GPT(GPTConfig(**TINY, unfreeze_at_iteration=2))
    assert model.get_frozen_status() is True and isinstance(model.model.frozen_parts(), dict)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1.0)
    assert model.maybe_unfreeze(2, optimizer) is True and model.get_frozen_status() is False
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.1) and optimizer.param_groups[0]["lr_scale"] == 0.1
    assert GPT(GPTConfig(**TINY)).get_frozen_status() is False


def test_target_smoothing_equals_label_smoothed_cross_entropy():
    logits, targets = torch.randn(2, 5, 7), torch.randint(0, 7, (2, 5))
    targets[0, 0] = -100
    pipeline = create_loss_modifier_pipeline({"target_smoothing_enabled": True, "target_smoothing_factor": 0.2})
    expected = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), label_smoothing=0.2, ignore_index=-100)
    assert pipeline(logits, targets).item() == pytest.approx(expected.item(), rel=1e-5)
    assert create_loss_modifier_pipeline({})(logits, targets).item() == pytest.approx(
        F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100).item(), rel=1e-5)


def test_entropy_weighting_by_hand():
    # Token 1: uniform prediction (normalised entropy 1, weight 1 + a); token 2: near-certain (weight ~1).
    logits = torch.tensor([[[0.0, 0.0], [20.0, -20.0]]])
    targets = torch.tensor([[0, 1]])
    pipeline = create_loss_modifier_pipeline({"entropy_modifier_enabled": True, "entropy_modifier_weight": 1.0})
    ce = [math.log(2), 40.0]
    weights = [2.0, 1.0]
    scaled = [w / (sum(weights) / 2) for w in weights]
    expected = (scaled[0] * ce[0] + scaled[1] * ce[1]) / 2
    assert pipeline(logits, targets).item() == pytest.approx(expected, rel=1e-4)


def test_mask_ratio_weighting_by_hand():
    logits = torch.zeros(2, 4, 3)  # every token's loss is log 3
    logits[1, 0, 0] = 5.0  # row 2's only target is easy
    targets = torch.tensor([[0, 1, 2, -100], [0, -100, -100, -100]])
    pipeline = create_loss_modifier_pipeline({"mask_ratio_weight_enabled": True, "mask_ratio_weight_power": 1.0})
    ratios, mean_ratio = [0.75, 0.25], 0.5
    weights = [mean_ratio / ratios[0]] * 3 + [mean_ratio / ratios[1]]
    losses = [math.log(3)] * 3 + [-F.log_softmax(logits[1, 0], -1)[0].item()]
    scale = sum(weights) / 4
    expected = sum(w / scale * l for w, l in zip(weights, losses)) / 4
    assert pipeline(logits, targets).item() == pytest.approx(expected, rel=1e-5)


def test_pipeline_filters_modifiers_by_mode():
    pipeline = create_loss_modifier_pipeline({"entropy_modifier_enabled": True, "target_smoothing_enabled": True,
                                              "mask_ratio_weight_enabled": True})
    names = ["entropy_modifier", "target_smoothing", "mask_ratio_weight"]
    assert pipeline.get_enabled_modifier_names() == names
    assert pipeline.for_mode("token_classifier").get_enabled_modifier_names() == names
    assert pipeline.for_mode("sequence_scorer").get_enabled_modifier_names() == []
    assert create_loss_modifier_pipeline({"loss_modifiers_enabled": False, "entropy_modifier_enabled": True}) \
        .get_enabled_modifier_names() == []


def test_transfer_and_warmup_only_schedulers():
    scheduler = TransferLearningScheduler(base_lr=5e-5, head_lr_multiplier=10.0, feature_extraction_iters=100,
                                          unfreeze_lr_drop=0.1)
    assert scheduler.get_lr(0, is_frozen=True) == {"transformer": 0.0, "head": pytest.approx(5e-4)}
    assert scheduler.get_lr(100) == {"transformer": pytest.approx(5e-6), "head": pytest.approx(5e-4)}
    warm = WarmupOnlyScheduler(1.0, warmup_iters=4)
    assert [warm.get_lr(i) for i in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_the_schedulers_old_address_names_their_new_one():
    """They lived in model_foundry.training.schedules: a script importing them from there is told where they are."""
    with pytest.raises(ImportError, match=r"moved to model_foundry\.compat\.schedulers"):
        from model_foundry.training.schedules import TransferLearningScheduler  # noqa: F401
    from model_foundry.training.schedules import AdaptiveScheduler as trainers_plateau

    assert trainers_plateau is AdaptiveScheduler  # the plateau schedule stays where the trainer uses it


def test_adaptive_scheduler_reduces_on_plateau_and_restores():
    scheduler = AdaptiveScheduler(initial_lr=1e-4, patience=2, factor=0.5, min_lr=3e-5)
    reduced = [scheduler.step(loss) for loss in (1.0, 0.9, 0.95, 0.92, 0.91, 0.93, 0.99, 0.99, 0.99)]
    assert reduced == [False, False, False, True, False, True, False, False, False]
    assert scheduler.current_lr == pytest.approx(3e-5)  # floored at min_lr
    restored = make_schedule("plateau", 1e-4, 3e-5, 100, 0, None, plateau_patience=2)
    restored.load_state_dict(scheduler.state_dict())
    assert restored.lr_at(50) == scheduler.lr_at(50)


@pytest.mark.slow
def test_plateau_schedule_in_training_reduces_the_rate(make_config, tmp_path):
    import csv

    import model_foundry

    config = make_config(training={"max_steps": 30, "eval_interval": 2, "learning_rate": 1e-12, "warmup_steps": 0,
                                   "lr_schedule": "plateau", "plateau_patience": 1, "plateau_factor": 0.5,
                                   "min_lr": 1e-15, "log_interval": 1},
                         loss_modifiers={"target_smoothing_enabled": True})
    model_foundry.train(config)
    with open(tmp_path / "experiments" / "pretraining" / "tiny_gpt" / "metrics" / "train.csv") as handle:
        rates = [float(r["lr"]) for r in csv.DictReader(handle)]
    assert rates[0] == pytest.approx(1e-12) and rates[-1] < 1e-13
