"""LoRA adapters (through `peft`) on any of our models: TaskModels, language models, HF backbones.

`apply_lora` injects the adapters in place, so the model keeps its class, its `forward`
(`model(**batch).loss` for the trainer) and its parameter names under `backbone.blocks.<i>.`
(so transfer settings and LR groups still find the blocks). peft freezes every base weight; the
adapters train, and so do the task head and pooler, which are always in `modules_to_save`: without
that, peft would neither train nor save them, and a reloaded LoRA classifier would get a random head.

The adapters are peft's own state on the model (`model.peft_config`, the wrapped layers); nothing
of ours is added to it, and `has_lora` / `merge_lora` read and undo exactly that. A saved LoRA
model is a model directory with two more things, written by `BaseLanguageModel.save_pretrained`
through the `lora` attachment this module registers:
- `model_config.json` has a `lora` entry (the adapter's settings, read from its peft config);
  `model.safetensors` holds the adapted model's state (base weights, adapters, head) under peft's
  names, so checkpoints load back into the training model as they are (resume, best-checkpoint
  evaluation);
- `adapter/`: `adapter_config.json` + `adapter_model.safetensors` in peft's own format (loadable
  with `PeftModel.from_pretrained` onto the same backbone), the trained head and pooler included.
`BaseLanguageModel.from_pretrained` builds the model, injects the adapter structure that `adapter/`
describes, then loads `model.safetensors`.

`transformers`/`peft` are optional: they are imported only when LoRA is used.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from model_foundry.checkpoint_files import ADAPTER_CONFIG, ADAPTER_DIR, ADAPTER_WEIGHTS, read_weights, write_weights
from model_foundry.errors import UserError
from model_foundry.models.base import ATTACHMENTS, Attachment

ADAPTER_NAME = "default"
# peft's PeftModel prefixes every saved key with this; an injected model has no such wrapper.
PEFT_PREFIX = "base_model.model."
# Adapters go on backbone modules only: a head layer called `dense` must not get one.
OUTSIDE_BACKBONE = r"(?!backbone\.).*"
# Modules of ours that are trained in full and saved with the adapter, when they have weights.
HEAD_MODULES = ("pooler", "head")

# The projections to adapt per backbone family, tried in order; the first family whose module
# names all occur in the backbone is used.
DEFAULT_TARGETS = {
    "foundry transformer": ["attn.qkv", "attn.proj", "mlp.fc", "mlp.proj"],
    "llama / mistral / qwen2 / gemma2": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                         "down_proj"],
    "gpt-2": ["c_attn", "c_proj", "c_fc"],
    "bert": ["query", "key", "value", "dense"],
}


def import_peft():
    try:
        import peft
    except ImportError:
        raise UserError("lora.enabled needs the `peft` package: pip install 'model-foundry[hf]'.") from None
    return peft


def settings_dict(settings: Any) -> dict:
    """The `lora` config section as plain JSON values (a pydantic section or a dict)."""
    return settings.model_dump(mode="json") if hasattr(settings, "model_dump") else dict(settings)


def apply_lora(model: nn.Module, lora_settings: Any) -> nn.Module:
    """`model` with LoRA adapters injected (in place): new ones from the settings, or the saved
    adapter of `pretrained_adapter_path`, continued or frozen as `is_trainable` says."""
    settings = settings_dict(lora_settings)
    if settings.get("pretrained_adapter_path"):
        return load_adapter(model, Path(settings["pretrained_adapter_path"]),
                            trainable=settings.get("is_trainable", True))
    peft = import_peft()
    config = peft.LoraConfig(
        r=settings["r"], lora_alpha=settings["alpha"], lora_dropout=settings["dropout"],
        target_modules=settings.get("target_modules") or default_target_modules(model),
        layers_to_transform=checked_layers(model, settings.get("layers_to_transform")),
        exclude_modules=OUTSIDE_BACKBONE, modules_to_save=saved_modules(model, settings.get("modules_to_save")),
        use_rslora=settings.get("use_rslora", False), use_dora=settings.get("use_dora", False),
        init_lora_weights=settings.get("init_lora_weights", True))
    inject(peft, config, model)
    return model


def load_adapter(model: nn.Module, adapter_dir: Path, trainable: bool = True) -> nn.Module:
    """`model` with the adapter saved in `adapter_dir` injected and its weights (head included) loaded."""
    peft = import_peft()
    inject_saved_structure(peft, model, adapter_dir)
    weights = {key.removeprefix(PEFT_PREFIX): value
               for key, value in read_weights(adapter_dir / ADAPTER_WEIGHTS).items()}
    try:
        result = peft.set_peft_model_state_dict(model, weights, adapter_name=ADAPTER_NAME)
    except RuntimeError as exc:  # shapes differ: another rank, width or number of labels
        raise UserError(f"The adapter in {adapter_dir} does not fit this model: "
                        f"{str(exc).splitlines()[-1].strip()}") from None
    if result.unexpected_keys:
        raise UserError(f"The adapter in {adapter_dir} has weights this model lacks, for example "
                        f"{result.unexpected_keys[0]!r}; it was trained on another backbone.")
    if not trainable:
        for name, param in model.named_parameters():
            if is_adapter_parameter(name):
                param.requires_grad_(False)
    return model


def is_adapter_parameter(name: str) -> bool:
    """Whether a parameter (by its name in the model) is one of peft's LoRA factors."""
    return ".lora_" in name


