"""BERT: a bidirectional transformer encoder with a masked-language-model head.

Post-LN blocks, exact GELU, segment (token type) embeddings, a LayerNorm on the embeddings, and
BERT's MLM head: a dense transform, then a decoder tied to the token embedding with its own output
bias. One departure from BERT by default: rotary positions. With learned absolute positions a small
masked LM must first learn from the position table where its neighbours are, and at small budgets it
sits on the unigram plateau for thousands of steps (docs/measurements.md, "Defaults that learn at small budgets");
rotary attention knows relative offsets from the first step. `positional: learned` gives BERT's
exact layout back (needed to export to `transformers`' BertForMaskedLM).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from model_foundry.models.backbones.normalization import norm_layer
from model_foundry.models.backbones.transformer import (ACTIVATIONS, MODERN_RECIPE, TRANSFORMER_PRESETS,
                                                        TransformerBackbone, TransformerConfig, soft_cap)
from model_foundry.models.base import (BaseLanguageModel, ModelOutput, init_normal, init_residual_projections,
                                       resized_parameter)
from model_foundry.models.registry import register_architecture


@dataclass
class BertConfig(TransformerConfig):
    """BERT-base's settings, with rotary positions (see the module docstring)."""

    vocab_size: int = 30522
    block_size: int = 512
    attention_type: str = "bidirectional"
    positional: str = "rotary"
    norm_position: str = "post"
    activation: str = "gelu"
    layer_norm_eps: float = 1e-12
    type_vocab_size: int = 2
    embedding_norm: bool = True


class MaskedLMHead(nn.Module):
    """Hidden state -> dense -> activation -> norm -> vocabulary logits (+ a per-token bias), soft-capped
    when the config says so (`model.logit_softcap`).

    `input_width` is the hidden state's width when it differs from the embedding's (ELECTRA's narrow
    generator): the dense layer maps it to the embedding width, which the tied decoder needs.
    """

    def __init__(self, config: BertConfig, input_width: int | None = None):
        super().__init__()
        self.dense = nn.Linear(input_width or config.n_embd, config.n_embd, bias=config.bias)
        self.activation = ACTIVATIONS[config.activation]()
        self.norm = norm_layer(config)
        self.decoder = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        # The output bias lives outside `decoder` because the decoder's weight is the (tied) embedding.
        self.bias = nn.Parameter(torch.zeros(config.vocab_size)) if config.bias else None
        self.logit_softcap = config.logit_softcap

    def forward(self, hidden: Tensor) -> Tensor:
        logits = self.decoder(self.norm(self.activation(self.dense(hidden))))
        return soft_cap(logits + self.bias if self.bias is not None else logits, self.logit_softcap)


@register_architecture("bert")
class Bert(BaseLanguageModel):
    model_type = "bert"
    default_task = "masked_lm"
    default_tokenizer = "wordpiece"
    supports_generation = False
    config_class = BertConfig
    presets = TRANSFORMER_PRESETS
    # The modern encoder is pre-norm too: post-norm's residual sums are renormalised at every layer, which
    # slows early training and needs the long warmups BERT used.
    recipes = {"classic": {}, "modern": {**MODERN_RECIPE, "norm_position": "pre"}}

    def __init__(self, config: BertConfig):
        super().__init__(config)
        self.backbone = TransformerBackbone(config)
        self.mlm_head = MaskedLMHead(config)
        self.apply(init_normal)
        if config.zero_init_projections:  # else BERT's own N(0, 0.02), unscaled
            init_residual_projections(self, config)
        self.tie_weights()

    def get_output_embeddings(self) -> nn.Linear:
        return self.mlm_head.decoder

    def resize_token_embeddings(self, new_num_tokens: int) -> nn.Embedding:
        embedding = super().resize_token_embeddings(new_num_tokens)
        if self.mlm_head.bias is not None:
            self.mlm_head.bias = resized_parameter(self.mlm_head.bias, new_num_tokens, 0.0)
        return embedding

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                token_type_ids: Tensor | None = None, output_hidden_states: bool = False,
                score_targets_only: bool = False) -> ModelOutput:
        """Vocabulary logits at every position; the loss counts only positions whose label is not -100."""
        return self.head_output(self.mlm_head, input_ids, attention_mask, labels, token_type_ids, output_hidden_states,
                                score_targets_only)
