"""The configuration schema: one pydantic model per YAML section.

Every section forbids unknown keys, so a typo is an error that names the closest valid key
instead of a setting that silently does nothing. Where an older system users come from named a key differently
(`max_iters`, `torch_dtype`, `lr`), that alternative key name is accepted as an alias of the canonical one.
`None` in a model field means "the architecture's own default (or its preset's)".
"""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from model_foundry.config.choices import (ACTIVATIONS, ATTENTION_TYPES, CRITERIA, HEADS, NORM_POSITIONS, NORMS,
                                         POOLERS, POSITIONAL_ENCODINGS, RECIPES, TOKENIZER_TYPES)
from model_foundry.config.section import Section, alias
from model_foundry.config.starting_point import LoraSection, TransferSection
from model_foundry.config.training_section import TrainingSection

__all__ = ["Section", "alias", "ExperimentSection", "TokenizerSection", "SplitSection", "DataSection", "ModelSection",
           "TaskSection", "TransferSection", "TrainingSection", "LossModifiersSection", "LoggingSection", "LoraSection",
           "FoundryConfig"]


class ExperimentSection(Section):
    """What the run is: its name and kind, its seed, and where its directory goes."""
    # The run's name: its directory is <output_dir>/<kind>/<name> unless `foundry train --out` says otherwise.
    name: str = "run"
    # pretraining or finetuning: the folder its run directory goes in (`foundry train -m` sets it).
    kind: Literal["pretraining", "finetuning"] = "pretraining"
    # Seeds Python, NumPy and torch: initial weights, data order, masking, dropout, max_train_samples subsets.
    seed: int = 1337
    # The root of run directories and of the token cache (<output_dir>/.cache/tokens).
    output_dir: str = "experiments"
    # Free text for people reading the config.
    description: str = ""


class TokenizerSection(Section):
    """The tokenizer a run trains on `data.train.path`, unless one comes from `path`, the run being
    resumed or the checkpoint the run starts from (docs/tokenizers.md)."""
    # The kind of tokenizer to train.
    type: Literal[TOKENIZER_TYPES] = Field(
        "bpe", validation_alias=alias("type", "tokenizer_type"))
    # The most tokens the trained tokenizer holds, its five special tokens included.
    vocab_size: int = Field(8000, ge=8)
    # An existing tokenizer (a directory holding tokenizer.json, or the file). Without it, one is
    # trained on the training data and saved in the run directory.
    path: str | None = None
    # Finetuning inputs are cut to min(max_length, model.block_size) tokens; None: block_size alone.
    max_length: int | None = Field(None, ge=2)
    # Lowercase cased letters before tokenizing (accents and combining marks are kept).
    lowercase: bool = False
    # The fewest occurrences a bpe or wordpiece merge needs (char and unigram have no use for it).
    min_frequency: int = Field(2, ge=1)


class SplitSection(Section):
    """One data split."""
    # A file, a glob, or a list of files and globs.
    path: str | list[str] | None = Field(None, validation_alias=alias("path", "dataset_path"))