def inject_saved_structure(peft, model: nn.Module, adapter_dir: Path) -> None:
    """Inject (freshly initialised) adapters shaped as the ones saved in `adapter_dir`."""
    if not (adapter_dir / ADAPTER_CONFIG).is_file() or not (adapter_dir / ADAPTER_WEIGHTS).is_file():
        raise UserError(f"{adapter_dir} is not a LoRA adapter directory: it needs {ADAPTER_CONFIG} and "
                        f"{ADAPTER_WEIGHTS} (a .bin adapter must be converted to safetensors first).")
    config = peft.LoraConfig.from_pretrained(str(adapter_dir))
    config.modules_to_save = saved_modules(model, config.modules_to_save)
    inject(peft, config, model)


def inject(peft, config, model: nn.Module) -> None:
    try:
        peft.inject_adapter_in_model(config, model, adapter_name=ADAPTER_NAME)
    except ValueError as exc:  # peft's message for target modules that match nothing
        raise UserError(f"lora.target_modules {config.target_modules!r} cannot be adapted in this backbone "
                        f"({exc}). Projections it has: {', '.join(projection_names(model))}.") from None


def default_target_modules(model: nn.Module) -> list[str]:
    """The projections of the first family in `DEFAULT_TARGETS` whose module names the backbone has."""
    names = projection_names(model)
    for targets in DEFAULT_TARGETS.values():
        if all(any(name == t or name.endswith("." + t) for name in names) for t in targets):
            return targets
    raise UserError("lora.target_modules is not set and this backbone is none of the known families "
                    f"({', '.join(DEFAULT_TARGETS)}); set it to some of its projections: {', '.join(names)}.")


def projection_names(model: nn.Module) -> list[str]:
    """Distinct names (block index removed) of the backbone's modules with a weight matrix."""
    names = []
    for name, module in model.backbone.named_modules():
        weight = getattr(module, "weight", None)
        generic = ".".join(part for part in name.split(".") if not part.isdigit())
        if isinstance(weight, nn.Parameter) and weight.dim() == 2 and generic not in names:
            names.append(generic)
    return names


def checked_layers(model: nn.Module, layers: list[int] | None) -> list[int] | None:
    if layers is None:
        return None
    count = len(model.backbone.blocks)
    bad = [i for i in layers if not 0 <= i < count]
    if bad:
        raise UserError(f"lora.layers_to_transform names blocks {bad}, but the backbone has {count} "
                        f"(indices 0 to {count - 1}).")
    return list(layers)


