"""Keys that have no effect in a run: one warning line each, never an error.

Each list is a pure function of the config and, where the answer depends on the data, of the facts
about it that decide (is there a val split, how many batches make an epoch), so a test asks it
without building a trainer.
"""
from __future__ import annotations

import sys

from model_foundry.config.schema import FoundryConfig, TrainingSection
from model_foundry.ranks import is_writer
from model_foundry.training.schedules import ignored_schedule_keys, total_steps
from model_foundry.training.unfreezing import ignored_unfreezing_keys


def warn(message: str) -> None:
    """One warning line on stderr: a key that has no effect here is worth a line, never an error.
    Only the first process says it: N workers would say the same N times."""
    if is_writer():
        print(f"warning: {message}", file=sys.stderr)


def ignored_training_keys(config: FoundryConfig, has_val: bool, batches_per_epoch: int,
                          alone: bool = True) -> list[str]:
    """Every training and transfer key that has no effect in this run, one message each (the trainer
    prints them at the start). `has_val`: the data has a val split; `batches_per_epoch`: micro-batches
    in one pass over the training data; `alone`: one process trains."""
    training = config.training
    steps_per_epoch = batches_per_epoch / training.gradient_accumulation_steps
    return [*ignored_length_keys(training), *ignored_validation_keys(training, has_val),
            *ignored_schedule_keys(training, has_val),
            *ignored_unfreezing_keys(config.transfer, steps_per_epoch, total_steps(training, batches_per_epoch)),
            *ignored_checkpoint_keys(training), *ignored_distributed_keys(training, alone),
            *ignored_optimizer_keys(config)]


def ignored_length_keys(tc: TrainingSection) -> list[str]:
    """`epochs` beside `max_steps`: the finetuning template sets `epochs`, so a `--set training.max_steps`
    beside it is common, and a silently shorter or longer run would be a surprise."""
    if tc.max_steps is not None and tc.epochs is not None:
        return [f"training.max_steps ({tc.max_steps}) and training.epochs ({tc.epochs:g}) are both set: "
                "max_steps wins, epochs has no effect."]
    return []


def ignored_validation_keys(tc: TrainingSection, has_val: bool) -> list[str]:
    """The keys that act on validation results, when there is no val split to produce any."""
    if has_val:
        return []
    effects = {"early_stopping_patience": (tc.early_stopping_patience, "the run never stops early"),
               "best_metric": (tc.best_metric, "checkpoints/best is never written"),
               "eval_iters": (tc.eval_iters, "nothing is evaluated during training")}
    return [f"training.{key} has no effect without a val split ({effect}). Set data.val or data.val_fraction."
            for key, (value, effect) in effects.items() if value is not None]


def ignored_checkpoint_keys(tc: TrainingSection) -> list[str]:
    """`keep_last_n` prunes step checkpoints, which only `save_interval` writes."""
    if tc.save_interval is None and tc.keep_last_n != TrainingSection.model_fields["keep_last_n"].default:
        return ["training.keep_last_n has no effect without training.save_interval (no step checkpoints "
                "are written)."]
    return []


def ignored_distributed_keys(tc: TrainingSection, alone: bool) -> list[str]:
    """`training.distributed` chooses how several processes share the model; one has nothing to share."""
    if alone and tc.distributed != TrainingSection.model_fields["distributed"].default:
        return [f"training.distributed: {tc.distributed} has no effect in one process (start several with "
                "--nproc N or torchrun)."]
    return []


def ignored_optimizer_keys(config: FoundryConfig) -> list[str]:
    """The Muon settings under AdamW, and Muon under LoRA, whose trainable weights all stay with AdamW
    (`muon.hidden_matrices`: the adapters' factors, head and pooler; the matrices Muon would
    take are LoRA's frozen base weights)."""
    tc, defaults = config.training, TrainingSection.model_fields
    if tc.optimizer == "adamw":
        return [f"training.{key} has no effect with training.optimizer: adamw (only muon uses it)."
                for key in ("muon_learning_rate", "muon_momentum") if getattr(tc, key) != defaults[key].default]
    if config.lora.enabled:
        return ["training.optimizer: muon has no effect with lora.enabled: the LoRA factors, the head and the "
                "pooler train with AdamW, and the matrices Muon updates are LoRA's frozen base weights."]
    return []


def ignored_start_keys(config: FoundryConfig) -> list[str]:
    """The model and checkpoint keys that have nothing to act on in this run (said before it starts)."""
    training, transfer = config.training, config.transfer
    messages = []
    if config.model.dtype is not None and config.model.architecture != "hf":
        messages.append(f"model.dtype has no effect on architecture {config.model.architecture!r} (it loads Hugging "
                        "Face models in that dtype); its weights stay float32, and training.precision sets mixed "
                        "precision.")
    if not transfer.load_weights and not transfer.init_from_checkpoint:
        messages.append("transfer.load_weights: false has no effect without transfer.init_from_checkpoint (the model "
                        "starts from random weights anyway).")
    if not transfer.strict and not transfer.init_from_checkpoint:
        messages.append("transfer.strict: false has no effect without transfer.init_from_checkpoint.")
    if training.resume_from is None:
        for key, value, default in (("load_only_model_state", training.load_only_model_state, False),
                                    ("strict", training.strict, True)):
            if value != default:
                messages.append(f"training.{key}: {str(value).lower()} has no effect without training.resume_from.")
    return messages
