"""The configuration schema: one pydantic model per YAML section.

Every section forbids unknown keys, so a typo is an error that names the closest valid key
instead of a setting that silently does nothing. Where an older system users come from spelled a key differently
(`max_iters`, `torch_dtype`, `lr`), the old spelling is accepted as an alias of the canonical one.
`None` in a model field means "the architecture's own default (or its preset's)".
"""
from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, field_validator, model_validator

from model_foundry.config.choices import (ACTIVATIONS, ATTENTION_TYPES, CRITERIA, HEADS, NORM_POSITIONS, POOLERS,
                                         POSITIONAL_ENCODINGS, TOKENIZER_TYPES)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, validate_assignment=True)


def alias(*names: str) -> AliasChoices:
    """Accept the canonical name (first) and older spellings of a key."""
    return AliasChoices(*names)


class ExperimentSection(Section):
    name: str = "run"
    kind: Literal["pretraining", "finetuning"] = "pretraining"
    seed: int = 1337
    output_dir: str = "experiments"
    description: str = ""


class TokenizerSection(Section):
    type: Literal[TOKENIZER_TYPES] = Field(
        "bpe", validation_alias=alias("type", "tokenizer_type"))
    vocab_size: int = Field(8000, ge=8)
    # An existing tokenizer (a directory holding tokenizer.json, or the file). Without it, one is
    # trained on the training data and saved in the run directory.
    path: str | None = None
    max_length: int | None = Field(None, ge=2)
    lowercase: bool = False
    min_frequency: int = Field(2, ge=1)


class SplitSection(Section):
    path: str | list[str] | None = Field(None, validation_alias=alias("path", "dataset_path"))


class DataSection(Section):
    train: SplitSection = SplitSection()
    val: SplitSection = SplitSection()
    test: SplitSection = SplitSection()
    format: Literal["text", "jsonl", "csv", "tsv", "conllu", "conll", "pt"] | None = None
    text_column: str = "text"
    text_pair_column: str | None = None
    label_column: str = "label"
    # Without a val file: pretraining takes the last fraction of the token stream as val; finetuning
    # holds out a seeded random fraction of the labelled examples, but only when this key is set.
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    # Finetuning: train on a random subset of N training examples, the same subset for the same
    # experiment.seed (few-label experiments). None: every example.
    max_train_samples: int | None = Field(None, ge=1)
    # Tokenized corpora are cached here by content hash (default: <output_dir>/.cache/tokens).
    cache_dir: str | None = None

    @field_validator("train", "val", "test", mode="before")
    @classmethod
    def path_shorthand(cls, value):
        """`train: corpus.txt` is short for `train: {path: corpus.txt}`."""
        if isinstance(value, (str, list)):
            return {"path": value}
        return value


class ModelSection(Section):
    architecture: str = "gpt"
    preset: Literal["small", "base", "large"] | None = None
    n_layer: int | None = Field(None, ge=1)
    n_head: int | None = Field(None, ge=1)
    n_embd: int | None = Field(None, ge=1)
    intermediate_size: int | None = Field(None, ge=1)
    block_size: int | None = Field(None, ge=2)
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    bias: bool | None = None
    attention_type: Literal[ATTENTION_TYPES] | None = None
    positional: Literal[POSITIONAL_ENCODINGS] | None = None
    norm_position: Literal[NORM_POSITIONS] | None = None
    activation: Literal[ACTIVATIONS] | None = None
    layer_norm_eps: float | None = Field(None, gt=0.0)
    type_vocab_size: int | None = Field(None, ge=0)
    # hybrid only: two_stack (a bidirectional and a causal stack) or shared (one stack, both objectives).
    hybrid_design: Literal["two_stack", "shared"] | None = None
    hidden_size: int | None = Field(None, ge=1)
    bidirectional: bool | None = None
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, validation_alias=alias("dtype", "torch_dtype"))
    # hf only: a Hugging Face model directory or hub name, and whether to run code it ships.
    hf_name_or_path: str | None = None
    trust_remote_code: bool = False
    gradient_checkpointing: bool | None = None

    def architecture_values(self) -> dict:
        """The keys that configure the architecture itself, with unset ones left out."""
        meta = {"architecture", "preset"} if self.architecture == "hf" else {"architecture", "preset", "dtype",
                                                                            "trust_remote_code"}
        return {k: v for k, v in self.model_dump().items() if k not in meta and v is not None}


