"""A pretrained backbone with a task head: sequence classification, token classification, scoring.

The backbone is any registered architecture's `backbone` (it maps ids to hidden states and knows
nothing of tasks); a pooler turns a sequence of hidden states into one vector for sequence tasks;
a head maps hidden states to outputs; a criterion turns outputs and labels into the loss. The
weights keep the backbone's names (`backbone.*`), so a pretraining checkpoint loads into a task
model directly and its language-model head is simply left behind.

`model_config.json` of a task model records the backbone (`architecture`, `config`) and the head
(`task_head`): the label names and the scoring range travel with every checkpoint, so a saved
model predicts in the user's labels and scale without the run directory around it.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from model_foundry.errors import UserError
from model_foundry.models.base import (MODEL_KINDS, BaseLanguageModel, ModelOutput, config_from_dict, init_normal,
                                      part_config)
from model_foundry.models.heads import make_criterion, make_head, make_pooler
from model_foundry.models.registry import get_architecture

SEQUENCE_TASKS = ("sequence_classification", "sequence_scoring")
TASK_TYPES = (*SEQUENCE_TASKS, "token_classification")


@dataclass
class TaskHeadConfig:
    """Everything about the head that a saved task model needs to rebuild and to report predictions."""

    task: str
    num_outputs: int
    labels: list[str] | None = None  # class names, index = output; None for scoring
    multi_label: bool = False
    pooler: str | None = None  # sequence tasks only
    head: str = "linear"
    head_dropout: float = 0.1
    criterion: str = "cross_entropy"
    label_smoothing: float = 0.0
    class_weights: list[float] | None = None
    bitempered_t1: float = 0.8
    bitempered_t2: float = 1.2
    score_activation: str = "none"  # scoring: "sigmoid" bounds scores to [0, 1]
    target_range: list[float] | None = None  # scoring targets were mapped from [min, max] to [0, 1]

    def __post_init__(self) -> None:
        if self.task not in TASK_TYPES:
            raise UserError(f"task {self.task!r} has no task head; heads exist for {', '.join(TASK_TYPES)}.")
        if self.task in SEQUENCE_TASKS and self.pooler is None:
            raise UserError(f"task {self.task!r} needs a pooler (task.pooler).")

    def make_criterion(self) -> nn.Module:
        """The criterion these settings name: forward(outputs, labels) -> loss."""
        return make_criterion(self.criterion, label_smoothing=self.label_smoothing, class_weights=self.class_weights,
                              t1=self.bitempered_t1, t2=self.bitempered_t2)


def to_original_scale(values: Tensor, target_range: list[float] | None) -> Tensor:
    """A scorer's outputs in the scale of its training targets (`target_range` [min, max] was mapped to [0, 1])."""
    if target_range is None:
        return values
    low, high = target_range
    return values * (high - low) + low


def to_unit_scale(values, target_range: list[float] | None):
    """Targets (a number or a tensor) mapped as training mapped them: [min, max] to [0, 1]."""
    if target_range is None:
        return values
    low, high = target_range
    return (values - low) / (high - low)


class TaskModel(BaseLanguageModel):
    """backbone -> (pooler) -> head -> criterion. `logits` are per class, per token, or the score."""

    model_type = "task"
    supports_generation = False

    def __init__(self, architecture: str, backbone_config: Any, head_config: TaskHeadConfig):
        super().__init__(backbone_config)
        self.architecture_name = architecture  # the backbone's architecture, recorded in checkpoints
        self.head_config = head_config
        self.default_task = head_config.task  # the task its head was made for
        self.backbone = get_architecture(architecture)(backbone_config).backbone
        hidden = self.backbone.hidden_size
        self.pooler = make_pooler(head_config.pooler, hidden) if head_config.task in SEQUENCE_TASKS else None
        self.head = make_head(head_config.head, hidden, head_config.num_outputs, head_config.head_dropout)
        self.criterion = head_config.make_criterion()
        self.head.apply(init_normal)
        if self.pooler is not None:
            self.pooler.apply(init_normal)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                token_type_ids: Tensor | None = None, output_hidden_states: bool = False) -> ModelOutput:
        hidden, all_hidden = self.backbone(input_ids, attention_mask, token_type_ids, output_hidden_states)
        if self.pooler is not None:
            hidden = self.pooler(hidden, attention_mask)
        logits = self.head(hidden)
        if self.head_config.task == "sequence_scoring":
            logits = logits.squeeze(-1).float()
            if self.head_config.score_activation == "sigmoid":
                logits = torch.sigmoid(logits)
        loss = self.criterion(logits, labels) if labels is not None else None
        return ModelOutput(loss=loss, logits=logits, hidden_states=all_hidden)

    def description(self) -> dict[str, Any]:
        return {**super().description(), "task_head": asdict(self.head_config)}

    @classmethod
    def from_description(cls, meta: dict, path: Path) -> TaskModel:
        """A freshly initialised task model as the parsed `model_config.json` at `path` describes it."""
        arch = get_architecture(meta["architecture"])
        head_config = part_config(meta, "task_head", TaskHeadConfig, path, "a task head")
        return cls(arch.architecture_name, config_from_dict(arch, meta["config"], path), head_config)


MODEL_KINDS["task_head"] = TaskModel.from_description
