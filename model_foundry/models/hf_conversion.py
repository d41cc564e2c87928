"""Converters between our GPT / BERT and Hugging Face GPT-2 / BERT: configs and state dicts.

These are plain renaming functions over dicts of tensors, so the package needs no `transformers`
to run them: a Hugging Face checkpoint can be read with `safetensors` and loaded into our models,
and ours exported for `transformers` to load. Differences in layout:

- GPT-2 uses `Conv1D`, which stores weights as (in, out): transposed relative to `nn.Linear`.
  Its attention projection is already fused (`c_attn`), like our `attn.qkv`.
- BERT has separate query / key / value Linears; we concatenate them into the fused `attn.qkv`.
- Both tie the output projection to the token embedding, as ours do.

State dicts from the task-head classes (`GPT2LMHeadModel`, `BertForMaskedLM`) and from the bare
models (`GPT2Model`, `BertModel`) are accepted; exports use the task-head layout.
Our `electra` (replaced token detection) is exported (not imported) as the pair Google released:
`ElectraForPreTraining` (the discriminator) and `ElectraForMaskedLM` (the generator), whose
encoders are BERT's layers under `electra.`.
"""
from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import Tensor

from model_foundry.errors import UserError
from model_foundry.models.bert import BertConfig
from model_foundry.models.electra import ElectraConfig
from model_foundry.models.gpt import GPTConfig

StateDict = dict[str, Tensor]

# Hugging Face activation names -> ours (several HF names are the same function).
ACTIVATIONS_FROM_HF = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                       "relu": "relu", "silu": "silu", "swish": "silu", "relu2": "relu2"}
ACTIVATIONS_TO_HF = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu", "silu": "silu", "relu2": "relu2"}

# Per block: (our name, GPT-2 name, stored transposed by Conv1D).
GPT2_BLOCK = [("norm1.weight", "ln_1.weight", False), ("norm1.bias", "ln_1.bias", False),
              ("attn.qkv.weight", "attn.c_attn.weight", True), ("attn.qkv.bias", "attn.c_attn.bias", False),
              ("attn.proj.weight", "attn.c_proj.weight", True), ("attn.proj.bias", "attn.c_proj.bias", False),
              ("norm2.weight", "ln_2.weight", False), ("norm2.bias", "ln_2.bias", False),
              ("mlp.fc.weight", "mlp.c_fc.weight", True), ("mlp.fc.bias", "mlp.c_fc.bias", False),
              ("mlp.proj.weight", "mlp.c_proj.weight", True), ("mlp.proj.bias", "mlp.c_proj.bias", False)]
GPT2_OUTSIDE_BLOCKS = [("backbone.token_embedding.weight", "transformer.wte.weight"),
                       ("backbone.position_embedding.weight", "transformer.wpe.weight"),
                       ("backbone.final_norm.weight", "transformer.ln_f.weight"),
                       ("backbone.final_norm.bias", "transformer.ln_f.bias")]

# Per block, everything but the query/key/value split: (our name, BERT name).
BERT_BLOCK = [("attn.proj.weight", "attention.output.dense.weight"),
              ("attn.proj.bias", "attention.output.dense.bias"),
              ("norm1.weight", "attention.output.LayerNorm.weight"),
              ("norm1.bias", "attention.output.LayerNorm.bias"),
              ("mlp.fc.weight", "intermediate.dense.weight"), ("mlp.fc.bias", "intermediate.dense.bias"),
              ("mlp.proj.weight", "output.dense.weight"), ("mlp.proj.bias", "output.dense.bias"),
              ("norm2.weight", "output.LayerNorm.weight"), ("norm2.bias", "output.LayerNorm.bias")]