class DataSection(Section):
    """Where a run's texts and labels come from, and how they are read (docs/data.md)."""
    # The training split (`train: FILE` is short for `train: {path: FILE}`).
    train: SplitSection = SplitSection()
    # The validation split; without it, see val_fraction.
    val: SplitSection = SplitSection()
    # The test split, evaluated at the end of training.
    test: SplitSection = SplitSection()
    # The files' format; None: guessed from each file's extension.
    format: Literal["text", "jsonl", "csv", "tsv", "conllu", "conll", "pt"] | None = None
    # jsonl, csv, tsv: the column holding the text (token_classification in jsonl: the list of words).
    text_column: str = "text"
    # sequence_classification: a column holding a second text, for sentence pairs.
    text_pair_column: str | None = None
    # The column holding the label, score or tags; conllu: the tag column's name (`label` means upos).
    label_column: str = "label"
    # Without a val file: pretraining takes the last fraction of the token stream as val; finetuning
    # holds out a seeded random fraction of the labelled examples, but only when this key is set.
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0)
    # Finetuning: train on a random subset of N training examples, the same subset for the same
    # experiment.seed (few-label experiments). None: every example.
    max_train_samples: int | None = Field(None, ge=1)
    # Tokenized corpora are cached here by content hash (default: <output_dir>/.cache/tokens).
    cache_dir: str | None = None
    # Processes that tokenize a corpus into the cache (the file is the same for any number). 1: in
    # the run's own process, where `tokenizers` already uses every core for each batch; on 2 cores
    # that beat 2 workers (benchmarks/corpus_prep). More help where the Python side dominates.
    num_workers: int = Field(1, ge=1)

    @field_validator("train", "val", "test", mode="before")
    @classmethod
    def path_shorthand(cls, value):
        """`train: corpus.txt` is short for `train: {path: corpus.txt}`."""
        if isinstance(value, (str, list)):
            return {"path": value}
        return value


class ModelSection(Section):
    """The architecture and its settings. A key left unset takes the architecture's own default, or
    its preset's (docs/models.md)."""
    # A registered architecture (gpt2 is an older spelling of gpt).
    architecture: str = "gpt"
    # A size; the keys set explicitly override it.
    preset: Literal["small", "base", "large"] | None = None
    # gpt, bert, hybrid: a set of layout defaults under the preset and the explicit keys. classic: GPT-2's
    # and BERT's; modern: rotary, RMSNorm, QK-norm, ReLU^2, no biases, an untied zero-initialised head,
    # zero-initialised residual projections and logits soft-capped at 15 (docs/models.md, "Recipes").
    recipe: Literal[RECIPES] | None = None
    # Transformer blocks or recurrent layers (per stack for the hybrid).
    n_layer: int | None = Field(None, ge=1)
    # Attention heads per block.
    n_head: int | None = Field(None, ge=1)
    # The width of the embeddings and of the residual stream.
    n_embd: int | None = Field(None, ge=1)
    # The MLP's width; None: 4 x n_embd.
    intermediate_size: int | None = Field(None, ge=1)
    # The context length in tokens.
    block_size: int | None = Field(None, ge=2)
    # Dropout probability (the architectures default to 0).
    dropout: float | None = Field(None, ge=0.0, lt=1.0)
    # Biases in the linear layers and LayerNorms.
    bias: bool | None = None
    # bidirectional attention makes a model a masked LM by default.
    attention_type: Literal[ATTENTION_TYPES] | None = None
    # How positions are encoded.
    positional: Literal[POSITIONAL_ENCODINGS] | None = None
    # LayerNorm before (pre) or after (post) each sub-layer.
    norm_position: Literal[NORM_POSITIONS] | None = None
    # The MLP's activation: gelu is exact (BERT), gelu_tanh the tanh approximation (GPT-2).
    activation: Literal[ACTIVATIONS] | None = None
    # The norms' epsilon.
    layer_norm_eps: float | None = Field(None, gt=0.0)
    # layernorm or rmsnorm, for every norm of a transformer.
    norm: Literal[NORMS] | None = None
    # Normalise each head's queries and keys (RMS over the head's channels) before attention.
    qk_norm: bool | None = None
    # The output projection shares the token embedding's weight (transformers and lstm, gru, rnn).
    tie_weights: bool | None = None
    # The projections into the residual stream (and an untied output head) start at zero.
    zero_init_projections: bool | None = None
    # > 0: vocabulary logits are logit_softcap * tanh(logits / logit_softcap); 0: not capped.
    logit_softcap: float | None = Field(None, ge=0.0)
    # Token-type (sentence A/B) embeddings; 0: none.
    type_vocab_size: int | None = Field(None, ge=0)
    # hybrid only: two_stack (a bidirectional and a causal stack) or shared (one stack, both objectives).
    hybrid_design: Literal["two_stack", "shared"] | None = None
    # lstm, gru, rnn: the size of the recurrent state.
    hidden_size: int | None = Field(None, ge=1)
    # lstm, gru, rnn: read both directions (a masked LM by default).
    bidirectional: bool | None = None
    # hf only: the dtype the Hugging Face weights load in.
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None, validation_alias=alias("dtype", "torch_dtype"))
    # hf only: a Hugging Face model directory or hub name, and whether to run code it ships.
    hf_name_or_path: str | None = None
    # hf only: let transformers run Python code that the model directory ships.
    trust_remote_code: bool = False
    # hf only: recompute activations in the backward pass, to save memory.
    gradient_checkpointing: bool | None = None
    # How a fresh run's token embedding starts: random, or ppmi (co-occurrence vectors of the training
    # data's sentences, in seconds; docs/models.md "Co-occurrence-initialised embeddings").
    init_embeddings: Literal["random", "ppmi"] = "random"

    def architecture_values(self) -> dict:
        """The keys that configure the architecture itself, with unset ones left out."""
        meta = ({"architecture", "preset", "init_embeddings"} if self.architecture == "hf"
                else {"architecture", "preset", "dtype", "trust_remote_code", "init_embeddings"})
        return {k: v for k, v in self.model_dump().items() if k not in meta and v is not None}


