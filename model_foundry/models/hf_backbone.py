"""Architecture `hf`: a pretrained Hugging Face base model (AutoModel) as the backbone of a task model.

Encoders (BERT, RoBERTa, DeBERTa-v2) and decoders (GPT-2, Llama, Mistral, Gemma 2, Qwen 2) load
from `hf_name_or_path` (a local directory, or a hub name on machines with internet) and get our
poolers, heads, losses and transfer controls. `transformers` is imported only when such a model is
configured or built, never when `model_foundry` is imported.

Where the weights come from: a config without `hf_config` loads the pretrained weights from
`hf_name_or_path`, then records the Hugging Face config (after any layer removal or vocabulary
growth) in `hf_config`. A saved run therefore rebuilds from `hf_config` alone with
`AutoModel.from_config` and loads its own `model.safetensors`: it never needs the source directory.

Parameter names: the backbone registers the HF embedding modules as `embeddings.*` and the layer
list as `blocks.*` before the HF model itself, so every parameter's first name is one the transfer
controls understand (`backbone.blocks.<i>.*`, `backbone.embeddings.*`); the same tensors also
appear under `model.*` in the state dict, and safetensors stores each shared tensor once (under
the alphabetically first name, which is the `blocks` / `embeddings` one).

Decoders made bidirectional (`*-bidirectional` checkpoints): transformers 5 returns a ready 4-D
attention mask unchanged (`masking_utils._preprocess_mask_arguments`), and its SDPA and eager
attention are causal only when no mask is given. So passing a full additive (B, 1, T, T) mask that
hides only the padding makes every layer of GPT-2, Llama, Mistral, Gemma 2 and Qwen 2 attend both
ways. Flash-attention kernels ignore 4-D masks: the model is loaded with the default (SDPA) kernel.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from model_foundry.errors import UserError
from model_foundry.models.base import BaseLanguageModel, ModelOutput
from model_foundry.models.registry import register_architecture
from model_foundry.optional_dependencies import remote_code_kwargs, require_transformers

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
ATTENTION_TYPES = ("causal", "bidirectional")
DEFAULT_MAX_LENGTH = 512


@dataclass
class HFConfig:
    """A Hugging Face backbone. Unset sizes are read from the model's own config.json."""

    hf_name_or_path: str | None = None
    hf_config: dict | None = None  # the HF config, recorded once the pretrained weights are loaded
    trust_remote_code: bool = False
    dtype: str = "float32"  # float32 | bfloat16 | float16 (model.dtype, alias torch_dtype)
    attention_type: str | None = None  # None: the model's own; "bidirectional" opens a decoder's mask
    gradient_checkpointing: bool = False
    n_layer: int | None = None  # None: every layer; remove_n_layers lowers it
    vocab_size: int | None = None  # more than the model has: the embeddings grow (added tokens)
    pad_token_id: int | None = None
    block_size: int | None = None  # None: min(the model's max positions, 512)

    def __post_init__(self) -> None:
        if self.dtype not in DTYPES:
            raise UserError(f"model.dtype {self.dtype!r} is not supported for architecture 'hf'; "
                            f"choose one of {', '.join(DTYPES)}.")
        if self.attention_type not in (None, *ATTENTION_TYPES):
            raise UserError(f"model.attention_type {self.attention_type!r} is not valid; choose "
                            f"{' or '.join(ATTENTION_TYPES)}, or leave it unset for the model's own.")
        source = self.source_config()
        native = "bidirectional" if is_encoder(source) else "causal"
        if self.attention_type == "causal" and native == "bidirectional":
            raise UserError(f"model.attention_type is 'causal' but {self.hf_name_or_path} is an encoder "
                            f"({source.model_type}); encoders stay bidirectional. Remove the key.")
        self.attention_type = self.attention_type or native
        self.native_attention_type = native  # not a field: it follows from hf_config
        total = source.num_hidden_layers
        self.n_layer = self.n_layer if self.n_layer is not None else total
        if not 1 <= self.n_layer <= total:
            raise UserError(f"model.n_layer is {self.n_layer}, but {self.hf_name_or_path} has {total} layers; "
                            "choose 1 to that number (or use transfer.remove_n_layers).")
        self.vocab_size = max(self.vocab_size or 0, source.vocab_size)
        positions = getattr(source, "max_position_embeddings", None) or DEFAULT_MAX_LENGTH
        self.block_size = self.block_size or min(positions, DEFAULT_MAX_LENGTH)
        # Segment ids only for models with a real second segment (BERT: 2; RoBERTa has 1 type).
        types = getattr(source, "type_vocab_size", 0) or 0
        self.type_vocab_size = types if types >= 2 else 0

    def source_config(self):
        """The HF config: the recorded one when present, else the config.json at hf_name_or_path."""
        transformers = require_transformers()
        if self.hf_config is not None:
            values = dict(self.hf_config)
            config_class = transformers.CONFIG_MAPPING[values.pop("model_type")]
            return config_class.from_dict(values)
        if not self.hf_name_or_path:
            raise UserError("model.architecture 'hf' needs model.hf_name_or_path: a local Hugging Face model "
                            "directory or a hub name.")
        try:
            return transformers.AutoConfig.from_pretrained(self.hf_name_or_path,
                                                           **remote_code_kwargs(self.trust_remote_code))
        except (OSError, ValueError) as exc:
            raise UserError(f"model.hf_name_or_path {self.hf_name_or_path!r} is not a loadable Hugging Face "
                            f"model (a directory with config.json, or a hub name when online): {exc}") from None


