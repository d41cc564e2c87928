"""Transfer controls as units: which parameters freeze, when they unfreeze, their LR groups, weight loading."""
from __future__ import annotations

import pytest
import torch

from model_foundry.config.schema import TransferSection
from model_foundry.errors import UserError
from model_foundry.models import TaskHeadConfig, TaskModel, create_config
from model_foundry.training.optimizer import build_optimizer, parameter_groups
from model_foundry.training.transfer import TransferPlan, load_backbone_weights


def task_model(n_layer: int = 3) -> TaskModel:
    _, config = create_config("bert", vocab_size=30, n_layer=n_layer, n_head=2, n_embd=16, block_size=16)
    head = TaskHeadConfig(task="sequence_classification", num_outputs=2, labels=["a", "b"], pooler="cls")
    return TaskModel("bert", config, head)


def trainable_blocks(model: TaskModel) -> list[bool]:
    return [all(p.requires_grad for p in block.parameters()) for block in model.backbone.blocks]


def plan_for(model, steps_per_epoch: float = 10.0, **settings):
    plan = TransferPlan(TransferSection(**settings), model, steps_per_epoch)
    optimizer = build_optimizer(parameter_groups(model, 0.1, plan.group_of), 1e-3, (0.9, 0.99), torch.device("cpu"))
    return plan, optimizer


def test_freeze_first_layers_indices_and_embeddings():
    model = task_model()
    plan, optimizer = plan_for(model, freeze_n_layers=1, freeze_layer_indices=[-1], freeze_embeddings=True)
    plan.apply(0, optimizer)
    assert trainable_blocks(model) == [False, True, False]
    assert not model.backbone.token_embedding.weight.requires_grad
    assert all(p.requires_grad for p in model.head.parameters())
    status = model.frozen_parts()
    assert status["frozen_blocks"] == [0, 2] and status["embeddings_frozen"] and not status["head_frozen"]
    assert model.get_frozen_status() is False and status["backbone_frozen"] is False  # block 1 still trains


def test_freeze_epochs_freezes_the_backbone_until_its_step():
    model = task_model()
    plan, optimizer = plan_for(model, steps_per_epoch=7.5, freeze_epochs=2, unfreeze_lr_multiplier=0.5)
    assert plan.unfreeze_step == 15
    assert plan.apply(14, optimizer) is False and model.get_frozen_status() is True
    scales = {g["name"]: g["lr_scale"] for g in optimizer.param_groups}
    assert plan.apply(15, optimizer) is True and model.get_frozen_status() is False
    after = {g["name"]: g["lr_scale"] for g in optimizer.param_groups}
    assert after["backbone_decay"] == 0.5 * scales["backbone_decay"] and after["head_decay"] == scales["head_decay"]
    assert plan.apply(16, optimizer) is False and after == {g["name"]: g["lr_scale"] for g in optimizer.param_groups}


def test_nanogpt_compatible_freeze_methods_on_models():
    model = task_model()
    model.freeze_transformer_weights()
    assert model.get_frozen_status() is True and model.frozen_parts()["backbone_frozen"] is True
    assert model.get_parameter_count(trainable_only=True) < model.get_parameter_count()
    model.unfreeze_transformer_weights()
    assert model.get_frozen_status() is False and model.frozen_parts()["frozen_params"] == 0


def test_hybrid_freezes_both_stacks():
    from model_foundry.models import create_model
    from model_foundry.models.hybrid import HybridConfig

    model = create_model(HybridConfig(vocab_size=30, n_layer=1, n_head=2, n_embd=16, block_size=16,
                                      hybrid_design="two_stack"))
    model.freeze_transformer_weights()
    assert model.get_frozen_status() is True
    assert not any(p.requires_grad for p in model.causal_backbone.parameters())
    model.causal_backbone.blocks[0].requires_grad_(True)
    assert model.get_frozen_status() is False


@pytest.mark.parametrize("unfreeze", [{"unfreeze_at_iteration": 15}, {"freeze_epochs": 1.5}])
def test_an_unfreeze_point_alone_freezes_the_whole_backbone_until_then(unfreeze):
    """unfreeze_at_iteration and freeze_epochs follow one rule: without a freeze flag, both freeze the
    backbone until their step (before, unfreeze_at_iteration alone did nothing)."""
    model = task_model()
    plan, optimizer = plan_for(model, steps_per_epoch=10.0, **unfreeze)
    assert plan.unfreeze_step == 15 and len(plan.frozen_at_start) == len(list(model.backbone.parameters()))
    assert plan.apply(0, optimizer) is False and model.get_frozen_status() is True
    assert all(p.requires_grad for p in model.head.parameters())
    assert plan.apply(15, optimizer) is True and model.get_frozen_status() is False


def test_an_unfreeze_point_beside_a_partial_freeze_unfreezes_only_that_part():
    model = task_model()
    plan, optimizer = plan_for(model, freeze_n_layers=1, unfreeze_at_iteration=4)
    plan.apply(0, optimizer)
    assert trainable_blocks(model) == [False, True, True]
    plan.apply(4, optimizer)
    assert trainable_blocks(model) == [True, True, True]


def test_unfreezing_drops_the_backbone_rate_by_the_one_default():
    from model_foundry.compat.nanogpt import GPTConfig
    from model_foundry.compat.schedulers import TransferLearningScheduler
    from model_foundry.training.unfreezing import DEFAULT_UNFREEZE_LR_MULTIPLIER

    assert DEFAULT_UNFREEZE_LR_MULTIPLIER == 0.1
    assert TransferSection().unfreeze_lr_multiplier == GPTConfig().unfreeze_lr_multiplier == \
        TransferLearningScheduler(1.0).unfreeze_lr_drop == DEFAULT_UNFREEZE_LR_MULTIPLIER
    model = task_model()
    plan, optimizer = plan_for(model, freeze_transformer=True, unfreeze_at_iteration=3)
    before = {g["name"]: g["lr_scale"] for g in optimizer.param_groups}
    plan.apply(3, optimizer)
    after = {g["name"]: g["lr_scale"] for g in optimizer.param_groups}
    assert after["backbone_decay"] == pytest.approx(0.1 * before["backbone_decay"])
    assert after["head_decay"] == before["head_decay"]


def test_bad_layer_indices_are_user_errors():
    with pytest.raises(UserError, match="freeze_n_layers"):
        plan_for(task_model(), freeze_layer_indices=[5])


def test_strict_init_names_missing_backbone_weights(tmp_path):
    source = task_model(n_layer=2)
    source.save_pretrained(tmp_path)
    with pytest.raises(UserError, match="backbone.blocks.2"):
        load_backbone_weights(task_model(n_layer=3), tmp_path, strict=True)
    target = task_model(n_layer=3)
    load_backbone_weights(target, tmp_path, strict=False)
    assert torch.equal(target.backbone.blocks[1].attn.qkv.weight, source.backbone.blocks[1].attn.qkv.weight)