class TaskSection(Section):
    """What the run learns: the objective or finetuning task, and its settings (docs/tasks.md)."""
    # None: the architecture's natural objective (causal_lm for gpt, masked_lm for bert).
    type: str | None = None
    # masked_lm, hybrid, replaced_token_detection: the share of tokens masked.
    mlm_probability: float = Field(0.15, gt=0.0, lt=1.0)
    # replaced_token_detection: the generator's width as a share of the discriminator's n_embd.
    generator_size: float = Field(0.25, gt=0.0, le=1.0)
    # replaced_token_detection: loss = generator MLM loss + rtd_weight x discriminator BCE (ELECTRA: 50).
    rtd_weight: float = Field(50.0, gt=0.0)
    # Language-model objectives: pad each batch's length up to a multiple of this.
    pad_to_multiple_of: int | None = Field(None, ge=1)
    # ---- hybrid: causal_ratio (shared design) is the share of causal batches, loss_weights
    # (two_stack design) the [mlm, clm] weights of the two objectives' losses (default [0.5, 0.5]).
    # The shared design's share of causal batches.
    causal_ratio: float = Field(0.5, ge=0.0, le=1.0)
    # The two_stack design's [mlm, clm] loss weights; None: [0.5, 0.5].
    loss_weights: list[float] | None = None
    # ---- finetuning tasks (sequence_classification, token_classification, sequence_scoring) ----
    # The label set is read from the training split; num_labels, when given, must agree with it.
    num_labels: int | None = Field(None, ge=1)
    # Several labels per example: a JSON list in jsonl, or label_separator-joined text in tsv/csv.
    multi_label: bool = False
    # multi_label in tsv or csv: the separator between the labels of an example.
    label_separator: str = ","
    # None: `last` for causal backbones, `cls` for bidirectional ones.
    pooler: Literal[POOLERS] | None = None
    # linear, or sequential (dropout, linear, GELU, dropout, linear).
    head: Literal[HEADS] = "linear"
    # Dropout in the task head.
    head_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    # None: cross_entropy (bce when multi_label, mse for scoring).
    criterion: Literal[CRITERIA] | None = None
    # cross_entropy: the share of the target spread over the other labels.
    label_smoothing: float = Field(0.0, ge=0.0, lt=1.0)
    # cross_entropy: one weight per label, in the label set's order (numeric for integer labels, else alphabetical).
    class_weights: list[float] | None = None
    # bitempered: t1 < 1 bounds the loss of outliers.
    bitempered_t1: float = Field(0.8, gt=0.0, le=1.0)
    # bitempered: t2 > 1 gives heavier tails.
    bitempered_t2: float = Field(1.2, ge=1.0)
    # sequence_scoring: `sigmoid` bounds the score to [0, 1] (a bounded scorer); `none` is plain regression.
    score_activation: Literal["sigmoid", "none"] = "sigmoid"
    # Rescale targets to [0, 1] with the training split's min and max (kept in the checkpoint, so
    # predictions come back in the original scale). Needed with `sigmoid` for targets outside [0, 1].
    normalize_targets: bool = True
    # ---- sentence-level objectives (span_contrastive, span_bag_of_words) ----
    # span_contrastive: the span vectors' cosine similarities are divided by this before the softmax.
    temperature: float = Field(0.05, gt=0.0)
    # Project the pooled span vectors to this width before the loss (the projection is left behind
    # at finetuning); None: the loss reads the pooled vectors themselves.
    projection_size: int | None = Field(None, ge=1)
    # The weight of the model's own token objective on the same units (masked LM for bidirectional
    # models, causal LM for causal ones), added to the sentence loss; 0: the sentence objective alone.
    lm_weight: float = Field(0.0, ge=0.0)
    # Each of the two spans cut from a unit holds at least this many tokens; shorter units are left out.
    min_span_tokens: int = Field(2, ge=1)



