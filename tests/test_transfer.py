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
    status = model.get_frozen_status()
    assert status["frozen_blocks"] == [0, 2] and status["embeddings_frozen"] and not status["head_frozen"]


def test_freeze_epochs_freezes_the_backbone_until_its_step():
    model = task_model()
    plan, optimizer = plan_for(model, steps_per_epoch=7.5, freeze_epochs=2, unfreeze_lr_multiplier=0.5)
    assert plan.unfreeze_step == 15
    assert plan.apply(14, optimizer) is False and model.get_frozen_status()["backbone_frozen"]
    scales = {g["name"]: g["lr_scale"] for g in optimizer.param_groups}
    assert plan.apply(15, optimizer) is True and not model.get_frozen_status()["backbone_frozen"]
    after = {g["name"]: g["lr_scale"] for g in optimizer.param_groups}
    assert after["backbone_decay"] == 0.5 * scales["backbone_decay"] and after["head_decay"] == scales["head_decay"]
    assert plan.apply(16, optimizer) is False and after == {g["name"]: g["lr_scale"] for g in optimizer.param_groups}


def test_seed_000_freeze_methods():
    model = task_model()
    model.freeze_transformer_weights()
    assert model.get_frozen_status()["backbone_frozen"] and model.get_parameter_count(trainable_only=True) < \
        model.get_parameter_count()
    model.unfreeze_transformer_weights()
    assert model.get_frozen_status()["frozen_params"] == 0


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
