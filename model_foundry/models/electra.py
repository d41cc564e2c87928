"""ELECTRA (Clark et al. 2020): a small masked-LM generator and a discriminator of replaced tokens.

Masked LM learns from the ~15% of positions it masks. ELECTRA keeps that cloze task for a small
generator, fills each masked position with a token SAMPLED from the generator's prediction, and
trains the discriminator to tell, at EVERY real position, whether the token is the original or a
replacement: every position teaches the discriminator, which is the network that is kept. The
loss is `generator MLM loss + rtd_weight * discriminator binary cross-entropy` (ELECTRA: 50, since
the binary loss is far smaller than a cross-entropy over the vocabulary). No gradient flows
through the sampling, so the generator learns only from its own cloze loss. A sampled token that
equals the original counts as original, as in the paper.

Modules, so that every consumer of a BERT checkpoint works on this one:

- `backbone`: the discriminator, a BERT-layout `TransformerBackbone` of the configured size.
  Finetuning loads its `backbone.*` weights and nothing else; `model(ids).logits` are its
  per-position "replaced" logits.
- `discriminator_head`: dense, activation, one logit per position (Hugging Face
  `ElectraDiscriminatorPredictions`).
- `generator`: the same depth, `generator_size` times as wide, with whole heads of the
  discriminator's head size. It reads the discriminator's embedding layer (token, position and
  segment embeddings and their LayerNorm are shared, as in ELECTRA) through a projection to its
  own width, and its MLM head projects back to the embedding width before the decoder tied to
  the shared token embedding. `masked_lm_logits` (fill-mask) uses it.
"""
from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_foundry.errors import UserError
from model_foundry.models.backbones.positional import RotaryEmbedding
from model_foundry.models.backbones.normalization import norm_layer
from model_foundry.models.backbones.transformer import (ACTIVATIONS, TRANSFORMER_PRESETS, TransformerBackbone,
                                                        TransformerBlock, TransformerConfig)
from model_foundry.models.base import (IGNORE_INDEX, BaseLanguageModel, ModelOutput, init_normal, resized_parameter,
                                       token_loss)
from model_foundry.models.bert import BertConfig, MaskedLMHead
from model_foundry.models.registry import register_architecture


@dataclass
class ElectraConfig(BertConfig):
    """The discriminator's transformer settings (BERT's defaults) plus the generator's size and the loss weight."""

    generator_size: float = 0.25  # generator width / discriminator width (task.generator_size)
    rtd_weight: float = 50.0  # weight of the discriminator's loss (task.rtd_weight)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.generator_size <= 1.0:
            raise UserError(f"task.generator_size is {self.generator_size}; the generator's width is that share of "
                            "model.n_embd, so it must be in (0, 1] (ELECTRA uses 0.25 to 0.5).")
        if self.rtd_weight <= 0.0:
            raise UserError(f"task.rtd_weight is {self.rtd_weight}; it must be positive (ELECTRA uses 50).")
        if self.attention_type != "bidirectional":
            raise UserError(f"model.attention_type is {self.attention_type!r}, but task.type replaced_token_detection "
                            "needs a bidirectional discriminator (each position is judged in its whole context); use "
                            "model.architecture: bert, or set model.attention_type: bidirectional.")

    def generator_config(self) -> TransformerConfig:
        """The generator's transformer: same depth and layout, `generator_size` of the width.

        Its heads keep about the discriminator's head size (ELECTRA's generators keep 64-channel
        heads and have fewer of them), so the width is rounded to whole heads; rotary positions
        need an even head size.
        """
        width = max(1, round(self.generator_size * self.n_embd))
        heads = max(1, round(width / self.head_dim))
        head_size = max(1, round(width / heads))
        if self.positional == "rotary":
            head_size += head_size % 2
        width = heads * head_size
        values = {f.name: getattr(self, f.name) for f in fields(TransformerConfig)}
        mlp = max(1, round(self.mlp_size * width / self.n_embd))
        return TransformerConfig(**{**values, "n_embd": width, "n_head": heads, "intermediate_size": mlp})


@dataclass
class ElectraOutput(ModelOutput):
    """`logits`: the discriminator's "replaced" logit per position (batch, time).

    With labels (a masked batch): `mlm_logits` are the generator's vocabulary logits at the masked
    positions only (num_masked, vocab, row-major), `corrupted_ids` the input the discriminator
    read, `replaced` its targets (True where the token differs from the original), and `loss` is
    `mlm_loss + rtd_weight * rtd_loss`.
    """

    mlm_logits: Tensor | None = None
    mlm_loss: Tensor | None = None
    rtd_loss: Tensor | None = None
    corrupted_ids: Tensor | None = None
    replaced: Tensor | None = None


