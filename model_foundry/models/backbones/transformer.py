"""The one transformer implementation that GPT and BERT (and later hybrids) are built from.

A `TransformerBlock` is attention plus MLP with residual connections; `norm_position` decides
where its two norms sit: "pre" (GPT-2: normalise each branch's input, one final norm after
the stack) or "post" (BERT: normalise each residual sum, no final norm). A
`TransformerBackbone` embeds tokens, runs the blocks and returns hidden states; heads are the
models' business.

`model.recipe` picks defaults for the layout: `classic` is GPT-2's and BERT's, `modern` the pieces
that made recent small-model training faster per step (`MODERN_RECIPE`); every piece is its own key.

Attention (backbones/attention.py) is `F.scaled_dot_product_attention`; the backbone gives it the
cheapest description of the pattern: no mask at all when it is given no attention mask,
`is_causal=True` for causal input without one. A given mask is always used, even if it hides
nothing: asking the device whether it does would be a host-device sync (and a `torch.compile` graph
break) on every forward, so callers that know a batch has no padding pass no mask (the trainer
drops such masks on the host). For generation the backbone also takes and returns each layer's keys
and values (`past_key_values`, `use_cache`), so a step only computes the new token.

Positions count real tokens only: in a left-padded row the first real token is at position 0,
so a prompt gets the same positions (and the same outputs) padded in a batch as alone.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model_foundry.config.choices import ATTENTION_TYPES, NORM_POSITIONS, NORMS, POSITIONAL_ENCODINGS
from model_foundry.errors import UserError, did_you_mean
from model_foundry.models.backbones.attention import KeyValueCache, SelfAttention
from model_foundry.models.backbones.normalization import norm_layer
from model_foundry.models.backbones.positional import RotaryEmbedding, sinusoidal_table



class ReLUSquared(nn.Module):
    """relu(x)^2: as cheap as ReLU, and it trained faster per step than GELU in modded-nanogpt's
    ablations (its activations are sparse like ReLU's, its gradient is smooth at the top)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x).square()


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "gelu_tanh": lambda: nn.GELU(approximate="tanh"),
    "relu": nn.ReLU,
    "silu": nn.SiLU,
    "relu2": ReLUSquared,
}
CHOICES: dict[str, tuple[str, ...]] = {
    "attention_type": ATTENTION_TYPES,
    "positional": POSITIONAL_ENCODINGS,
    "norm_position": NORM_POSITIONS,
    "activation": tuple(ACTIVATIONS),
    "norm": NORMS,
}

# model.recipe: modern. Rotary positions, RMSNorm and QK-norm, ReLU^2, no biases, an output head of its
# own that starts at zero, residual projections that start at zero (each block starts as the identity),
# and tanh soft-capped logits. The measurements behind each piece: docs/measurements.md, "The modern recipe".
MODERN_RECIPE: dict[str, object] = {
    "positional": "rotary", "norm": "rmsnorm", "qk_norm": True, "activation": "relu2", "bias": False,
    "tie_weights": False, "zero_init_projections": True, "logit_softcap": 15.0,
}

# Sizes shared by the transformer architectures. small is a quick-experiment model
# (~19M parameters plus embeddings); base is GPT-2 124M / BERT-base; large is GPT-2 medium /
# BERT-large. The MLP width follows as 4 * n_embd unless intermediate_size is set.
TRANSFORMER_PRESETS: dict[str, dict[str, int]] = {
    "small": {"n_layer": 6, "n_head": 8, "n_embd": 512},
    "base": {"n_layer": 12, "n_head": 12, "n_embd": 768},
    "large": {"n_layer": 24, "n_head": 16, "n_embd": 1024},
}


