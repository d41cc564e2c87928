"""Which Hugging Face layout each of our language models becomes, and which ones come back in.

One table, read both ways: `foundry export --format hf` asks `hf_export_of(model)` for the class,
config and weights of a model, and an `hf:DIR` checkpoint (`transfer.init_from_checkpoint`,
`foundry eval`) is read with `read_checkpoint_config` and `hf_state_dict_as_ours`:

| ours | Hugging Face |
|---|---|
| gpt, learned positions (GPT-2's layout, the default) | `GPT2LMHeadModel` (`gpt2`) |
| gpt, rotary positions | `GPTNeoXForCausalLM` (`gpt_neox`) |
| bert, learned positions (BERT's layout) | `BertForMaskedLM` (`bert`) |
| bert, rotary positions (the default) | `RoFormerForMaskedLM` (`roformer`) |

Every other model is exported self-contained (`inference/remote_model.py`, model_type `model_foundry`): its
config.json carries our own description and its weights our names under `foundry.`, so it comes back in
as exactly what it was. ELECTRA's two native networks are exported by `inference/export.py`
(`hf_conversion.electra_*`), never imported.
"""
from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import asdict
from pathlib import Path
from typing import NamedTuple

from torch import Tensor

from model_foundry.checkpoint_files import CONFIG_FILE, HF_CONFIG, read_model_config
from model_foundry.errors import UserError
from model_foundry.models.hf_conversion import (bert_config_from_hf, bert_config_to_hf, bert_state_dict_from_hf_bert,
                                                bert_state_dict_to_hf_bert, gpt_config_from_hf, gpt_config_to_hf,
                                                gpt_state_dict_from_hf_gpt2, gpt_state_dict_to_hf_gpt2)
from model_foundry.models.hf_gpt_neox import (gpt_config_from_hf_gpt_neox, gpt_config_to_hf_gpt_neox,
                                              gpt_state_dict_from_hf_gpt_neox, gpt_state_dict_to_hf_gpt_neox)
from model_foundry.models.hf_roformer import (bert_config_from_hf_roformer, bert_config_to_hf_roformer,
                                              bert_state_dict_from_hf_roformer, bert_state_dict_to_hf_roformer)


class HFFormat(NamedTuple):
    architecture: str  # ours
    config_from_hf: Callable
    state_from_hf: Callable  # (hf state dict, our config) -> our state dict


# Hugging Face model_type -> how it reads into one of our architectures (`hf:DIR` checkpoints).
HF_IMPORTS = {
    "gpt2": HFFormat("gpt", gpt_config_from_hf, gpt_state_dict_from_hf_gpt2),
    "bert": HFFormat("bert", bert_config_from_hf, bert_state_dict_from_hf_bert),
    "gpt_neox": HFFormat("gpt", gpt_config_from_hf_gpt_neox, gpt_state_dict_from_hf_gpt_neox),
    "roformer": HFFormat("bert", bert_config_from_hf_roformer, bert_state_dict_from_hf_roformer),
}
SELF_CONTAINED = "model_foundry"  # model_type of our self-contained exports
SELF_CONTAINED_PREFIX = "foundry."  # their weights: our names under the wrapper's attribute


def hf_export_of(model) -> tuple[str, dict, dict[str, Tensor]]:
    """(transformers class name, config dict, state dict) of our gpt or bert; a layout the class cannot
    express is refused with the key to change."""
    config, state = model.config, model.state_dict()
    if model.architecture_name == "gpt" and config.positional == "rotary":
        return "GPTNeoXForCausalLM", gpt_config_to_hf_gpt_neox(config), gpt_state_dict_to_hf_gpt_neox(state, config)
    if model.architecture_name == "gpt":
        return "GPT2LMHeadModel", gpt_config_to_hf(config), \
            gpt_state_dict_to_hf_gpt2(state, config)
    if config.positional == "rotary":
        return "RoFormerForMaskedLM", bert_config_to_hf_roformer(config), \
            bert_state_dict_to_hf_roformer(state, config)
    return "BertForMaskedLM", bert_config_to_hf(config), \
        bert_state_dict_to_hf_bert(state, config)


def is_hf_directory(checkpoint: Path) -> bool:
    return (checkpoint / HF_CONFIG).is_file() and not (checkpoint / CONFIG_FILE).is_file()


def read_hf_config(checkpoint: Path) -> dict:
    return json.loads((checkpoint / HF_CONFIG).read_text(encoding="utf-8"))


def hf_format_of(checkpoint: Path) -> tuple[HFFormat, dict]:
    """(the format, the parsed config.json) of a Hugging Face directory we can import."""
    hf_config = read_hf_config(checkpoint)
    model_type = hf_config.get("model_type")
    if model_type not in HF_IMPORTS:
        raise UserError(f"{checkpoint / HF_CONFIG} describes a {model_type!r} model; hf: imports into our "
                        f"backbones only {', '.join(HF_IMPORTS)} and our own self-contained exports "
                        "(use model.architecture: hf for others).")
    return HF_IMPORTS[model_type], hf_config


def is_self_contained(checkpoint: Path) -> bool:
    return read_hf_config(checkpoint).get("model_type") == SELF_CONTAINED


def read_checkpoint_config(checkpoint: Path) -> dict:
    """`model_config.json` of a checkpoint; for a Hugging Face directory, the same built from its config.json."""
    if not is_hf_directory(checkpoint):
        return read_model_config(checkpoint)
    if is_self_contained(checkpoint):
        return read_hf_config(checkpoint)["foundry_model"]
    hf_format, hf_config = hf_format_of(checkpoint)
    return {"architecture": hf_format.architecture, "config": asdict(hf_format.config_from_hf(hf_config))}


def hf_state_dict_as_ours(state: Mapping[str, Tensor], checkpoint: Path, config) -> dict[str, Tensor]:
    """The tensors of a Hugging Face directory under our names (`config`, ours, gives the depth)."""
    if is_self_contained(checkpoint):
        return {name.removeprefix(SELF_CONTAINED_PREFIX): tensor for name, tensor in state.items()}
    return hf_format_of(checkpoint)[0].state_from_hf(state, config)
