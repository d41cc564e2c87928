"""`foundry export`: a run's model as a plain run directory (LoRA merged) or in Hugging Face format.

- `export_merged_run`: the adapters of a LoRA run added into the base weights; the result is an
  ordinary run directory (tokenizer/, resolved_config.yaml without `lora`, checkpoints/<name>/,
  results.json) that `foundry predict` and `load_model` use like any other run.
- `export_hf`: our gpt as `GPT2LMHeadModel`, our bert as `RoFormerForMaskedLM` (rotary positions,
  the default) or `BertForMaskedLM` (learned positions), the class chosen by `models/hf_formats.py`
  (config.json + model.safetensors through transformers' own `save_pretrained`), with a tokenizer
  that `AutoTokenizer` loads with its special tokens set. Layouts Hugging Face cannot express
  (a rotary GPT, post-LN GPT, ...) are refused by the converters, with the key to change. An
  `electra` run (replaced token detection) has two networks, so it becomes two such directories:
  `discriminator/` (`ElectraForPreTraining`, the one to finetune) and `generator/`
  (`ElectraForMaskedLM`).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from model_foundry.config.experiments import find_run
from model_foundry.config.loading import save_yaml
from model_foundry.errors import UserError
from model_foundry.inference.loading import checkpoint_of, load_tokenizer

# Subdirectory -> class of the two networks of an `electra` run.
ELECTRA_EXPORTS = {"discriminator": "ElectraForPreTraining", "generator": "ElectraForMaskedLM"}


def prepare_output(out: Path) -> Path:
    """`out`, created; refused when it already holds files (an export never overwrites)."""
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"--out {out} is not empty; export into a new directory.")
    out.mkdir(parents=True, exist_ok=True)
    return out


def export_merged_run(run: str | Path, out: str | Path, checkpoint: str = "best") -> Path:
    """A plain run directory at `out` whose checkpoint has the LoRA adapters merged in."""
    from model_foundry.models import BaseLanguageModel
    from model_foundry.models.lora import has_lora, merge_lora

    run_dir = find_run(run)
    source = checkpoint_of(run_dir, checkpoint)
    model = BaseLanguageModel.from_pretrained(source)
    if not has_lora(model):
        raise UserError(f"{source} has no LoRA adapter, so there is nothing to merge; the run is already "
                        "plain (use it directly, or export it with --format hf).")
    out = prepare_output(Path(out))
    merge_lora(model).save_pretrained(out / "checkpoints" / source.name)
    shutil.copytree(run_dir / "tokenizer", out / "tokenizer")
    config = yaml.safe_load((run_dir / "resolved_config.yaml").read_text(encoding="utf-8"))
    config.pop("lora", None)
    save_yaml(config, out / "resolved_config.yaml")
    if (run_dir / "results.json").is_file():
        shutil.copyfile(run_dir / "results.json", out / "results.json")
    return out


def export_hf(run: str | Path, out: str | Path, checkpoint: str = "best") -> Path:
    """The run's language model and tokenizer at `out`, in the format `transformers` loads."""
    from model_foundry.models import BaseLanguageModel
    from model_foundry.models.hf_formats import EXPORT_CLASSES, EXPORTED_ARCHITECTURES
    from model_foundry.models.lora import has_lora, merge_lora

    run_dir = find_run(run)
    model = BaseLanguageModel.from_pretrained(checkpoint_of(run_dir, checkpoint))
    if has_lora(model):
        model = merge_lora(model)
    if hasattr(model, "head_config") or model.architecture_name not in (*EXPORTED_ARCHITECTURES, "electra"):
        kind = "a task model" if hasattr(model, "head_config") else f"a {model.architecture_name!r} model"
        raise UserError(f"Run {run_dir} holds {kind}; --format hf exports pretrained language models: "
                        f"{EXPORT_CLASSES}, electra as "
                        + " and ".join(f"{cls} ({name}/)" for name, cls in ELECTRA_EXPORTS.items()) + ".")
    tokenizer = load_tokenizer(run_dir)
    # Converted before anything is written, so a refused layout leaves no partial export behind.
    if model.architecture_name == "electra":
        hf_models = electra_to_transformers(model, tokenizer)
    else:
        hf_models = {"": to_transformers(model, tokenizer)}
    out = prepare_output(Path(out))
    for name, hf_model in hf_models.items():
        hf_model.save_pretrained(out / name)
        save_hf_tokenizer(run_dir / "tokenizer" / "tokenizer.json", tokenizer, out / name)
    return out


def to_transformers(model, tokenizer):
    """The `transformers` model with our weights; the special token ids come from our tokenizer."""
    from model_foundry.models.hf_formats import hf_export_of

    return hf_model_with(*hf_export_of(model), tokenizer)


def electra_to_transformers(model, tokenizer) -> dict:
    """{"discriminator": ElectraForPreTraining, "generator": ElectraForMaskedLM} with our ELECTRA's weights."""
    from model_foundry.models import hf_conversion

    configs = hf_conversion.electra_configs_to_hf(model.config)
    states = hf_conversion.electra_state_dicts_to_hf(model.state_dict(), model.config)
    return {name: hf_model_with(cls, configs[name], states[name], tokenizer) for name, cls in ELECTRA_EXPORTS.items()}


def hf_model_with(class_name: str, hf_config: dict, state: dict, tokenizer):
    """`transformers.<class_name>` of `hf_config` holding `state`, with our tokenizer's special token ids."""
    import transformers

    hf_config.update(bos_token_id=tokenizer.token_to_id(tokenizer.bos_token),
                     eos_token_id=tokenizer.token_to_id(tokenizer.eos_token), pad_token_id=tokenizer.pad_id)
    config = transformers.AutoConfig.for_model(hf_config.pop("model_type"), **hf_config)
    hf_model = getattr(transformers, class_name)(config)
    hf_model.load_state_dict(state, strict=True)
    return hf_model.eval()


def save_hf_tokenizer(tokenizer_file: Path, tokenizer, out: Path) -> None:
    """tokenizer.json plus tokenizer_config.json naming the special tokens by their roles."""
    from transformers import PreTrainedTokenizerFast

    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), **tokenizer.special_tokens_map)
    hf_tokenizer.save_pretrained(str(out))
