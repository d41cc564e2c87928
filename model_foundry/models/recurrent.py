"""Recurrent language models: LSTM, GRU and a plain tanh RNN, behind the same interface as GPT and BERT.

A model is a token embedding, then `blocks` (one recurrent layer each, so freezing the first N
layers and layer-wise learning rates treat them like transformer blocks), then an LM head.
A unidirectional model is a causal LM and generates text. A bidirectional one reads every
sequence both ways, so it must be trained as a masked LM: set `task.type: masked_lm` with
`model.bidirectional: true` (the architectures' default task is causal_lm).

Padding never changes a result. The layers run on packed sequences, so each row stops at its
own last real token. Packing wants every row's real tokens to start at position 0, so left-padded
rows (what batched generation uses) are rolled into that layout and back: a causal model never
reads a pad before its first real token. Padded positions come out as zeros.

Widths: each direction has `hidden_size` units; a bidirectional layer outputs both directions
concatenated (2 * hidden_size, no projection back), which is the backbone's `hidden_size` and
the next layer's input. With `tie_weights` (the default) the output layer shares the token
embedding; when the output width differs from `n_embd`, a linear projection down to `n_embd`
comes first, so tying works at any size.

Scale: the recurrent layers' default initialisation suits inputs of unit variance, so token
vectors are drawn with std 1/sqrt(n_embd) and multiplied by sqrt(n_embd) when read (the
Transformer paper's trick): inputs have unit variance, while the tied output layer, which uses
the unscaled matrix, starts with near-uniform predictions at any width. With GPT's N(0, 0.02)
embeddings an LSTM barely sees its inputs at first and learns several times slower.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from model_foundry.errors import UserError
from model_foundry.models.base import BaseLanguageModel, ModelOutput, init_normal
from model_foundry.models.registry import register_architecture

RECURRENT_LAYERS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}

# Sizes shared by lstm, gru and rnn (a GRU layer has 3/4 of an LSTM layer's weights, a plain RNN
# layer 1/4). base is a 3-layer LSTM of ~50M parameters with a 32k vocabulary.
RECURRENT_PRESETS: dict[str, dict[str, int]] = {
    "small": {"n_layer": 2, "n_embd": 512, "hidden_size": 512},
    "base": {"n_layer": 3, "n_embd": 768, "hidden_size": 1024},
    "large": {"n_layer": 4, "n_embd": 1024, "hidden_size": 2048},
}

# The recurrent state of one layer: h for GRU and RNN, (h, c) for LSTM; each (directions, batch, hidden).
LayerState = Tensor | tuple[Tensor, Tensor]


@dataclass
class RecurrentConfig:
    """Settings of a recurrent language model. `cell` is fixed by the subclass each architecture uses."""

    cell: ClassVar[str]

    vocab_size: int = 50304
    pad_token_id: int | None = None  # recorded for the pipeline; padding is read from attention_mask
    n_embd: int = 512  # token embedding size
    n_layer: int = 2
    hidden_size: int | None = None  # units per direction in every layer; None means n_embd
    bidirectional: bool = False  # True: reads both ways, a masked LM (task.type: masked_lm)
    dropout: float = 0.0  # on the embeddings and between layers
    block_size: int = 1024  # the window the data pipeline cuts; the model itself has no length limit
    tie_weights: bool = True  # the output layer shares the token embedding's weight

    def __post_init__(self) -> None:
        if self.hidden_size is None:
            self.hidden_size = self.n_embd
        for key in ("vocab_size", "n_embd", "n_layer", "hidden_size", "block_size"):
            if getattr(self, key) < 1:
                raise UserError(f"model.{key} is {getattr(self, key)}; it must be a positive integer.")
        if not 0.0 <= self.dropout < 1.0:
            raise UserError(f"model.dropout is {self.dropout}; it must be in [0, 1).")

    @property
    def output_size(self) -> int:
        """Width of each layer's output: both directions concatenated when bidirectional."""
        return self.hidden_size * (2 if self.bidirectional else 1)

    @property
    def attention_type(self) -> str:
        """"causal" or "bidirectional", named like the transformers' setting so tasks can ask any backbone."""
        return "bidirectional" if self.bidirectional else "causal"


@dataclass
class LSTMConfig(RecurrentConfig):
    cell: ClassVar[str] = "lstm"


@dataclass
class GRUConfig(RecurrentConfig):
    cell: ClassVar[str] = "gru"


@dataclass
class RNNConfig(RecurrentConfig):
    cell: ClassVar[str] = "rnn"


