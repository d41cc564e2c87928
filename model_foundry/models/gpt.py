"""GPT: a causal transformer language model, GPT-2's architecture by default.

Pre-LN blocks, learned positions, tanh-approximated GELU, and an output head tied to the token
embedding. Any transformer setting can be changed (rotary positions, post-LN, bidirectional
attention, ...); `GPTConfig` only fixes the defaults, and `model.recipe: modern` changes them to
`MODERN_RECIPE`'s.
"""
from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from model_foundry.models.backbones.attention import KeyValueCache
from model_foundry.models.backbones.transformer import (MODERN_RECIPE, TRANSFORMER_PRESETS, OutputProjection,
                                                        TransformerBackbone, TransformerConfig)
from model_foundry.models.base import BaseLanguageModel, ModelOutput, init_normal, init_residual_projections
from model_foundry.models.registry import register_architecture


@dataclass
class GPTConfig(TransformerConfig):
    """GPT-2's settings (the `TransformerConfig` defaults): causal, pre-LN, gelu_tanh, eps 1e-5."""


@register_architecture("gpt", "gpt2")
class GPT(BaseLanguageModel):
    model_type = "gpt"
    default_task = "causal_lm"
    supports_generation = True
    config_class = GPTConfig
    presets = TRANSFORMER_PRESETS
    recipes = {"classic": {}, "modern": MODERN_RECIPE}

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        self.backbone = TransformerBackbone(config)
        self.lm_head = OutputProjection(config)
        self.apply(init_normal)
        init_residual_projections(self, config)
        self.tie_weights()

    def get_output_embeddings(self) -> OutputProjection:
        return self.lm_head

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                token_type_ids: Tensor | None = None, output_hidden_states: bool = False,
                score_targets_only: bool = False) -> ModelOutput:
        """Next-token logits (batch, time, vocab); `labels` are already the next tokens (not shifted here)."""
        return self.head_output(self.lm_head, input_ids, attention_mask, labels, token_type_ids, output_hidden_states,
                                score_targets_only)

    def decode_step(self, input_ids: Tensor, attention_mask: Tensor,
                    cache: list[KeyValueCache] | None = None) -> tuple[Tensor, list[KeyValueCache]]:
        """`BaseLanguageModel.decode_step` with a key/value cache: a step computes only the new tokens."""
        hidden, _, cache = self.backbone(input_ids, attention_mask, past_key_values=cache, use_cache=True)
        return self.lm_head(hidden[:, -1]), cache