class TaskSection(Section):
    # None: the architecture's natural objective (causal_lm for gpt, masked_lm for bert).
    type: str | None = None
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0)
    # replaced_token_detection: the generator's width as a share of the discriminator's n_embd.
    generator_size: float = Field(0.25, gt=0.0, le=1.0)
    # replaced_token_detection: loss = generator MLM loss + rtd_weight x discriminator BCE (ELECTRA: 50).
    rtd_weight: float = Field(50.0, gt=0.0)
    pad_to_multiple_of: int | None = Field(None, ge=1)
    # ---- hybrid: causal_ratio (shared design) is the share of causal batches, loss_weights
    # (two_stack design) the [mlm, clm] weights of the two objectives' losses (default [0.5, 0.5]).
    causal_ratio: float = Field(0.5, ge=0.0, le=1.0)
    loss_weights: list[float] | None = None
    # ---- finetuning tasks (sequence_classification, token_classification, sequence_scoring) ----
    # The label set is read from the training split; num_labels, when given, must agree with it.
    num_labels: int | None = Field(None, ge=1)
    # Several labels per example: a JSON list in jsonl, or label_separator-joined text in tsv/csv.
    multi_label: bool = False
    label_separator: str = ","
    # None: `last` for causal backbones, `cls` for bidirectional ones.
    pooler: Literal[POOLERS] | None = None
    head: Literal[HEADS] = "linear"
    head_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # None: cross_entropy (bce when multi_label, mse for scoring).
    criterion: Literal[CRITERIA] | None = None
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    class_weights: list[float] | None = None
    bitempered_t1: float = Field(0.8, gt=0.0, le=1.0)
    bitempered_t2: float = Field(1.2, ge=1.0)
    # sequence_scoring: `sigmoid` bounds the score to [0, 1] (a bounded scorer); `none` is plain regression.
    score_activation: Literal["sigmoid", "none"] = "sigmoid"
    # Rescale targets to [0, 1] with the training split's min and max (kept in the checkpoint, so
    # predictions come back in the original scale). Needed with `sigmoid` for targets outside [0, 1].
    normalize_targets: bool = True



class TransferSection(Section):
    # A run directory, an experiment name or a checkpoint directory whose backbone weights start
    # this run. The backbone's architecture and the tokenizer come from it too.
    init_from_checkpoint: str | None = None
    # false: take the checkpoint's architecture, settings and tokenizer but start from random weights
    # (the from-scratch control for a transfer claim: everything but the pretraining is the same).
    load_weights: bool = True
    # Every backbone weight must be found in the checkpoint (the task head is always new).
    strict: bool = True
    freeze_transformer: bool = False
    freeze_embeddings: bool = False
    freeze_n_layers: int = Field(0, ge=0)
    freeze_layer_indices: list[int] = []
    # Unfreeze everything frozen above after this many epochs or optimizer steps. Without a freeze
    # flag, either one freezes the whole backbone until then (an unfreeze point alone would do nothing).
    freeze_epochs: float | None = Field(None, gt=0.0)
    unfreeze_at_iteration: int | None = Field(None, ge=1)
    # At unfreezing, the backbone's LR is multiplied by this for the rest of the run. 0.1, not 1:
    # the unfrozen weights' Adam state starts fresh, so their first updates are about one LR per
    # weight whatever the gradient, and at the head's full rate they would jolt the pretrained
    # features the frozen phase relied on. The nanoGPT-compatible API and TransferLearningScheduler
    # read this same default (model_foundry.training.schedules.Unfreezing).
    unfreeze_lr_multiplier: float = Field(0.1, gt=0.0)
    head_lr_mult: float = Field(1.0, gt=0.0)
    backbone_lr_mult: float = Field(1.0, gt=0.0)
    # Layer-wise LR decay: block i (0 = first) of n gets the backbone LR x layer_lr_decay^(n - 1 - i),
    # the embeddings x layer_lr_decay^n; the head keeps head_lr_mult.
    layer_lr_decay: float = Field(1.0, gt=0.0, le=1.0)
    reinit_n_layers: int = Field(0, ge=0)
    remove_n_layers: int = Field(0, ge=0)

    @model_validator(mode="after")
    def one_unfreeze_point(self) -> "TransferSection":
        if self.freeze_epochs is not None and self.unfreeze_at_iteration is not None:
            raise ValueError("set either freeze_epochs or unfreeze_at_iteration, not both")
        return self