def saved_modules(model: nn.Module, extra: list[str] | None) -> list[str] | None:
    """`extra` plus our head and pooler (when they have weights): trained in full, saved with the adapter."""
    ours = [name for name in HEAD_MODULES if isinstance(getattr(model, name, None), nn.Module)
            and next(getattr(model, name).parameters(), None) is not None]
    names = list(dict.fromkeys([*(extra or []), *ours]))
    return names or None


# ---- saving, reloading, merging ----------------------------------------------------------------------
def lora_entry(model: nn.Module) -> dict | None:
    """The `lora` entry of `model_config.json`: the injected adapter's settings; None without one."""
    config = getattr(model, "peft_config", {}).get(ADAPTER_NAME)
    if config is None:
        return None
    targets = config.target_modules
    return {"r": config.r, "alpha": config.lora_alpha, "dropout": config.lora_dropout,
            "target_modules": targets if isinstance(targets, str) or targets is None else sorted(targets),
            "layers_to_transform": config.layers_to_transform, "modules_to_save": config.modules_to_save,
            "use_rslora": config.use_rslora, "use_dora": config.use_dora,
            "init_lora_weights": config.init_lora_weights}


def reattach_adapter(model: nn.Module, directory: Path) -> None:
    """The structure of the adapter saved in `directory/adapter/`, injected untrained (the weights follow)."""
    inject_saved_structure(import_peft(), model, directory / ADAPTER_DIR)


def save_lora_files(model: nn.Module, directory: Path) -> None:
    """`adapter/` of a saved LoRA model."""
    save_adapter(model, directory / ADAPTER_DIR)


def save_adapter(model: nn.Module, directory: Path) -> None:
    """The adapter in peft's format: its config, and the LoRA and `modules_to_save` weights."""
    peft = import_peft()
    directory.mkdir(parents=True, exist_ok=True)
    model.peft_config[ADAPTER_NAME].save_pretrained(str(directory))
    state = peft.get_peft_model_state_dict(model, adapter_name=ADAPTER_NAME)
    write_weights(directory / ADAPTER_WEIGHTS, {PEFT_PREFIX + key: value for key, value in state.items()})


def wrapped_modules(model: nn.Module) -> list[tuple[nn.Module, str, nn.Module, nn.Module]]:
    """(parent, attribute, peft wrapper, plain module) for every module peft wrapped.

    The plain module of a LoRA layer is its base layer; of a `modules_to_save` wrapper, the trained copy.
    """
    from peft.tuners.tuners_utils import BaseTunerLayer
    from peft.utils.other import ModulesToSaveWrapper

    found = []
    for name, module in model.named_modules():
        if isinstance(module, ModulesToSaveWrapper):
            plain = module.modules_to_save[ADAPTER_NAME]
        elif isinstance(module, BaseTunerLayer):
            plain = module.get_base_layer()
        else:
            continue
        parent_name, _, attribute = name.rpartition(".")
        found.append((model.get_submodule(parent_name), attribute, module, plain))
    return found


def has_lora(model: nn.Module) -> bool:
    return lora_entry(model) is not None


def merge_lora(model: nn.Module) -> nn.Module:
    """`model` without adapters (in place): each LoRA delta added into its base weight, the trained
    head in place of the wrapper. The result is the plain architecture, saved and loaded as such."""
    for parent, attribute, wrapper, plain in wrapped_modules(model):
        if hasattr(wrapper, "merge"):
            wrapper.merge(adapter_names=[ADAPTER_NAME])
        setattr(parent, attribute, plain)
    del model.peft_config
    return model


ATTACHMENTS["lora"] = Attachment(describe=lora_entry, save=save_lora_files, attach=reattach_adapter)
