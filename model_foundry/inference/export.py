"""`foundry export`: a run's model as a plain run directory (LoRA merged) or in Hugging Face format.

- `export_merged_run`: the adapters of a LoRA run added into the base weights; the result is an
  ordinary run directory (tokenizer/, resolved_config.yaml without `lora`, checkpoints/<name>/,
  results.json) that `foundry predict` and `load_model` use like any other run.
- `export_hf`: a native `transformers` class wherever one computes exactly our function, chosen by
  `models/hf_formats.py` (gpt as `GPT2LMHeadModel` or `GPTNeoXForCausalLM`, bert as
  `RoFormerForMaskedLM` or `BertForMaskedLM`; an `electra` run as two directories, `discriminator/`
  (`ElectraForPreTraining`) and `generator/` (`ElectraForMaskedLM`)), written by transformers' own
  `save_pretrained`. Everything else (a hybrid, an LSTM/GRU/RNN, a layout no native class has, every
  finetuned model) becomes a self-contained directory that loads with `trust_remote_code=True`:
  our own model code flattened into it (`inference/remote_code.py`), weights under `foundry.`.
  Either way with a tokenizer that `AutoTokenizer` loads with its special tokens set.
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


def export_hf(run: str | Path, out: str | Path, checkpoint: str = "best") -> tuple[Path, str]:
    """The run's model and tokenizer at `out`, in the format `transformers` loads; and what it was written as.

    A native `transformers` class where one computes exactly our function, else a self-contained
    remote-code directory (`inference/remote_code.py`); nothing is exported approximately.
    """
    from model_foundry.models import BaseLanguageModel
    from model_foundry.models.lora import has_lora, merge_lora

    run_dir = find_run(run)
    model = BaseLanguageModel.from_pretrained(checkpoint_of(run_dir, checkpoint))
    if has_lora(model):
        model = merge_lora(model)
    model = model.__dict__.get("language_model", model)  # a sentence objective's head is for pretraining only
    tokenizer = load_tokenizer(run_dir)
    # Converted before anything is written, so a failed export leaves no partial directory behind.
    hf_models, why_not_native = native_exports(model, tokenizer)
    out = prepare_output(Path(out))
    tokenizer_file = run_dir / "tokenizer" / "tokenizer.json"
    if hf_models is None:
        written = write_remote_code_export(model, tokenizer, tokenizer_file, out)
        return out, f"a self-contained model ({written}; load with trust_remote_code=True), because {why_not_native}"
    for name, hf_model in hf_models.items():
        hf_model.save_pretrained(out / name)
        save_hf_tokenizer(tokenizer_file, tokenizer, out / name, uses_token_types(model))
    return out, " and ".join(f"{type(m).__name__}" + (f" ({name}/)" if name else "") for name, m in hf_models.items())


def native_exports(model, tokenizer) -> tuple[dict | None, str]:
    """({subdirectory: transformers model} with our weights, "") where a native class computes our model
    exactly; else (None, why not)."""
    if hasattr(model, "head_config"):
        return None, "a task model's pooler, head and label scale have no transformers class of their own"
    try:
        if model.architecture_name == "electra":
            return electra_to_transformers(model, tokenizer), ""
        if model.architecture_name in ("gpt", "bert"):
            return {"": to_transformers(model, tokenizer)}, ""
    except UserError as refusal:  # the layout has no exact native equivalent
        return None, str(refusal)
    return None, f"no transformers class computes a {model.architecture_name!r} model"


def write_remote_code_export(model, tokenizer, tokenizer_file: Path, out: Path) -> str:
    """config.json, model.safetensors (our names under `foundry.`), our flattened model code and the tokenizer."""
    from model_foundry.checkpoint_files import HF_CONFIG, WEIGHTS_FILE, write_json, write_weights
    from model_foundry.inference.remote_code import write_model_code

    config = remote_code_config(model, tokenizer)
    # Tied weights are written under each name (safetensors refuses shared memory); loading ties them again.
    write_weights(out / WEIGHTS_FILE, {f"foundry.{name}": tensor.clone() for name, tensor in model.state_dict().items()})
    write_json(out / HF_CONFIG, config)
    files = write_model_code(out)
    save_hf_tokenizer(tokenizer_file, tokenizer, out, uses_token_types(model))
    return ", ".join(config["auto_map"]) + f" from {len(files)} modeling files"


def remote_code_config(model, tokenizer) -> dict:
    """config.json of a self-contained export: our description, the Auto classes it serves, labels and ids."""
    from model_foundry.inference.remote_code import auto_map
    from model_foundry.inference.remote_model import AUTO_CLASSES, FoundryConfig, is_causal_lm, is_masked_lm

    autos = ["AutoConfig", "AutoModel"]
    labels: dict = {}
    if hasattr(model, "head_config"):
        head = model.head_config
        sequence = head.task != "token_classification"
        autos.append("AutoModelForSequenceClassification" if sequence else "AutoModelForTokenClassification")
        names = head.labels or ["score"]
        problem = "regression" if head.task == "sequence_scoring" else \
            "multi_label_classification" if head.multi_label else "single_label_classification"
        labels = {"id2label": dict(enumerate(names)), "label2id": {name: i for i, name in enumerate(names)},
                  **({"problem_type": problem} if sequence else {})}
    else:
        autos += [auto for auto, fits in (("AutoModelForCausalLM", is_causal_lm(model)),
                                         ("AutoModelForMaskedLM", is_masked_lm(model))) if fits]
        autos += ["AutoModelForSequenceClassification", "AutoModelForTokenClassification"]
    config = FoundryConfig(foundry_model=model.description(), architectures=[AUTO_CLASSES[autos[2]].__name__],
                           auto_map=auto_map(autos), vocab_size=model.config.vocab_size,
                           hidden_size=model.backbone.hidden_size, num_hidden_layers=model.num_layers,
                           tie_word_embeddings=False, use_cache=False, **labels, **special_token_ids(tokenizer))
    return config.to_dict()


def uses_token_types(model) -> bool:
    """Whether the model reads token_type_ids (segment embeddings); tokenizers of the others must not send them."""
    return bool(getattr(model.config, "type_vocab_size", 0))


def special_token_ids(tokenizer) -> dict:
    return {"bos_token_id": tokenizer.token_to_id(tokenizer.bos_token),
            "eos_token_id": tokenizer.token_to_id(tokenizer.eos_token), "pad_token_id": tokenizer.pad_id}


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

    hf_config.update(special_token_ids(tokenizer))
    config = transformers.AutoConfig.for_model(hf_config.pop("model_type"), **hf_config)
    hf_model = getattr(transformers, class_name)(config)
    hf_model.load_state_dict(state, strict=True)
    return hf_model.eval()


def save_hf_tokenizer(tokenizer_file: Path, tokenizer, out: Path, token_types: bool) -> None:
    """tokenizer.json plus tokenizer_config.json naming the special tokens by their roles; `token_types`: whether
    it returns token_type_ids (only models with segment embeddings read them: GPT-2 would add them to its input)."""
    from transformers import PreTrainedTokenizerFast

    names = ["input_ids", "token_type_ids", "attention_mask"] if token_types else ["input_ids", "attention_mask"]
    hf_tokenizer = PreTrainedTokenizerFast(tokenizer_file=str(tokenizer_file), model_input_names=names,
                                           **tokenizer.special_tokens_map)
    hf_tokenizer.save_pretrained(str(out))
