"""GPT: a causal transformer language model, GPT-2's architecture by default.

Pre-LN blocks, learned positions, tanh-approximated GELU, and an output head tied to the token
embedding. Any transformer setting can be changed (rotary positions, post-LN, bidirectional
attention, ...); `GPTConfig` only fixes the defaults.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from torch import Tensor, nn

from model_foundry.models.backbones.attention import KeyValue
from model_foundry.models.backbones.transformer import TRANSFORMER_PRESETS, TransformerBackbone, TransformerConfig
from model_foundry.models.base import INIT_STD, BaseLanguageModel, ModelOutput, init_normal
from model_foundry.models.registry import register_architecture

RESIDUAL_PROJECTIONS = ("attn.proj.weight", "mlp.proj.weight")


@dataclass
class GPTConfig(TransformerConfig):
    """GPT-2's settings (the `TransformerConfig` defaults): causal, pre-LN, gelu_tanh, eps 1e-5."""


def scale_residual_projections(model: nn.Module, n_layer: int) -> None:
    """GPT-2 scales the projections that write into the residual stream by 1/sqrt(2 * n_layer), so
    the stream's variance does not grow with depth (two residual branches per block)."""
    residual_std = INIT_STD / math.sqrt(2 * n_layer)
    for name, param in model.named_parameters():
        if name.endswith(RESIDUAL_PROJECTIONS):
            nn.init.normal_(param, mean=0.0, std=residual_std)


@register_architecture("gpt", "gpt2")
class GPT(BaseLanguageModel):
    model_type = "gpt"
    default_task = "causal_lm"
    supports_generation = True
    config_class = GPTConfig
    presets = TRANSFORMER_PRESETS

    def __init__(self, config: GPTConfig):
        super().__init__(config)
        self.backbone = TransformerBackbone(config)
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.apply(init_normal)
        scale_residual_projections(self, config.n_layer)
        self.tie_weights()

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                token_type_ids: Tensor | None = None, output_hidden_states: bool = False,
                score_targets_only: bool = False) -> ModelOutput:
        """Next-token logits (batch, time, vocab); `labels` are already the next tokens (not shifted here)."""
        return self.head_output(self.lm_head, input_ids, attention_mask, labels, token_type_ids, output_hidden_states,
                                score_targets_only)

    def decode_step(self, input_ids: Tensor, attention_mask: Tensor,
                    cache: list[KeyValue] | None = None) -> tuple[Tensor, list[KeyValue]]:
        """`BaseLanguageModel.decode_step` with a key/value cache: a step computes only the new tokens."""
        hidden, _, cache = self.backbone(input_ids, attention_mask, past_key_values=cache, use_cache=True)
        return self.lm_head(hidden[:, -1]), cache