class TrainingSection(Section):
    max_steps: int | None = Field(None, ge=1, validation_alias=alias("max_steps", "max_iters"))
    epochs: float | None = Field(None, gt=0.0)
    batch_size: int = Field(32, ge=1)
    gradient_accumulation_steps: int = Field(1, ge=1)
    learning_rate: float = Field(3e-4, gt=0.0, validation_alias=alias("learning_rate", "lr"))
    min_lr: float | None = Field(None, ge=0.0)
    warmup_steps: int | None = Field(None, ge=0, validation_alias=alias("warmup_steps", "warmup_iters"))
    warmup_ratio: float | None = Field(None, ge=0.0, lt=1.0)
    # cosine | linear (decay to min_lr after warmup) | constant (the peak after warmup; warmup_only and
    # transfer are aliases of it) | plateau (reduce by plateau_factor after plateau_patience evals without
    # a better val loss). Per-part rates and unfreezing come from the transfer section under all of them.
    lr_schedule: Literal["cosine", "linear", "constant", "warmup_only", "transfer", "plateau"] = "cosine"
    plateau_patience: int = Field(3, ge=1)
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)
    weight_decay: float = Field(0.1, ge=0.0)
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.95, ge=0.0, lt=1.0)
    grad_clip: float | None = Field(1.0, ge=0.0)
    eval_interval: int = Field(200, ge=1)
    eval_iters: int | None = Field(None, ge=1)
    log_interval: int = Field(10, ge=1)
    save_interval: int | None = Field(None, ge=1)
    keep_last_n: int = Field(2, ge=0)
    best_metric: str | None = None
    early_stopping_patience: int | None = Field(None, ge=1)
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    compile: bool = False
    # torch.compile's mode when compile is true. reduce-overhead replays each step as CUDA graphs: far
    # fewer kernel launches where small models leave a GPU launch-bound; it records a graph per input
    # shape, so it suits pretraining's fixed-length windows more than length-bucketed finetuning.
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    # How several processes (--nproc N, torchrun) share the model: ddp (a full copy each, gradients
    # all-reduced) or fsdp (FSDP2: parameters, gradients and optimizer state sharded).
    distributed: Literal["ddp", "fsdp"] = "ddp"
    resume: bool = False
    resume_from: str | None = None
    strict: bool = True
    load_only_model_state: bool = False

    @model_validator(mode="after")
    def one_warmup(self) -> "TrainingSection":
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("set either warmup_steps or warmup_ratio, not both")
        return self


class LossModifiersSection(Section):
    """Loss modifiers (model_foundry/models/heads/loss_modifiers.py says what each computes)."""

    enabled: bool = Field(True, validation_alias=alias("enabled", "loss_modifiers_enabled"))
    entropy_modifier_enabled: bool = False
    entropy_modifier_weight: float = Field(1.0, ge=0.0)
    target_smoothing_enabled: bool = False
    target_smoothing_factor: float = Field(0.1, ge=0.0, lt=1.0)
    mask_ratio_weight_enabled: bool = False
    mask_ratio_weight_power: float = Field(0.5, ge=0.0)

    def pipeline_settings(self) -> dict:
        """The flat dict `create_loss_modifier_pipeline` takes (the keys of this section, flattened)."""
        return {"loss_modifiers_enabled": self.enabled, **self.model_dump(exclude={"enabled"})}


class LoggingSection(Section):
    csv: bool = True
    tensorboard: bool = False
    wandb: bool = False
    # W&B without an account or network: "offline" writes a local run that `wandb sync` uploads.
    wandb_mode: Literal["online", "offline"] = "offline"
    project: str = "model-foundry"


class LoraSection(Section):
    """Low-rank adapters (through `peft`) on the backbone's projections; the base weights stay frozen."""

    enabled: bool = False
    r: int = Field(8, ge=1)
    alpha: float = Field(16.0, gt=0.0, validation_alias=alias("alpha", "lora_alpha"))
    dropout: float = Field(0.0, ge=0.0, lt=1.0, validation_alias=alias("dropout", "lora_dropout"))
    # Module names (suffixes) to adapt; None picks the backbone family's projections.
    target_modules: list[str] | None = None
    # Block indices to adapt (0 = first); None adapts every block.
    layers_to_transform: list[int] | None = None
    # Extra modules trained in full and saved with the adapter; the task head and pooler always are.
    modules_to_save: list[str] = []
    use_rslora: bool = False
    use_dora: bool = False
    # true (peft's default: B = 0, so training starts from the base model), false (random), or a
    # peft scheme name such as "gaussian", "pissa", "olora".
    init_lora_weights: bool | str = True
    # A saved adapter directory (adapter_config.json + adapter_model.safetensors) to start from;
    # its own r, alpha and target modules apply. is_trainable: false keeps it frozen.
    pretrained_adapter_path: str | None = None
    is_trainable: bool = True


class FoundryConfig(Section):
    experiment: ExperimentSection = ExperimentSection()
    tokenizer: TokenizerSection = TokenizerSection()
    data: DataSection = DataSection()
    model: ModelSection = ModelSection()
    task: TaskSection = TaskSection()
    training: TrainingSection = TrainingSection()
    transfer: TransferSection = TransferSection()
    lora: LoraSection = LoraSection()
    loss_modifiers: LossModifiersSection = LossModifiersSection()
    logging: LoggingSection = LoggingSection()

    @model_validator(mode="after")
    def lora_keeps_the_base_frozen(self) -> "FoundryConfig":
        t = self.transfer
        if self.lora.enabled and (t.freeze_epochs is not None or t.unfreeze_at_iteration is not None):
            raise ValueError("lora.enabled keeps the base weights frozen for the whole run, so "
                             "transfer.freeze_epochs / unfreeze_at_iteration (which unfreeze them) cannot be used "
                             "with it; remove one of them")
        return self
