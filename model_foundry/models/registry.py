"""The architecture registry and the model factory.

An architecture is a `BaseLanguageModel` subclass registered under a name (and aliases, such as
older spellings such as gpt2): adding one is one new file plus `@register_architecture("name")`.
`create_model` builds its config from four layers, each overriding the one before: the config
class's defaults, a recipe (`recipe="modern"`: the class's `recipes`), a size preset, then explicit values.
"""
from __future__ import annotations

from dataclasses import fields, is_dataclass, replace
from typing import TYPE_CHECKING, Any

from model_foundry.errors import UserError, closest, did_you_mean

if TYPE_CHECKING:
    from model_foundry.models.base import BaseLanguageModel

ARCHITECTURES: dict[str, type[BaseLanguageModel]] = {}
# Per architecture name: {"small": {...}, "base": {...}, "large": {...}} of config values.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {}


def register_architecture(name: str, *aliases: str):
    """Class decorator: make a model class available to `create_model` under `name` and `aliases`.

    The class's `presets` become `PRESETS[name]`; `name` is what checkpoints record.
    """
    def register(cls: type[BaseLanguageModel]) -> type[BaseLanguageModel]:
        for key in (name, *aliases):
            if key in ARCHITECTURES:
                raise ValueError(f"Architecture {key!r} is already registered by {ARCHITECTURES[key].__name__}.")
            ARCHITECTURES[key] = cls
            PRESETS[key] = cls.presets
        cls.architecture_name = name
        return cls

    return register


def get_architecture(name: str) -> type[BaseLanguageModel]:
    """The model class registered as `name`."""
    if name not in ARCHITECTURES:
        raise UserError(f"Unknown model architecture {name!r}: {did_you_mean(name, ARCHITECTURES)} "
                        f"Registered architectures: {', '.join(sorted(ARCHITECTURES))}.")
    return ARCHITECTURES[name]


def create_model(architecture: str | Any, preset: str | None = None, recipe: str | None = None,
                 **values: Any) -> BaseLanguageModel:
    """A freshly initialised model.

    `architecture` is a registered name or a config dataclass instance (e.g. `GPTConfig(...)`);
    `recipe` (classic, modern), `preset` (small, base, large) and then `values` override its
    settings. Unknown keys and invalid values raise `UserError`.
    """
    cls, config = create_config(architecture, preset, recipe, **values)
    return cls(config)


def create_config(architecture: str | Any, preset: str | None = None, recipe: str | None = None,
                  **values: Any) -> tuple[type[BaseLanguageModel], Any]:
    """The architecture class and its config, built as `create_model` builds them (no weights)."""
    if is_dataclass(architecture) and not isinstance(architecture, type):
        cls = architecture_of_config(architecture)
        overrides = {**recipe_values(cls, recipe), **preset_values(cls, preset), **values}
        check_keys(cls, overrides)
        return cls, replace(architecture, **overrides) if overrides else architecture
    cls = get_architecture(architecture)
    settings = {**recipe_values(cls, recipe), **preset_values(cls, preset), **values}
    check_keys(cls, settings)
    return cls, cls.config_class(**settings)


def recipe_values(cls: type[BaseLanguageModel], recipe: str | None) -> dict[str, Any]:
    """The settings a recipe gives an architecture; None gives none (the config class's defaults)."""
    if recipe is None:
        return {}
    recipes = cls.recipes
    if not recipes:
        raise UserError(f"model.recipe is {recipe!r}, but architecture {cls.architecture_name!r} has no recipes "
                        f"(gpt, bert and hybrid do); remove model.recipe.")
    if recipe not in recipes:
        raise UserError(f"model.recipe {recipe!r} is not a recipe of architecture {cls.architecture_name!r}: "
                        f"{did_you_mean(recipe, recipes)} Recipes: {', '.join(recipes)}.")
    return dict(recipes[recipe])


def architecture_of_config(config: Any) -> type[BaseLanguageModel]:
    """The registered class whose `config_class` is exactly the type of `config`."""
    for cls in ARCHITECTURES.values():
        if type(config) is cls.config_class:
            return cls
    raise UserError(f"No registered architecture uses the config class {type(config).__name__}; "
                    f"registered architectures: {', '.join(sorted(ARCHITECTURES))}.")


def preset_values(cls: type[BaseLanguageModel], preset: str | None) -> dict[str, Any]:
    if preset is None:
        return {}
    presets = PRESETS[cls.architecture_name]
    if preset not in presets:
        raise UserError(f"model.preset {preset!r} is not a size of architecture {cls.architecture_name!r}: "
                        f"{did_you_mean(preset, presets)}")
    return dict(presets[preset])


def check_keys(cls: type[BaseLanguageModel], values: dict[str, Any]) -> None:
    """Refuse settings the architecture's config does not have, naming the valid ones."""
    valid = [f.name for f in fields(cls.config_class)]
    for key in values:
        if key not in valid:
            near = closest(key, valid)
            hint = f" Did you mean {near[0]!r}?" if near else ""
            raise UserError(f"model.{key} is not a setting of architecture {cls.architecture_name!r}.{hint} "
                            f"Valid keys: {', '.join(valid)}.")