BERT_OUTSIDE_BLOCKS = [("backbone.token_embedding.weight", "bert.embeddings.word_embeddings.weight"),
                       ("backbone.position_embedding.weight", "bert.embeddings.position_embeddings.weight"),
                       ("backbone.token_type_embedding.weight", "bert.embeddings.token_type_embeddings.weight"),
                       ("backbone.embedding_norm.weight", "bert.embeddings.LayerNorm.weight"),
                       ("backbone.embedding_norm.bias", "bert.embeddings.LayerNorm.bias"),
                       ("mlm_head.dense.weight", "cls.predictions.transform.dense.weight"),
                       ("mlm_head.dense.bias", "cls.predictions.transform.dense.bias"),
                       ("mlm_head.norm.weight", "cls.predictions.transform.LayerNorm.weight"),
                       ("mlm_head.norm.bias", "cls.predictions.transform.LayerNorm.bias"),
                       ("mlm_head.bias", "cls.predictions.bias")]
BERT_QKV = ("query", "key", "value")
# ELECTRA (our `electra`): BERT's embeddings under `electra.`, and each network's own head.
ELECTRA_EMBEDDINGS = [(our, theirs.replace("bert.", "electra.", 1)) for our, theirs in BERT_OUTSIDE_BLOCKS
                      if our.startswith("backbone.")]
ELECTRA_DISCRIMINATOR_HEAD = [("discriminator_head.dense", "discriminator_predictions.dense"),
                              ("discriminator_head.out", "discriminator_predictions.dense_prediction")]
ELECTRA_GENERATOR_HEAD = [("generator.head.dense", "generator_predictions.dense"),
                          ("generator.head.norm", "generator_predictions.LayerNorm")]


def take(state: Mapping[str, Tensor], key: str, source: str) -> Tensor:
    if key not in state:
        raise UserError(f"The {source} state dict has no tensor {key!r}; it does not match the config "
                        "(another number of layers, or another architecture).")
    return state[key]


def with_prefix(state: Mapping[str, Tensor], prefix: str, head_prefixes: tuple[str, ...]) -> StateDict:
    """Keys of a bare model (`GPT2Model`, `BertModel`) renamed as in its task-head class."""
    return {k if k.startswith((prefix, *head_prefixes)) else prefix + k: v for k, v in state.items()}


def gpt_state_dict_from_hf_gpt2(hf_state_dict: Mapping[str, Tensor], config: GPTConfig) -> StateDict:
    """Our GPT's state dict from a Hugging Face GPT-2 one (with or without the LM head)."""
    hf = with_prefix(hf_state_dict, "transformer.", ("lm_head.",))
    ours = {our: take(hf, theirs, "GPT-2") for our, theirs in GPT2_OUTSIDE_BLOCKS}
    for i in range(config.n_layer):
        for our, theirs, transposed in GPT2_BLOCK:
            tensor = take(hf, f"transformer.h.{i}.{theirs}", "GPT-2")
            ours[f"backbone.blocks.{i}.{our}"] = tensor.t().contiguous() if transposed else tensor
    embedding = ours["backbone.token_embedding.weight"]
    if "lm_head.weight" in hf and not torch.equal(hf["lm_head.weight"], embedding):
        raise UserError("This GPT-2 checkpoint has an lm_head that is not tied to its token embedding; "
                        "our GPT always ties them, so it cannot be converted faithfully.")
    ours["lm_head.weight"] = embedding
    return ours


def gpt_state_dict_to_hf_gpt2(state_dict: Mapping[str, Tensor], config: GPTConfig) -> StateDict:
    """A `GPT2LMHeadModel` state dict from our GPT's (tied `lm_head.weight` may be absent)."""
    hf = {theirs: take(state_dict, our, "GPT") for our, theirs in GPT2_OUTSIDE_BLOCKS}
    for i in range(config.n_layer):
        for our, theirs, transposed in GPT2_BLOCK:
            tensor = take(state_dict, f"backbone.blocks.{i}.{our}", "GPT")
            hf[f"transformer.h.{i}.{theirs}"] = tensor.t().contiguous() if transposed else tensor
    hf["lm_head.weight"] = hf["transformer.wte.weight"]
    return hf