class Generator(nn.Module):
    """A narrow bidirectional transformer on the discriminator's embeddings, with an MLM head."""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        own = config.generator_config()
        self.project = nn.Linear(config.n_embd, own.n_embd, bias=config.bias) if own.n_embd != config.n_embd else None
        self.blocks = nn.ModuleList(TransformerBlock(own) for _ in range(own.n_layer))
        self.final_norm = norm_layer(own) if own.norm_position == "pre" else None
        self.rotary = RotaryEmbedding(own.head_dim, own.block_size) if own.positional == "rotary" else None
        self.head = MaskedLMHead(config, input_width=own.n_embd)

    def forward(self, shared: TransformerBackbone, input_ids: Tensor, attention_mask: Tensor | None,
                token_type_ids: Tensor | None) -> Tensor:
        """Hidden states (batch, time, generator width); `shared` is the discriminator, whose embeddings it reads."""
        length = input_ids.size(1)
        padding = attention_mask if attention_mask is not None and not bool(attention_mask.all()) else None
        positions = shared.default_positions(padding, length, 0, input_ids.device)
        x = shared.embed(input_ids, token_type_ids, positions)
        if self.project is not None:
            x = self.project(x)
        mask, is_causal = shared.attention_pattern(padding, length)
        for block in self.blocks:
            x = block(x, mask, is_causal, self.rotary, positions)
        return self.final_norm(x) if self.final_norm is not None else x


class DiscriminatorHead(nn.Module):
    """Hidden state -> dense -> activation -> one logit: is this token a replacement?"""

    def __init__(self, config: ElectraConfig):
        super().__init__()
        self.dense = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.activation = ACTIVATIONS[config.activation]()
        self.out = nn.Linear(config.n_embd, 1, bias=config.bias)

    def forward(self, hidden: Tensor) -> Tensor:
        return self.out(self.activation(self.dense(hidden))).squeeze(-1)


def sample_tokens(logits: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """One token per row of `logits` (rows, vocab), drawn from their softmax (ELECTRA samples at temperature 1)."""
    return torch.multinomial(torch.softmax(logits.float(), dim=-1), 1, generator=generator).squeeze(-1)


@register_architecture("electra")
class Electra(BaseLanguageModel):
    model_type = "electra"
    default_task = "replaced_token_detection"
    default_tokenizer = "wordpiece"
    only_default_task = True
    supports_generation = False
    config_class = ElectraConfig
    presets = TRANSFORMER_PRESETS  # the discriminator's sizes

    def __init__(self, config: ElectraConfig):
        super().__init__(config)
        self.backbone = TransformerBackbone(config)
        self.discriminator_head = DiscriminatorHead(config)
        self.generator = Generator(config)
        self.apply(init_normal)
        self.tie_weights()

    def get_output_embeddings(self) -> nn.Linear:
        """The generator's decoder: the one output projection tied to the token embedding."""
        return self.generator.head.decoder

    def resize_token_embeddings(self, new_num_tokens: int) -> nn.Embedding:
        embedding = super().resize_token_embeddings(new_num_tokens)
        head = self.generator.head
        if head.bias is not None:
            head.bias = resized_parameter(head.bias, new_num_tokens, 0.0)
        return embedding

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                token_type_ids: Tensor | None = None, output_hidden_states: bool = False, *,
                sampling_generator: torch.Generator | None = None) -> ElectraOutput:
        """Without labels: the discriminator's logits for `input_ids`. With masked-LM labels (the
        masked batch of `MaskedLMCollator`): the whole replaced-token-detection objective.

        `sampling_generator` draws the replacements (the global RNG when None).
        """
        if labels is None:
            hidden, all_hidden = self.backbone(input_ids, attention_mask, token_type_ids, output_hidden_states)
            return ElectraOutput(logits=self.discriminator_head(hidden), hidden_states=all_hidden)
        masked = labels != IGNORE_INDEX
        generator_hidden = self.generator(self.backbone, input_ids, attention_mask, token_type_ids)
        # The vocabulary projection only where something was masked: it is most of the generator's work.
        mlm_logits = self.generator.head(generator_hidden[masked])
        mlm_loss = token_loss(mlm_logits, labels[masked])
        original = torch.where(masked, labels, input_ids)
        corrupted = original.clone()
        corrupted[masked] = sample_tokens(mlm_logits.detach(), sampling_generator)  # no gradient through sampling
        replaced = corrupted != original
        hidden, all_hidden = self.backbone(corrupted, attention_mask, token_type_ids, output_hidden_states)
        logits = self.discriminator_head(hidden)
        real = attention_mask.bool() if attention_mask is not None else torch.ones_like(replaced)
        rtd_loss = F.binary_cross_entropy_with_logits(logits.float()[real], replaced[real].float())
        return ElectraOutput(loss=mlm_loss + self.config.rtd_weight * rtd_loss, logits=logits,
                             hidden_states=all_hidden, mlm_logits=mlm_logits, mlm_loss=mlm_loss, rtd_loss=rtd_loss,
                             corrupted_ids=corrupted, replaced=replaced)

    def masked_lm_logits(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> Tensor:
        """The generator's vocabulary logits (batch, time, vocab), for filling in masks."""
        return self.generator.head(self.generator(self.backbone, input_ids, attention_mask, None))