def is_encoder(hf_config) -> bool:
    """Whether the model type is a masked-LM encoder (BERT family); everything else is a decoder."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return hf_config.model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES and not getattr(hf_config, "is_decoder", False)


def load_hf_model(config: HFConfig) -> nn.Module:
    """The AutoModel: pretrained weights on first build, else an empty one from the recorded config."""
    transformers = require_transformers()
    options = {"dtype": DTYPES[config.dtype], "attn_implementation": "sdpa",
               **remote_code_kwargs(config.trust_remote_code)}
    if config.hf_config is None:
        try:
            return transformers.AutoModel.from_pretrained(config.hf_name_or_path, **options)
        except (OSError, ValueError) as exc:
            raise UserError(f"Cannot load the weights of model.hf_name_or_path {config.hf_name_or_path!r}: "
                            f"{exc}") from None
    return transformers.AutoModel.from_config(config.source_config(), **options)


def layer_list(hf_model: nn.Module) -> tuple[nn.Module, str, nn.ModuleList]:
    """(parent, attribute, list) of the transformer layers: `layers` (Llama...), `h` (GPT-2),
    `encoder.layer` (BERT...). Found as the ModuleList as long as the config's layer count."""
    count = hf_model.config.num_hidden_layers
    for name, module in hf_model.named_modules():
        if isinstance(module, nn.ModuleList) and len(module) == count:
            parent_name, _, attribute = name.rpartition(".")
            return hf_model.get_submodule(parent_name), attribute, module
    raise UserError(f"Cannot find the {count} layers of {type(hf_model).__name__}; this model type is not "
                    "supported as an 'hf' backbone.")


def keep_first_layers(hf_model: nn.Module, n_layer: int) -> nn.ModuleList:
    """Drop the layers above `n_layer` and tell the HF config, so the model still runs and rebuilds."""
    parent, attribute, layers = layer_list(hf_model)
    if n_layer < len(layers):
        layers = nn.ModuleList(list(layers)[:n_layer])
        setattr(parent, attribute, layers)
        hf_model.config.num_hidden_layers = n_layer
        if isinstance(getattr(hf_model.config, "layer_types", None), list):  # Gemma 2, Qwen 2: per-layer kinds
            hf_model.config.layer_types = hf_model.config.layer_types[:n_layer]
    return layers


def embedding_modules(hf_model: nn.Module) -> nn.ModuleDict:
    """The top-level embedding modules with weights: GPT-2's wte and wpe, Llama's embed_tokens, BERT's
    embeddings (words, positions, token types and their LayerNorm). Rotary embeddings have none."""
    return nn.ModuleDict({name: child for name, child in hf_model.named_children()
                          if (isinstance(child, nn.Embedding) or "emb" in name)
                          and any(True for _ in child.parameters())})