class LossModifiersSection(Section):
    """Loss modifiers (model_foundry/models/heads/loss_modifiers.py says what each computes)."""

    # false switches every modifier off at once.
    enabled: bool = Field(True, validation_alias=alias("enabled", "loss_modifiers_enabled"))
    # Weight each token's loss by 1 + weight x H(p) / log V: uncertain tokens count more.
    entropy_modifier_enabled: bool = False
    # Entropy weighting's weight.
    entropy_modifier_weight: float = Field(1.0, ge=0.0)
    # Smooth the targets: (1 - factor) on the true token, factor spread uniformly.
    target_smoothing_enabled: bool = False
    # Target smoothing's factor.
    target_smoothing_factor: float = Field(0.1, ge=0.0, lt=1.0)
    # Weight a sequence's tokens by (r / r_b)^power (r_b its share of target tokens, r the batch's).
    mask_ratio_weight_enabled: bool = False
    # Mask-ratio weighting's power.
    mask_ratio_weight_power: float = Field(0.5, ge=0.0)

    def pipeline_settings(self) -> dict:
        """The flat dict `create_loss_modifier_pipeline` takes (the keys of this section, flattened)."""
        return {"loss_modifiers_enabled": self.enabled, **self.model_dump(exclude={"enabled"})}


class LoggingSection(Section):
    """Where metrics go besides the terminal."""
    # Write metrics/train.csv and metrics/eval.csv.
    csv: bool = True
    # Write tensorboard/ (the tensorboard extra).
    tensorboard: bool = False
    # Log to Weights & Biases (the wandb extra).
    wandb: bool = False
    # W&B without an account or network: "offline" writes a local run that `wandb sync` uploads.
    wandb_mode: Literal["online", "offline"] = "offline"
    # The W&B project.
    project: str = "model-foundry"


class FoundryConfig(Section):
    """A run's whole config: one section per stage (docs/config-reference.md lists every key)."""
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

    @model_validator(mode="after")
    def ppmi_embeddings_start_a_model(self) -> "FoundryConfig":
        """The co-occurrence vectors start a model from scratch: weights loaded on top would replace them."""
        if self.model.init_embeddings == "random":
            return self
        transfer = self.transfer
        loaded = {"model.architecture: hf": self.model.architecture == "hf",
                  "transfer.init_from_checkpoint": bool(transfer.init_from_checkpoint and transfer.load_weights),
                  "training.resume_from": bool(self.training.resume_from)}
        clash = [name for name, used in loaded.items() if used]
        if clash:
            raise ValueError(f"model.init_embeddings: {self.model.init_embeddings} starts the token embedding of a "
                             f"model trained from scratch, but {clash[0]} loads pretrained weights over it; remove "
                             "one of the two")
        return self