def bert_state_dict_from_hf_bert(hf_state_dict: Mapping[str, Tensor], config: BertConfig) -> StateDict:
    """Our BERT's state dict from a Hugging Face BERT one; a bare `BertModel` leaves the MLM head untouched."""
    hf = with_prefix(hf_state_dict, "bert.", ("cls.",))
    has_head = "cls.predictions.bias" in hf
    ours = {our: take(hf, theirs, "BERT") for our, theirs in BERT_OUTSIDE_BLOCKS
            if has_head or not theirs.startswith("cls.")}
    ours.update(bert_layers_from_hf(hf, "bert.encoder.layer", "backbone.blocks", config.n_layer, "BERT"))
    if has_head:
        ours["mlm_head.decoder.weight"] = ours["backbone.token_embedding.weight"]
    return ours


def bert_state_dict_to_hf_bert(state_dict: Mapping[str, Tensor], config: BertConfig) -> StateDict:
    """A `BertForMaskedLM` state dict from our BERT's (tied decoder weight may be absent)."""
    hf = {theirs: take(state_dict, our, "BERT") for our, theirs in BERT_OUTSIDE_BLOCKS}
    hf.update(bert_layers_to_hf(state_dict, "backbone.blocks", "bert.encoder.layer", config.n_layer, "BERT"))
    hf["cls.predictions.decoder.weight"] = hf["bert.embeddings.word_embeddings.weight"]
    hf["cls.predictions.decoder.bias"] = hf["cls.predictions.bias"]
    return hf


def bert_layers_to_hf(state_dict: Mapping[str, Tensor], ours: str, theirs: str, n_layer: int,
                      source: str) -> StateDict:
    """Our blocks `<ours>.<i>.*` as Hugging Face BERT layers `<theirs>.<i>.*`, the fused qkv split in three."""
    hf = {}
    for i in range(n_layer):
        for our, their in BERT_BLOCK:
            hf[f"{theirs}.{i}.{their}"] = take(state_dict, f"{ours}.{i}.{our}", source)
        for part in ("weight", "bias"):
            fused = take(state_dict, f"{ours}.{i}.attn.qkv.{part}", source)
            for name, piece in zip(BERT_QKV, fused.chunk(3, dim=0)):
                hf[f"{theirs}.{i}.attention.self.{name}.{part}"] = piece.contiguous()
    return hf


def bert_layers_from_hf(hf: Mapping[str, Tensor], theirs: str, ours: str, n_layer: int, source: str) -> StateDict:
    """Hugging Face BERT-layout layers `<theirs>.<i>.*` as our blocks `<ours>.<i>.*`, query/key/value fused."""
    blocks = {}
    for i in range(n_layer):
        layer = f"{theirs}.{i}"
        for our, their in BERT_BLOCK:
            blocks[f"{ours}.{i}.{our}"] = take(hf, f"{layer}.{their}", source)
        for part in ("weight", "bias"):
            pieces = [take(hf, f"{layer}.attention.self.{name}.{part}", source) for name in BERT_QKV]
            blocks[f"{ours}.{i}.attn.qkv.{part}"] = torch.cat(pieces, dim=0)
    return blocks


def electra_state_dicts_to_hf(state_dict: Mapping[str, Tensor], config: ElectraConfig) -> dict[str, StateDict]:
    """`{"discriminator": ElectraForPreTraining, "generator": ElectraForMaskedLM}` state dicts from our ELECTRA's.

    Each holds the shared embeddings (as Google's released discriminator/generator pairs do).
    """
    embeddings = {theirs: take(state_dict, our, "ELECTRA") for our, theirs in ELECTRA_EMBEDDINGS}
    generator_modules = list(ELECTRA_GENERATOR_HEAD)
    if config.generator_config().n_embd != config.n_embd:  # Hugging Face has embeddings_project exactly then
        generator_modules.append(("generator.project", "electra.embeddings_project"))
    hf = {}
    for name, blocks, modules in (("discriminator", "backbone.blocks", ELECTRA_DISCRIMINATOR_HEAD),
                                  ("generator", "generator.blocks", generator_modules)):
        layers = bert_layers_to_hf(state_dict, blocks, "electra.encoder.layer", config.n_layer, "ELECTRA")
        hf[name] = {**embeddings, **layers}
        hf[name].update({f"{theirs}.{part}": take(state_dict, f"{our}.{part}", "ELECTRA")
                         for our, theirs in modules for part in ("weight", "bias")})
    hf["generator"]["generator_lm_head.weight"] = embeddings["electra.embeddings.word_embeddings.weight"]
    hf["generator"]["generator_lm_head.bias"] = take(state_dict, "generator.head.bias", "ELECTRA")
    return hf