class PaddingLayout:
    """Where each row's real tokens sit in a padded batch, and how to move rows to and from packing's layout.

    Packing reads the first `lengths[b]` positions of row b, so a row whose real tokens start at
    `starts[b]` > 0 (left padding) is rolled left by that much before the layers and back after.
    """

    def __init__(self, attention_mask: Tensor):
        self.mask = attention_mask.bool()
        batch, length = self.mask.shape
        positions = torch.arange(length, device=self.mask.device)
        self.lengths = self.mask.sum(dim=1)
        starts = torch.where(self.mask, positions, length).amin(dim=1)
        ends = torch.where(self.mask, positions, -1).amax(dim=1)
        gaps = (self.lengths > 0) & (ends - starts + 1 != self.lengths)
        if bool(gaps.any()):
            row = int(gaps.nonzero()[0, 0])
            raise UserError(f"Row {row} of the attention_mask has padding between real tokens; recurrent models "
                            "take padding on one side of each row only (left or right).")
        self.starts = torch.where(self.lengths > 0, starts, 0)
        self.rows = torch.arange(batch, device=self.mask.device)[:, None]
        self.positions = positions

    @staticmethod
    def of(attention_mask: Tensor | None) -> PaddingLayout | None:
        """The layout of a padded batch; None without padding (the layers then skip packing)."""
        if attention_mask is None or bool(attention_mask.all()):
            return None
        return PaddingLayout(attention_mask)

    def packed_lengths(self) -> Tensor:
        """Row lengths as packing wants them: on the CPU, at least 1 (an all-padding row runs on one pad)."""
        return self.lengths.clamp(min=1).cpu()

    def to_front(self, x: Tensor) -> Tensor:
        """Rows of `x` (batch, time, ...) rolled so that their real tokens start at position 0."""
        return x[self.rows, (self.positions + self.starts[:, None]) % x.size(1)]

    def to_input_order(self, x: Tensor) -> Tensor:
        """Undo `to_front`, with the padded positions zeroed."""
        x = x[self.rows, (self.positions - self.starts[:, None]) % x.size(1)]
        return x.masked_fill(~self.mask.unsqueeze(-1), 0.0)


class RecurrentBlock(nn.Module):
    """Dropout on the input (the embeddings for the first block), then one recurrent layer."""

    def __init__(self, config: RecurrentConfig, input_size: int):
        super().__init__()
        self.drop = nn.Dropout(config.dropout)
        self.rnn = RECURRENT_LAYERS[config.cell](input_size, config.hidden_size, batch_first=True,
                                                 bidirectional=config.bidirectional)

    def forward(self, x: Tensor, lengths: Tensor | None,
                state: LayerState | None = None) -> tuple[Tensor, LayerState]:
        """The outputs (batch, time, output_size) and the state after each row's last real token."""
        x = self.drop(x)
        if lengths is None:
            return self.rnn(x, state)
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        output, state = self.rnn(packed, state)
        output, _ = pad_packed_sequence(output, batch_first=True, total_length=x.size(1))
        return output, state


class RecurrentBackbone(nn.Module):
    """Token embedding and the stack of recurrent blocks; `hidden_size` is the last block's output width."""

    def __init__(self, config: RecurrentConfig):
        super().__init__()
        self.config = config
        self.hidden_size = config.output_size
        self.embedding_scale = config.n_embd ** 0.5
        self.token_embedding = nn.Embedding(config.vocab_size, config.n_embd)
        input_sizes = [config.n_embd] + [config.output_size] * (config.n_layer - 1)
        self.blocks = nn.ModuleList(RecurrentBlock(config, size) for size in input_sizes)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None,
                token_type_ids: Tensor | None = None,
                output_hidden_states: bool = False) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        """Final hidden states (batch, time, hidden_size) and, when asked, the embedding and every block's output."""
        if token_type_ids is not None:
            raise UserError("token_type_ids were given, but recurrent models have no segment embeddings; "
                            "encode sentence pairs as one text, or finetune a bert backbone.")
        hidden, all_hidden, _ = self.run(input_ids, attention_mask, output_hidden_states=output_hidden_states)
        return hidden, all_hidden

    def run(self, input_ids: Tensor, attention_mask: Tensor | None = None,
            states: list[LayerState] | None = None,
            output_hidden_states: bool = False) -> tuple[Tensor, tuple[Tensor, ...] | None, list[LayerState]]:
        """`forward`, also starting from and returning the per-layer recurrent states (for decoding)."""
        layout, lengths = PaddingLayout.of(attention_mask), None
        if layout is not None:
            input_ids, lengths = layout.to_front(input_ids), layout.packed_lengths()
        x = self.token_embedding(input_ids) * self.embedding_scale
        outputs, final_states = [x], []
        for index, block in enumerate(self.blocks):
            x, state = block(x, lengths, states[index] if states is not None else None)
            outputs.append(x)
            final_states.append(state)
        if not output_hidden_states:
            outputs = outputs[-1:]
        if layout is not None:
            outputs = [layout.to_input_order(output) for output in outputs]
        return outputs[-1], tuple(outputs) if output_hidden_states else None, final_states


class RecurrentLMHead(nn.Module):
    """Hidden states -> (a projection to n_embd, when tied and the widths differ) -> vocabulary logits."""

    def __init__(self, config: RecurrentConfig):
        super().__init__()
        needs_projection = config.tie_weights and config.output_size != config.n_embd
        self.projection = nn.Linear(config.output_size, config.n_embd) if needs_projection else None
        width = config.n_embd if config.tie_weights else config.output_size
        self.decoder = nn.Linear(width, config.vocab_size, bias=False)

    def forward(self, hidden: Tensor) -> Tensor:
        if self.projection is not None:
            hidden = self.projection(hidden)
        return self.decoder(hidden)