class HFBackbone(nn.Module):
    """ids -> hidden states through a Hugging Face base model, with our backbone interface."""

    def __init__(self, config: HFConfig):
        super().__init__()
        hf_model = load_hf_model(config)
        if hf_model.get_input_embeddings().num_embeddings < config.vocab_size:
            hf_model.resize_token_embeddings(config.vocab_size, mean_resizing=False)
        if getattr(hf_model, "pooler", None) is not None:
            hf_model.pooler = None  # BERT's own pooler: ours replace it, and it would never get a gradient
        hf_model.config.use_cache = False  # no KV cache: the backbone always sees whole sequences
        hf_model.config.pad_token_id = config.pad_token_id
        self.embeddings = embedding_modules(hf_model)
        self.blocks = keep_first_layers(hf_model, config.n_layer)
        self.model = hf_model
        self.hidden_size = hf_model.config.hidden_size
        self.bidirectional_decoder = config.native_attention_type == "causal" and config.attention_type == "bidirectional"
        self.is_decoder = config.native_attention_type == "causal"
        if config.gradient_checkpointing:
            enable_gradient_checkpointing(hf_model)
        if config.hf_config is None:
            config.hf_config = json.loads(hf_model.config.to_json_string(use_diff=False))

    @property
    def token_embedding(self) -> nn.Embedding:
        return self.model.get_input_embeddings()

    @token_embedding.setter
    def token_embedding(self, embedding: nn.Embedding) -> None:
        self.model.set_input_embeddings(embedding)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, token_type_ids: Tensor | None = None,
                output_hidden_states: bool = False) -> tuple[Tensor, tuple[Tensor, ...] | None]:
        """Last hidden states (B, T, H) in float32 (our heads are float32), and all of them on request."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        inputs: dict[str, Any] = {"input_ids": input_ids, "attention_mask": attention_mask,
                                  "output_hidden_states": output_hidden_states}
        if token_type_ids is not None:
            inputs["token_type_ids"] = token_type_ids
        if self.is_decoder:
            # Positions count real tokens only, so a left-padded row sees the positions a right-padded one does.
            inputs["position_ids"] = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        if self.bidirectional_decoder:
            inputs["attention_mask"] = padding_only_mask(attention_mask, self.token_embedding.weight.dtype)
        output = self.model(**inputs)
        return output.last_hidden_state.float(), output.hidden_states


def padding_only_mask(attention_mask: Tensor, dtype: torch.dtype) -> Tensor:
    """An additive (B, 1, T, T) mask: every query sees every real key, no query sees a pad."""
    hidden_keys = ~attention_mask.bool()[:, None, None, :]
    mask = torch.zeros(hidden_keys.shape, dtype=dtype, device=attention_mask.device)
    mask = mask.masked_fill(hidden_keys, torch.finfo(dtype).min)
    return mask.expand(-1, -1, attention_mask.shape[1], -1)


def enable_gradient_checkpointing(hf_model: nn.Module) -> None:
    """Recompute layer activations in the backward pass, without the frozen-embedding trap.

    The trap: reentrant checkpointing gives a layer's parameters a gradient only when the layer's
    input requires one, so with frozen embeddings nothing inside the layers trained. Non-reentrant
    checkpointing has no such condition; `enable_input_require_grads` (HF's fix) makes the
    embedding output require a gradient as well, so the layers train whichever variant runs.
    """
    if not hf_model.supports_gradient_checkpointing:
        raise UserError(f"model.gradient_checkpointing: {type(hf_model).__name__} does not support it; "
                        "set it to false.")
    enable = getattr(hf_model, "activation_checkpointing_enable", None)
    if enable is not None:
        enable(activation_checkpointing_kwargs={"use_reentrant": False})
    else:
        hf_model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    hf_model.enable_input_require_grads()


@register_architecture("hf")
class HFModel(BaseLanguageModel):
    """A Hugging Face base model as a backbone for finetuning tasks (it has no language-model head)."""

    model_type = "hf"
    default_task = "sequence_classification"
    supports_generation = False
    config_class = HFConfig

    def __init__(self, config: HFConfig):
        super().__init__(config)
        self.backbone = HFBackbone(config)

    def forward(self, input_ids: Tensor, attention_mask: Tensor | None = None, labels: Tensor | None = None,
                token_type_ids: Tensor | None = None, output_hidden_states: bool = False) -> ModelOutput:
        """The last hidden states as `logits` (no LM head: use a finetuning task for a loss)."""
        if labels is not None:
            raise UserError("model.architecture 'hf' is a backbone for finetuning tasks (task.type "
                            "sequence_classification, sequence_scoring or token_classification); it has no "
                            "language-model head to compute a loss from labels.")
        hidden, all_hidden = self.backbone(input_ids, attention_mask, token_type_ids, output_hidden_states)
        return ModelOutput(logits=hidden, hidden_states=all_hidden)