def activation_from_hf(name: str, key: str) -> str:
    if name not in ACTIVATIONS_FROM_HF:
        raise UserError(f"Hugging Face config {key} {name!r} has no equivalent here; supported: "
                        f"{', '.join(ACTIVATIONS_FROM_HF)}.")
    return ACTIVATIONS_FROM_HF[name]


def refuse_hf_features(hf_config: Mapping, unsupported: dict[str, object], model: str) -> None:
    """Refuse configs that switch on Hugging Face features our models do not implement."""
    for key, default in unsupported.items():
        if hf_config.get(key, default) != default:
            raise UserError(f"Hugging Face {model} config sets {key}={hf_config[key]!r}, which our {model} does "
                            f"not implement (only {key}={default!r} converts).")


def gpt_config_from_hf(hf_config: Mapping) -> GPTConfig:
    """Our `GPTConfig` from a Hugging Face GPT-2 config dict (`config.json` / `GPT2Config.to_dict()`)."""
    refuse_hf_features(hf_config, {"scale_attn_weights": True, "scale_attn_by_inverse_layer_idx": False,
                                   "add_cross_attention": False}, "GPT-2")
    return GPTConfig(vocab_size=hf_config["vocab_size"], pad_token_id=hf_config.get("pad_token_id"),
                     n_layer=hf_config["n_layer"], n_head=hf_config["n_head"], n_embd=hf_config["n_embd"],
                     intermediate_size=hf_config.get("n_inner"), block_size=hf_config["n_positions"],
                     dropout=hf_config.get("resid_pdrop", 0.0),
                     activation=activation_from_hf(hf_config.get("activation_function", "gelu_new"),
                                                   "activation_function"),
                     layer_norm_eps=hf_config.get("layer_norm_epsilon", 1e-5))


def bert_config_from_hf(hf_config: Mapping) -> BertConfig:
    """Our `BertConfig` from a Hugging Face BERT config dict."""
    refuse_hf_features(hf_config, {"position_embedding_type": "absolute", "is_decoder": False,
                                   "add_cross_attention": False}, "BERT")
    return bert_config_from_layout(hf_config, "learned")


def bert_config_from_layout(hf_config: Mapping, positional: str) -> BertConfig:
    """Our `BertConfig` with `positional` positions from the keys Hugging Face's BERT-layout configs share."""
    return BertConfig(vocab_size=hf_config["vocab_size"], pad_token_id=hf_config.get("pad_token_id"),
                      n_layer=hf_config["num_hidden_layers"], n_head=hf_config["num_attention_heads"],
                      n_embd=hf_config["hidden_size"], intermediate_size=hf_config["intermediate_size"],
                      block_size=hf_config["max_position_embeddings"], positional=positional,
                      dropout=hf_config.get("hidden_dropout_prob", 0.0),
                      activation=activation_from_hf(hf_config.get("hidden_act", "gelu"), "hidden_act"),
                      layer_norm_eps=hf_config.get("layer_norm_eps", 1e-12),
                      type_vocab_size=hf_config.get("type_vocab_size", 2))


# What every native Hugging Face class we export to has: LayerNorms, no norm on queries and keys, an output
# projection tied to the token embedding, uncapped logits. A model of the modern recipe differs in all of
# them, so it is exported self-contained.
CLASSIC_LAYOUT = {"norm": "layernorm", "qk_norm": False, "tie_weights": True, "logit_softcap": 0.0}


def require_layout(config, layout: dict[str, object], target: str) -> None:
    """Refuse an export whose settings the target Hugging Face architecture cannot express."""
    for key, required in {**CLASSIC_LAYOUT, **layout}.items():
        if getattr(config, key) != required:
            raise UserError(f"model.{key} is {getattr(config, key)!r}, but Hugging Face {target} only supports "
                            f"{key}={required!r}; this model cannot be exported in {target} format.")


