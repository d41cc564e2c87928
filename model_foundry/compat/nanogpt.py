"""The nanoGPT-compatible multi-mode API, as a thin layer over Model Foundry's own models.

    from model_foundry.compat.nanogpt import GPT, GPTConfig, ModelMode
    model = GPT(GPTConfig(n_layer=4, n_head=4, n_embd=128, mode=ModelMode.TOKEN_CLASSIFIER, num_token_classes=3))
    logits, loss = model(input_ids, targets, loss_modifiers=pipeline)

LANGUAGE_MODEL is our `gpt`; TOKEN_CLASSIFIER and SEQUENCE_SCORER are our `TaskModel` with a
token head, or a first-token pooler and a sigmoid scorer (MSE against targets in [0, 1]). Output
shapes are the ones this API has always had: (B, T, vocab) with targets and (B, 1, vocab) without
them for the language model, (B, T, classes) for the token classifier, (B,) for the scorer. Classifier modes need to
see the whole input, so a causal `attention_type` is switched to bidirectional with a warning
(the only place Model Foundry changes an attention type on its own).
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

import torch
from torch import Tensor, nn

from model_foundry.models import GPTConfig as FoundryGPTConfig
from model_foundry.models import TaskHeadConfig, TaskModel, create_model
from model_foundry.training.loss_modifiers import LossModifierPipeline
from model_foundry.training.unfreezing import DEFAULT_UNFREEZE_LR_MULTIPLIER, Unfreezing, freezes_whole_backbone


class ModelMode(str, Enum):
    """What the model predicts, named as the nanoGPT-style API's users know it (`GPTConfig.mode`).

    "Mode" means this alone (the loss-modifier pipeline this API takes is filtered per mode too).
    Model Foundry's configs say `task.type` for what a model predicts, and `experiment.kind`
    (`foundry train --kind`) for pretraining or finetuning, which is never called a mode.
    """

    LANGUAGE_MODEL = "language_model"
    TOKEN_CLASSIFIER = "token_classifier"
    SEQUENCE_SCORER = "sequence_scorer"


@dataclass
class GPTConfig:
    """nanoGPT's config plus the mode and transfer-learning fields of the multi-mode API."""

    block_size: int = 1024
    vocab_size: int = 50304
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True
    mode: ModelMode = ModelMode.LANGUAGE_MODEL
    num_token_classes: int = 2
    cls_token_id: int | None = None
    attention_type: str = "causal"
    init_from_checkpoint: str | None = None
    freeze_transformer: bool = False
    # Without freeze_transformer, an unfreeze point freezes the transformer until then (the config's rule).
    unfreeze_at_iteration: int | None = None
    unfreeze_lr_multiplier: float = DEFAULT_UNFREEZE_LR_MULTIPLIER

    def __post_init__(self) -> None:
        self.mode = ModelMode(self.mode)
        if self.mode != ModelMode.LANGUAGE_MODEL and self.attention_type == "causal":
            warnings.warn(f"{self.mode.value} mode needs every token to see the whole input: "
                          "attention_type switched from 'causal' to 'bidirectional'.", stacklevel=3)
            self.attention_type = "bidirectional"


class GPT(nn.Module):
    """The multi-mode `GPT(config)`: `logits, loss = model(idx, targets, loss_modifiers=...)`."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        settings = FoundryGPTConfig(vocab_size=config.vocab_size, block_size=config.block_size, n_layer=config.n_layer,
                                    n_head=config.n_head, n_embd=config.n_embd, dropout=config.dropout,
                                    bias=config.bias, attention_type=config.attention_type)
        if config.mode == ModelMode.LANGUAGE_MODEL:
            self.model = create_model(settings)
        elif config.mode == ModelMode.TOKEN_CLASSIFIER:
            labels = [str(i) for i in range(config.num_token_classes)]
            self.model = TaskModel("gpt", settings, TaskHeadConfig(task="token_classification",
                                                                   num_outputs=config.num_token_classes, labels=labels))
        else:
            self.model = TaskModel("gpt", settings, TaskHeadConfig(task="sequence_scoring", num_outputs=1, pooler="cls",
                                                                   criterion="mse", score_activation="sigmoid"))
        if config.init_from_checkpoint:
            from model_foundry.config.experiments import locate_checkpoint
            from model_foundry.training.transfer import load_backbone_weights

            load_backbone_weights(self.model, locate_checkpoint(config.init_from_checkpoint, "init_from_checkpoint"), strict=False)
        if freezes_whole_backbone(config.freeze_transformer, partial=False,
                                  unfreeze_step_given=config.unfreeze_at_iteration is not None):
            self.freeze_transformer_weights()

    def forward(self, idx: Tensor, targets: Tensor | None = None,
                loss_modifiers: LossModifierPipeline | None = None) -> tuple[Tensor, Tensor | None]:
        idx = self.with_cls_token(idx)
        if self.config.mode == ModelMode.SEQUENCE_SCORER and targets is not None:
            targets = targets.float()
        output = self.model(idx, labels=targets)
        loss = output.loss
        pipeline = loss_modifiers.for_mode(self.config.mode.value) if loss_modifiers is not None else None
        if pipeline and targets is not None:  # a scorer's pipeline is always empty (the modifiers' mode table)
            loss = pipeline(output.logits, targets)
        logits = output.logits
        if self.config.mode == ModelMode.LANGUAGE_MODEL and targets is None:
            logits = logits[:, [-1], :]  # nanoGPT's inference shortcut: only the last position
        return logits, loss

    def with_cls_token(self, idx: Tensor) -> Tensor:
        """The scorer pools the first token: prepend `cls_token_id` to rows that do not start with it."""
        cls = self.config.cls_token_id
        if self.config.mode != ModelMode.SEQUENCE_SCORER or cls is None or bool((idx[:, 0] == cls).all()):
            return idx
        return torch.cat([torch.full_like(idx[:, :1], cls), idx], dim=1)

    # ---- transfer-learning methods --------------------------------------------------------------------
    def freeze_transformer_weights(self) -> None:
        self.model.freeze_transformer_weights()

    def unfreeze_transformer_weights(self) -> None:
        self.model.unfreeze_transformer_weights()

    def get_frozen_status(self) -> bool:
        """True while the transformer is frozen (the nanoGPT-compatible API's boolean; `model.model.frozen_parts()`
        gives the per-part detail)."""
        return self.model.get_frozen_status()

    @property
    def unfreezing(self) -> Unfreezing:
        """The config's unfreeze point and LR drop, under the rule the trainer's `transfer` section uses."""
        return Unfreezing(self.config.unfreeze_at_iteration, self.config.unfreeze_lr_multiplier)

    def maybe_unfreeze(self, iter_num: int, optimizer: torch.optim.Optimizer | None = None) -> bool:
        """At `unfreeze_at_iteration`: unfreeze, and multiply the LR (and `lr_scale`) of the optimizer groups
        holding transformer weights by `unfreeze_lr_multiplier`. True when it happened at this iteration."""
        if not self.unfreezing.happens_at(iter_num) or not self.get_frozen_status():
            return False
        self.unfreeze_transformer_weights()
        if optimizer is not None:
            backbone = {id(p) for module in self.model.transformer_modules() for p in module.parameters()}
            self.unfreezing.drop_rates(group for group in optimizer.param_groups
                                       if any(id(p) in backbone for p in group["params"]))
        return True

    def get_num_params(self) -> int:
        return self.model.get_parameter_count()

    def save_pretrained(self, directory: str | Path) -> None:
        self.model.save_pretrained(directory)