@dataclass
class TransformerConfig:
    """Settings of a transformer language model. The defaults are GPT-2 small's."""

    vocab_size: int = 50304  # GPT-2's 50257 rounded up to a multiple of 64: faster matmuls
    pad_token_id: int | None = None  # recorded for the pipeline; the model treats it like any token
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    intermediate_size: int | None = None  # MLP width; None means 4 * n_embd
    block_size: int = 1024  # the longest input; sizes the position tables
    dropout: float = 0.0  # 0 by default: on CPU dropout costs ~45% of throughput
    bias: bool = True  # biases of every Linear and LayerNorm
    attention_type: str = "causal"
    positional: str = "learned"
    norm_position: str = "pre"
    activation: str = "gelu_tanh"
    layer_norm_eps: float = 1e-5
    type_vocab_size: int = 0  # segment (sentence A/B) embeddings; 0 means none
    embedding_norm: bool = False  # a norm right after the embeddings (BERT)
    norm: str = "layernorm"  # layernorm | rmsnorm: every norm of the model
    qk_norm: bool = False  # normalise each head's queries and keys (RMS, per head) before attention
    tie_weights: bool = True  # the output projection shares the token embedding's weight
    zero_init_projections: bool = False  # residual projections (and an untied head) start at zero
    logit_softcap: float = 0.0  # > 0: vocabulary logits are c * tanh(logits / c); 0: uncapped

    def __post_init__(self) -> None:
        for key, valid in CHOICES.items():
            value = getattr(self, key)
            if value not in valid:
                raise UserError(f"model.{key} is {value!r}, which is not one of {', '.join(valid)}; "
                                f"{did_you_mean(str(value), valid)}")
        for key in ("vocab_size", "n_layer", "n_head", "n_embd", "block_size"):
            if getattr(self, key) < 1:
                raise UserError(f"model.{key} is {getattr(self, key)}; it must be a positive integer.")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model.dropout is {self.dropout}; it must be in [0, 1).")
        if self.logit_softcap < 0:
            raise UserError(f"model.logit_softcap is {self.logit_softcap}; it must be 0 (no cap) or a positive "
                            "bound on the logits, such as 15.")
        if self.n_embd % self.n_head:
            raise UserError(f"model.n_embd ({self.n_embd}) must be divisible by model.n_head ({self.n_head}), "
                            f"so that every head gets n_embd / n_head channels; for example n_embd="
                            f"{self.n_head * max(1, round(self.n_embd / self.n_head))}.")
        if self.positional == "rotary" and self.head_dim % 2:
            raise UserError(f"model.positional 'rotary' rotates channel pairs, so the head size n_embd / n_head "
                            f"({self.head_dim}) must be even; change model.n_embd or model.n_head.")

    @property
    def head_dim(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mlp_size(self) -> int:
        return self.intermediate_size or 4 * self.n_embd


def soft_cap(logits: Tensor, cap: float) -> Tensor:
    """cap * tanh(logits / cap) when cap > 0: logits stay in (-cap, cap), so no token's logit can run away
    early in training, while small logits pass almost unchanged."""
    return cap * torch.tanh(logits / cap) if cap > 0 else logits


class OutputProjection(nn.Linear):
    """The projection of hidden states onto the vocabulary, with the config's logit soft-cap."""

    def __init__(self, config: TransformerConfig):
        super().__init__(config.n_embd, config.vocab_size, bias=False)
        self.logit_softcap = config.logit_softcap

    def forward(self, hidden: Tensor) -> Tensor:
        return soft_cap(super().forward(hidden), self.logit_softcap)


class MLP(nn.Module):
    """The position-wise feed-forward network: widen, activate, project back."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.fc = nn.Linear(config.n_embd, config.mlp_size, bias=config.bias)
        self.activation = ACTIVATIONS[config.activation]()
        self.proj = nn.Linear(config.mlp_size, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: Tensor) -> Tensor:
        return self.dropout(self.proj(self.activation(self.fc(x))))


class TransformerBlock(nn.Module):
    """Attention then MLP, each a residual branch, with pre- or post-norm."""

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.pre_norm = config.norm_position == "pre"
        self.norm1 = norm_layer(config)
        self.attn = SelfAttention(config)
        self.norm2 = norm_layer(config)
        self.mlp = MLP(config)

    def forward(self, x: Tensor, mask: Tensor | None, is_causal: bool, rotary: RotaryEmbedding | None = None,
                positions: Tensor | None = None, cache: KeyValueCache | None = None) -> Tensor:
        """`positions` (batch or 1, time) for rotary attention; `cache` holds this layer's past keys and values."""
        if self.pre_norm:
            x = x + self.attn(self.norm1(x), mask, is_causal, rotary, positions, cache)
            return x + self.mlp(self.norm2(x))
        x = self.norm1(x + self.attn(x, mask, is_causal, rotary, positions, cache))
        return self.norm2(x + self.mlp(x))


class TransformerBackbone(nn.Module):
    """Embeddings, the stack of blocks and (pre-LN only) the final norm.

    `forward` returns the final hidden states, shape (batch, time, hidden_size), and, when asked,
    all hidden states as Hugging Face lays them out: a tuple of n_layer + 1 tensors, the embedding
    output first, then each block's output; for pre-LN models the last entry has the final norm
    applied, so `hidden_states[-1]` is always what a head reads.
    """

    def __init__(self, config: TransformerConfig):
        super().__init__()
        self.config = config
        self.hidden_size = config.n_embd
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        positional, length = config.positional, config.block_size
        self.position_embedding = nn.Embedding(length, config.n_embd) if positional == "learned" else None
        sinusoidal = sinusoidal_table(length, config.n_embd) if positional == "sinusoidal" else None
        self.register_buffer("sinusoidal_positions", sinusoidal, persistent=False)
        self.rotary = RotaryEmbedding(config.head_dim, length) if positional == "rotary" else None
        has_types = config.type_vocab_size > 0
        self.token_type_embedding = nn.Embedding(config.type_vocab_size, config.n_embd) if has_types else None
        self.embedding_norm = norm_layer(config) if config.embedding_norm else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(TransformerBlock(config) for _ in range(config.n_layer))
        self.final_norm = norm_layer(config) if config.norm_position == "pre" else None

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None, output_hidden_states: bool = False, *,
                past_key_values: list[KeyValueCache] | None = None, use_cache: bool = False,
                position_ids: Tensor | None = None) -> tuple:
        """(hidden, all_hidden or None), plus the per-layer key/value caches of every position when `use_cache`.

        `past_key_values` are the caches of earlier positions (returned by a previous call with
        `use_cache`; they are extended in place); `attention_mask` then covers the past and the new positions, shape
        (batch, past + time). `position_ids` (batch, time) override the default positions, which
        count real tokens only.
        """
        length = input_ids.size(1)
        past_length = past_key_values[0].length if past_key_values else 0
        if position_ids is None:
            position_ids = self.default_positions(attention_mask, length, past_length, input_ids.device)
        x = self.embed(input_ids, token_type_ids, position_ids, past_length)
        mask, is_causal = self.attention_pattern(attention_mask, length, past_length)
        caches = past_key_values or [KeyValueCache(self.config.block_size) if use_cache else None for _ in self.blocks]
        hidden_states = [x]
        for block, cache in zip(self.blocks, caches):
            x = block(x, mask, is_causal, self.rotary, position_ids, cache)
            hidden_states.append(x)
        if self.final_norm is not None:
            x = self.final_norm(x)
            hidden_states[-1] = x
        outputs = (x, tuple(hidden_states) if output_hidden_states else None)
        return (*outputs, caches) if use_cache else outputs

    @staticmethod
    def default_positions(padding: Tensor | None, length: int, past_length: int,
                          device: torch.device) -> Tensor | None:
        """The positions of the new tokens, (batch or 1, time), or None for the plain 0..time-1.

        With a mask they count real tokens only, cumsum(mask) - 1 (left pads clamped to 0,
        right pads repeat the last real position; neither is attended to).
        """
        if padding is not None:
            return (padding.cumsum(-1) - 1).clamp(min=0)[:, -length:]
        if past_length:
            return torch.arange(past_length, past_length + length, device=device)[None]
        return None

    def embed(self, input_ids: Tensor, token_type_ids: Tensor | None, positions: Tensor | None = None,
              past_length: int = 0) -> Tensor:
        """Token + position (+ segment) embeddings, then the optional norm and dropout.

        `positions` (batch or 1, time) default to 0..time-1; `past_length` counts cached tokens.
        """
        length = input_ids.size(1)
        if past_length + length > self.config.block_size:
            raise UserError(f"An input of {past_length + length} tokens is longer than the model's block_size "
                            f"({self.config.block_size}); cut inputs to tokenizer.max_length <= block_size, "
                            "or train a model with a larger model.block_size.")
        if positions is None:
            positions = torch.arange(length, device=input_ids.device)
        x = self.token_embedding(input_ids)
        if self.position_embedding is not None:
            x = x + self.position_embedding(positions)
        if self.sinusoidal_positions is not None:
            # As in Vaswani et al., scale the tokens up so the unit-amplitude table does not drown them.
            x = x * self.hidden_size ** 0.5 + self.sinusoidal_positions[positions].to(x.dtype)
        if self.token_type_embedding is not None:
            types = token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)
            x = x + self.token_type_embedding(types)
        elif token_type_ids is not None:
            raise UserError("token_type_ids were given, but this model has no segment embeddings "
                            "(model.type_vocab_size is 0); set model.type_vocab_size: 2 to use sentence pairs.")
        if self.embedding_norm is not None:
            x = self.embedding_norm(x)
        return self.drop(x)

    def attention_pattern(self, padding: Tensor | None, length: int,
                          past_length: int = 0) -> tuple[Tensor | None, bool]:
        """The (attn_mask, is_causal) arguments of scaled_dot_product_attention for this batch.

        `padding` is the attention mask (1 = real token, 0 = padding, shape (batch, past + time))
        when one was given, else None. Without a mask and cache we pass no mask, which
        lets SDPA use its fused kernels; one new token after a cache may see every key. Otherwise
        a boolean mask (True = may attend) of shape (batch or 1, 1, time, past + time) hides
        padded keys and, for causal models, later positions.
        """
        causal = self.config.attention_type == "causal"
        if padding is None and past_length == 0:
            return None, causal
        if padding is None and (length == 1 or not causal):
            return None, False
        device = padding.device if padding is not None else self.token_embedding.weight.device
        queries = torch.arange(past_length, past_length + length, device=device)[:, None]
        keys = torch.arange(past_length + length, device=device)[None, :]
        allowed = keys <= queries if causal else torch.ones(length, past_length + length, dtype=torch.bool,
                                                            device=device)
        if padding is not None:
            allowed = allowed & padding.bool()[:, None, None, :]
        # A padded query left of every real token (left padding) has no key to attend to, and
        # some SDPA kernels return NaN for such a row, which then poisons the gradients. Letting
        # every query see itself keeps it finite on every kernel and changes nothing for real
        # tokens, which see themselves already.
        return allowed | (keys == queries), False
