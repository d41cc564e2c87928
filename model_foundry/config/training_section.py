"""The `training` section of the config: the loop, its optimizer, schedule, evaluation, checkpoints,
precision, device and resuming (docs/training.md). `config/schema.py` gathers it with the other sections."""
from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from model_foundry.config.section import Section, alias


class TrainingSection(Section):
    """The loop: its length, batches, optimizer, schedule, evaluation, checkpoints, precision, device
    and resuming (docs/training.md)."""
    # Optimizer steps to train; wins over epochs when both are set.
    max_steps: int | None = Field(None, ge=1, validation_alias=alias("max_steps", "max_iters"))
    # Passes over the training data when max_steps is unset (neither set: 1 epoch).
    epochs: float | None = Field(None, gt=0.0)
    # Rows per micro-batch.
    batch_size: int = Field(32, ge=1)
    # Micro-batches per optimizer step: a step's global batch is batch_size x this on any number of processes.
    gradient_accumulation_steps: int = Field(1, ge=1)
    # The peak learning rate.
    learning_rate: float = Field(3e-4, gt=0.0, validation_alias=alias("learning_rate", "lr"))
    # The end of cosine and linear decay (None: a tenth of the peak) and plateau's floor (None: a thousandth).
    min_lr: float | None = Field(None, ge=0.0)
    # Linear warmup from 0 over this many steps; set this or warmup_ratio, not both.
    warmup_steps: int | None = Field(None, ge=0, validation_alias=alias("warmup_steps", "warmup_iters"))
    # Linear warmup over this share of the run's steps.
    warmup_ratio: float | None = Field(None, ge=0.0, lt=1.0)
    # cosine | linear (decay to min_lr after warmup) | constant (the peak after warmup; warmup_only and
    # transfer are aliases of it) | plateau (reduce by plateau_factor after plateau_patience evals without
    # a better val loss). Per-part rates and unfreezing come from the transfer section under all of them.
    lr_schedule: Literal["cosine", "linear", "constant", "warmup_only", "transfer", "plateau"] = "cosine"
    # plateau: evaluations without a better val loss before the rate is reduced.
    plateau_patience: int = Field(3, ge=1)
    # plateau: what the rate is multiplied by at each reduction.
    plateau_factor: float = Field(0.5, gt=0.0, lt=1.0)
    # adamw for every weight, or muon: Muon (orthogonalised momentum, torch.optim.Muon) for the 2-D
    # weight matrices of the hidden blocks, AdamW for embeddings, norms, biases, heads and poolers
    # (docs/training.md#optimizers-adamw-and-muon). Not with distributed: fsdp.
    optimizer: Literal["adamw", "muon"] = "adamw"
    # muon: the peak rate of the Muon-updated matrices (Keller Jordan's convention: scaled by
    # sqrt(max(1, rows/cols)) per matrix); learning_rate stays the AdamW groups' peak, and the schedule
    # shapes both alike.
    muon_learning_rate: float = Field(0.02, gt=0.0)
    # muon: the Muon matrices' Nesterov momentum.
    muon_momentum: float = Field(0.95, ge=0.0, lt=1.0)
    # Decoupled weight decay, never applied to biases and norms (nor embeddings, by default); per step a matrix
    # shrinks by its group's rate x this (Muon's rate for the Muon matrices).
    weight_decay: float = Field(0.1, ge=0.0)
    # Decay the embedding tables too (nanoGPT decays its tied token embedding; BERT and GPT-2 never
    # did); with tied weights the shared matrix is the embedding's and follows this key.
    decay_embeddings: bool = False
    # AdamW's beta1.
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    # AdamW's beta2.
    beta2: float = Field(0.95, ge=0.0, lt=1.0)
    # Clip the gradients' global norm to this; 0 or None: no clipping.
    grad_clip: float | None = Field(1.0, ge=0.0)
    # Evaluate on the val split every this many steps.
    eval_interval: int = Field(200, ge=1)
    # Batches per evaluation during training (None: the whole split); the final evaluation uses whole splits.
    eval_iters: int | None = Field(None, ge=1)
    # Write a row of metrics/train.csv every this many steps (the loop waits for the device only then).
    log_interval: int = Field(10, ge=1)
    # Also save checkpoints/step_N every this many steps; None: only last and best.
    save_interval: int | None = Field(None, ge=1)
    # How many step_N checkpoints to keep (the newest).
    keep_last_n: int = Field(2, ge=0)
    # Also keep checkpoints/tokens_N at the first step by which the run has trained on N real input
    # tokens (every process's), for each N of this increasing list; never rotated by keep_last_n.
    save_at_tokens: list[int] = []
    # Also keep checkpoints/words_N at the first step by which the run's windows stand for N words
    # of the corpus (whitespace-separated; docs/training.md says how they are counted), for each N
    # of this increasing list (BabyLM: 1000000, 2000000, ...); pretraining on text, not .pt files.
    save_at_words: list[int] = []
    # The val metric that picks checkpoints/best and stops early; None: the task's (loss for pretraining,
    # accuracy, token_accuracy or pearson for finetuning).
    best_metric: str | None = None
    # Stop after this many evaluations without a better best_metric.
    early_stopping_patience: int | None = Field(None, ge=1)
    # auto: bf16 where the hardware runs it natively, fp16 with loss scaling on older CUDA GPUs, else fp32.
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    # auto: CUDA, then Apple's MPS, then the CPU.
    device: Literal["auto", "cpu", "cuda", "mps"] = "auto"
    # Run the model through torch.compile.
    compile: bool = False
    # torch.compile's mode when compile is true. reduce-overhead replays each step as CUDA graphs: far
    # fewer kernel launches where small models leave a GPU launch-bound; it records a graph per input
    # shape, so it suits pretraining's fixed-length windows more than length-bucketed finetuning.
    compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default"
    # How several processes (--nproc N, torchrun) share the model: ddp (a full copy each, gradients
    # all-reduced) or fsdp (FSDP2: parameters, gradients and optimizer state sharded).
    distributed: Literal["ddp", "fsdp"] = "ddp"
    # Continue this run from checkpoints/last (a fresh start when there is none yet).
    resume: bool = False
    # Start this run from another run's checkpoint (a checkpoint or run directory), with its full state.
    resume_from: str | None = None
    # resume_from: every weight must match; false loads what matches and lists the rest.
    strict: bool = True
    # resume_from: take the weights only, not the optimizer state or the step.
    load_only_model_state: bool = False

    @field_validator("save_at_tokens", "save_at_words")
    @classmethod
    def increasing_amounts(cls, amounts: list[int]) -> list[int]:
        """Milestones are positive and strictly increasing, so each names one checkpoint, in order."""
        if any(n < 1 for n in amounts):
            raise ValueError("every amount must be a positive whole number")
        if any(later <= earlier for earlier, later in zip(amounts, amounts[1:])):
            raise ValueError(f"amounts must be strictly increasing (sorted, no repeats), for example "
                             f"{sorted(set(amounts))}")
        return amounts

    @model_validator(mode="after")
    def one_warmup(self) -> "TrainingSection":
        if self.warmup_steps is not None and self.warmup_ratio is not None:
            raise ValueError("set either warmup_steps or warmup_ratio, not both")
        return self

    @model_validator(mode="after")
    def muon_needs_whole_matrices(self) -> "TrainingSection":
        """Refused even in one process, where fsdp has no effect: such a config would fail once scaled out."""
        if self.optimizer == "muon" and self.distributed == "fsdp":
            raise ValueError("training.optimizer: muon cannot be used with training.distributed: fsdp. Muon "
                             "orthogonalises each weight matrix as a whole, while FSDP2 keeps only a shard of "
                             "each matrix in every process, and Model Foundry has no sharded Muon. Use "
                             "training.distributed: ddp (every process holds whole matrices), or keep fsdp with "
                             "training.optimizer: adamw")
        return self
