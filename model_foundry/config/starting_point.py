"""The config sections of a run that starts from another model: `transfer` (which checkpoint, what is
frozen and until when, per-part learning rates) and `lora` (adapters instead of the base weights)."""
from __future__ import annotations

from pydantic import Field, model_validator

from model_foundry.config.section import Section, alias


class TransferSection(Section):
    """Finetuning from a checkpoint: which weights, what is frozen and until when, and per-part learning
    rates (docs/tasks.md)."""
    # A run directory, an experiment name or a checkpoint directory whose backbone weights start
    # this run. The backbone's architecture and the tokenizer come from it too.
    init_from_checkpoint: str | None = None
    # false: take the checkpoint's architecture, settings and tokenizer but start from random weights
    # (the from-scratch control for a transfer claim: everything but the pretraining is the same).
    load_weights: bool = True
    # Every backbone weight must be found in the checkpoint (the task head is always new).
    strict: bool = True
    # Freeze the whole backbone (embeddings and blocks).
    freeze_transformer: bool = False
    # Freeze the embeddings.
    freeze_embeddings: bool = False
    # Freeze the first N blocks.
    freeze_n_layers: int = Field(0, ge=0)
    # Freeze these blocks (0 = first; negative indices count from the top).
    freeze_layer_indices: list[int] = []
    # Unfreeze everything frozen above after this many epochs or optimizer steps. Without a freeze
    # flag, either one freezes the whole backbone until then (an unfreeze point alone would do nothing).
    freeze_epochs: float | None = Field(None, gt=0.0)
    # The optimizer step to unfreeze at; set this or freeze_epochs, not both.
    unfreeze_at_iteration: int | None = Field(None, ge=1)
    # At unfreezing, the backbone's LR is multiplied by this for the rest of the run. 0.1, not 1:
    # the unfrozen weights' Adam state starts fresh, so their first updates are about one LR per
    # weight whatever the gradient, and at the head's full rate they would jolt the pretrained
    # features the frozen phase relied on. The nanoGPT-compatible API and TransferLearningScheduler
    # read this same default (model_foundry.training.unfreezing.Unfreezing).
    unfreeze_lr_multiplier: float = Field(0.1, gt=0.0)
    # The task head's learning rate as a multiple of training.learning_rate.
    head_lr_mult: float = Field(1.0, gt=0.0)
    # The backbone's learning rate as a multiple of training.learning_rate.
    backbone_lr_mult: float = Field(1.0, gt=0.0)
    # Layer-wise LR decay: block i (0 = first) of n gets the backbone LR x layer_lr_decay^(n - 1 - i),
    # the embeddings x layer_lr_decay^n; the head keeps head_lr_mult.
    layer_lr_decay: float = Field(1.0, gt=0.0, le=1.0)
    # Re-draw the weights of the top N blocks after loading.
    reinit_n_layers: int = Field(0, ge=0)
    # Drop the top N blocks.
    remove_n_layers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def one_unfreeze_point(self) -> "TransferSection":
        if self.freeze_epochs is not None and self.unfreeze_at_iteration is not None:
            raise ValueError("set either freeze_epochs or unfreeze_at_iteration, not both")
        return self


class LoraSection(Section):
    """Low-rank adapters (through `peft`) on the backbone's projections; the base weights stay frozen."""

    # Train adapters instead of the base weights.
    enabled: bool = False
    # The adapters' rank.
    r: int = Field(8, ge=1)
    # Updates are scaled by alpha / r (alpha / sqrt(r) with use_rslora).
    alpha: float = Field(16.0, gt=0.0, validation_alias=alias("alpha", "lora_alpha"))
    # Dropout on the adapters' input.
    dropout: float = Field(0.0, ge=0.0, lt=1.0, validation_alias=alias("dropout", "lora_dropout"))
    # Module names (suffixes) to adapt; None picks the backbone family's projections.
    target_modules: list[str] | None = None
    # Block indices to adapt (0 = first); None adapts every block.
    layers_to_transform: list[int] | None = None
    # Extra modules trained in full and saved with the adapter; the task head and pooler always are.
    modules_to_save: list[str] = []
    # Rank-stabilised scaling: alpha / sqrt(r).
    use_rslora: bool = False
    # DoRA: weight-decomposed adapters (a magnitude and a direction).
    use_dora: bool = False
    # true (peft's default: B = 0, so training starts from the base model), false (random), or a
    # peft scheme name such as "gaussian", "pissa", "olora".
    init_lora_weights: bool | str = True
    # A saved adapter directory (adapter_config.json + adapter_model.safetensors) to start from;
    # its own r, alpha and target modules apply. is_trainable: false keeps it frozen.
    pretrained_adapter_path: str | None = None
    # false keeps pretrained_adapter_path's adapter frozen.
    is_trainable: bool = True
