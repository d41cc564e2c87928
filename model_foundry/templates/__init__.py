"""Commented experiment templates: `foundry new pretraining NAME --arch A` and `foundry new finetuning NAME --from RUN`.

What a template shows comes from the registered classes, so a new architecture or task brings its
own template defaults: an architecture's objective (`default_task`), its tokenizer
(`default_tokenizer`) and the settings of its config class (positions, LayerNorm placement,
attention); a finetuning task's usual columns (`default_columns`) and its `default_best_metric`.
"""
from model_foundry.templates.new_experiment import (clone_for_resume, new_finetuning, new_pretraining,
                                                    template_architectures)

__all__ = ["clone_for_resume", "new_finetuning", "new_pretraining", "template_architectures"]