def gpt_config_to_hf(config: GPTConfig) -> dict:
    """A Hugging Face `GPT2Config` dict for our GPT, if its layout is GPT-2's."""
    require_layout(config, {"norm_position": "pre", "positional": "learned", "attention_type": "causal",
                            "bias": True, "type_vocab_size": 0, "embedding_norm": False}, "GPT-2")
    return {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": config.vocab_size,
            "n_positions": config.block_size, "n_embd": config.n_embd, "n_layer": config.n_layer,
            "n_head": config.n_head, "n_inner": config.intermediate_size,
            "activation_function": ACTIVATIONS_TO_HF[config.activation], "resid_pdrop": config.dropout,
            "embd_pdrop": config.dropout, "attn_pdrop": config.dropout,
            "layer_norm_epsilon": config.layer_norm_eps, "pad_token_id": config.pad_token_id,
            "tie_word_embeddings": True}


def bert_config_to_hf(config: BertConfig) -> dict:
    """A Hugging Face `BertConfig` dict for our BERT, if its layout is BERT's."""
    return {"model_type": "bert", "architectures": ["BertForMaskedLM"], **bert_layout_to_hf(config, "learned", "BERT")}


def bert_layout_to_hf(config: BertConfig, positional: str, target: str) -> dict:
    """The config keys Hugging Face's BERT-layout classes (BERT, RoFormer) share, if `config` has that layout
    with `positional` positions; `target` names the class in a refusal."""
    require_layout(config, {"norm_position": "post", "positional": positional, "attention_type": "bidirectional",
                            "bias": True, "embedding_norm": True}, target)
    if config.type_vocab_size < 1:
        raise UserError(f"model.type_vocab_size is 0, but Hugging Face {target} always has segment embeddings; "
                        f"this model cannot be exported in {target} format.")
    return {"vocab_size": config.vocab_size, "hidden_size": config.n_embd, "num_hidden_layers": config.n_layer,
            "num_attention_heads": config.n_head, "intermediate_size": config.mlp_size,
            "hidden_act": ACTIVATIONS_TO_HF[config.activation], "hidden_dropout_prob": config.dropout,
            "attention_probs_dropout_prob": config.dropout, "max_position_embeddings": config.block_size,
            "type_vocab_size": config.type_vocab_size, "layer_norm_eps": config.layer_norm_eps,
            "pad_token_id": config.pad_token_id, "tie_word_embeddings": True}


def electra_configs_to_hf(config: ElectraConfig) -> dict[str, dict]:
    """Hugging Face `ElectraConfig` dicts of the discriminator and the generator, if the layout is ELECTRA's.

    Hugging Face's generator head always applies gelu, so other activations cannot be exported.
    """
    require_layout(config, {"norm_position": "post", "positional": "learned", "bias": True, "embedding_norm": True,
                            "activation": "gelu"}, "ELECTRA")
    if config.type_vocab_size < 1:
        raise UserError("model.type_vocab_size is 0, but Hugging Face ELECTRA always has segment embeddings; "
                        "this model cannot be exported in ELECTRA format.")
    shared = {"model_type": "electra", "vocab_size": config.vocab_size, "embedding_size": config.n_embd,
              "num_hidden_layers": config.n_layer, "hidden_act": "gelu", "hidden_dropout_prob": config.dropout,
              "attention_probs_dropout_prob": config.dropout, "max_position_embeddings": config.block_size,
              "type_vocab_size": config.type_vocab_size, "layer_norm_eps": config.layer_norm_eps,
              "pad_token_id": config.pad_token_id, "tie_word_embeddings": True}
    generator = config.generator_config()
    return {"discriminator": {**shared, "architectures": ["ElectraForPreTraining"], "hidden_size": config.n_embd,
                              "num_attention_heads": config.n_head, "intermediate_size": config.mlp_size},
            "generator": {**shared, "architectures": ["ElectraForMaskedLM"], "hidden_size": generator.n_embd,
                          "num_attention_heads": generator.n_head, "intermediate_size": generator.mlp_size}}