def set_forget_gate_bias(lstm: nn.LSTM, value: float = 1.0) -> None:
    """Start LSTM forget gates open, so early gradients reach far back (Jozefowicz et al., 2015).

    PyTorch orders each bias as (input, forget, cell, output) gates and adds two biases (ih and
    hh); setting the forget slice of one of them to `value` and of the other to 0 gives `value`.
    """
    size = lstm.hidden_size
    with torch.no_grad():
        for name, bias in lstm.named_parameters():
            if name.startswith("bias_"):
                bias[size:2 * size] = value if name.startswith("bias_ih") else 0.0


def keep_where(take_new: Tensor, new: LayerState, old: LayerState) -> LayerState:
    """The new state for rows where `take_new` [batch] is True, the old one elsewhere."""
    if isinstance(new, tuple):
        return tuple(keep_where(take_new, n, o) for n, o in zip(new, old))
    return torch.where(take_new[None, :, None], new, old)


class RecurrentLanguageModel(BaseLanguageModel):
    """A recurrent LM: logits for the next token (unidirectional) or for masked tokens (bidirectional)."""

    default_task = "causal_lm"  # model.bidirectional: true needs task.type: masked_lm
    supports_generation = True  # unidirectional models only: decode_step refuses bidirectional ones
    presets = RECURRENT_PRESETS

    def __init__(self, config: RecurrentConfig):
        super().__init__(config)
        self.backbone = RecurrentBackbone(config)
        self.lm_head = RecurrentLMHead(config)
        self.apply(init_normal)  # linear layers; recurrent layers keep PyTorch's uniform init
        nn.init.normal_(self.backbone.token_embedding.weight, std=self.embedding_std)
        for block in self.backbone.blocks:
            if isinstance(block.rnn, nn.LSTM):
                set_forget_gate_bias(block.rnn)
        self.tie_weights()

    @property
    def embedding_std(self) -> float:
        """Token vectors of expected norm 1; the backbone scales them to unit variance per channel."""
        return self.config.n_embd ** -0.5

    def get_output_embeddings(self) -> nn.Linear:
        return self.lm_head.decoder

    def resize_token_embeddings(self, new_num_tokens: int) -> nn.Embedding:
        old_num_tokens = self.config.vocab_size
        embedding = super().resize_token_embeddings(new_num_tokens)
        with torch.no_grad():  # new rows at this model's embedding scale, not the transformers' 0.02
            nn.init.normal_(embedding.weight[old_num_tokens:], std=self.embedding_std)
        return embedding

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                token_type_ids: Tensor | None = None, output_hidden_states: bool = False,
                score_targets_only: bool = False) -> ModelOutput:
        """Vocabulary logits (batch, time, vocab); `labels` are aligned with them already (not shifted here)."""
        return self.head_output(self.lm_head, input_ids, attention_mask, labels, token_type_ids, output_hidden_states,
                                score_targets_only)

    def decode_step(self, input_ids: Tensor, attention_mask: Tensor | None,
                    cache: list[LayerState] | None = None) -> tuple[Tensor, list[LayerState]]:
        """Logits of the next token (batch, vocab) and the per-layer states to continue from.

        First call (`cache` None): `input_ids` is the whole prompt, left-padded. Later calls: one
        new token per row (batch, 1), `attention_mask` the mask of everything so far; a row whose
        new token is padding (a finished row of a batch) keeps its state.
        """
        if self.config.bidirectional:
            raise UserError(f"This {self.architecture_name} is bidirectional (model.bidirectional: true): it reads "
                            "each text in both directions, so it cannot generate left to right. Generate with a "
                            "unidirectional model, or use this one to fill masks.")
        if cache is None:
            hidden, _, states = self.backbone.run(input_ids, attention_mask)
            return self.lm_head(last_real_hidden(hidden, attention_mask)), states
        hidden, _, states = self.backbone.run(input_ids, states=cache)
        if attention_mask is not None:
            takes_token = attention_mask[:, -1].bool()
            states = [keep_where(takes_token, new, old) for new, old in zip(states, cache)]
        return self.lm_head(hidden[:, -1]), states


def last_real_hidden(hidden: Tensor, attention_mask: Tensor | None) -> Tensor:
    """hidden[b, t_b] where t_b is row b's last real position (the last position without a mask)."""
    if attention_mask is None:
        return hidden[:, -1]
    positions = torch.arange(hidden.size(1), device=hidden.device)
    last = (positions * attention_mask.bool()).amax(dim=1)
    return hidden[torch.arange(hidden.size(0), device=hidden.device), last]


@register_architecture("lstm")
class LSTM(RecurrentLanguageModel):
    model_type = "lstm"
    config_class = LSTMConfig


@register_architecture("gru")
class GRU(RecurrentLanguageModel):
    model_type = "gru"
    config_class = GRUConfig


@register_architecture("rnn")
class RNN(RecurrentLanguageModel):
    model_type = "rnn"
    config_class = RNNConfig
