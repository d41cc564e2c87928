"""Read a YAML config, apply `--set` overrides, validate, and explain every mistake.

A config is data: it is parsed with `yaml.safe_load` and never executed. Validation errors become
one `UserError` paragraph naming the file, the line, the dotted key and what would be valid.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from model_foundry.config.schema import FoundryConfig, Section
from model_foundry.errors import UserError, did_you_mean


@dataclass
class LoadedConfig:
    """A validated config and where it came from (None for a dict built in Python)."""

    config: FoundryConfig
    path: Path | None


def load_config(source: str | Path | dict | FoundryConfig,
                overrides: dict[str, Any] | list[str] | None = None) -> LoadedConfig:
    """Validate a YAML file, a dict or a config object, with dotted-key overrides applied on top."""
    path: Path | None = None
    text = ""
    if isinstance(source, FoundryConfig):
        raw = source.model_dump(exclude_unset=True)
    elif isinstance(source, dict):
        raw = copy.deepcopy(source)
    else:
        path = Path(source)
        text, raw = read_yaml(path)
    override_map = parse_overrides(overrides)
    for key, value in override_map.items():
        set_dotted(raw, key, value)
    try:
        return LoadedConfig(FoundryConfig.model_validate(raw), path)
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc, path, text, set(override_map))) from None


def read_yaml(path: Path) -> tuple[str, dict]:
    """The file's text and its mapping; a missing file or broken YAML is the user's to fix."""
    if not path.is_file():
        raise UserError(f"Config file {path} does not exist. Pass a YAML file or an experiment name "
                        "(see `foundry new pretraining NAME`).")
    text = path.read_text(encoding="utf-8")
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise UserError(f"Config file {path}{where} is not valid YAML: {problem}.") from None
    if raw is None:
        return text, {}
    if not isinstance(raw, dict):
        raise UserError(f"Config file {path} must be a mapping of sections (experiment:, model:, "
                        f"training:, ...), not a {type(raw).__name__}.")
    return text, raw


def parse_overrides(overrides: dict[str, Any] | list[str] | None) -> dict[str, Any]:
    """`["training.lr=3e-4", ...]` or a dict into {dotted key: value}; values are read as YAML."""
    if overrides is None:
        return {}
    if isinstance(overrides, dict):
        return dict(overrides)
    parsed: dict[str, Any] = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"Override {item!r} is not of the form KEY=VALUE; for example "
                            "--set training.learning_rate=3e-4.")
        parsed[key.strip()] = yaml.safe_load(value) if value.strip() else None
    return parsed


def set_dotted(raw: dict, key: str, value: Any) -> None:
    """Set `a.b.c` inside nested dicts, creating sections as needed."""
    parts = key.split(".")
    node = raw
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child
    node[parts[-1]] = value


def describe_validation_error(exc: ValidationError, path: Path | None, text: str,
                              overridden: set[str]) -> str:
    """All of pydantic's complaints as one readable paragraph."""
    problems = []
    for error in exc.errors():
        loc = [str(part) for part in error["loc"] if not isinstance(part, int)]
        dotted = ".".join(loc)
        where = location_of(dotted, path, text, overridden)
        if error["type"] == "extra_forbidden":
            problems.append(where + unknown_key_problem(loc))
        else:
            message = error["msg"].removeprefix("Value error, ")
            shown = f" = {error['input']!r}" if not isinstance(error["input"], dict) else ""
            problems.append(f"{where}{dotted or 'config'}{shown}: {message}")
    source = f"Config {path}" if path else "Config"
    return f"{source} is invalid: " + "; ".join(problems) + "."


def unknown_key_problem(loc: list[str]) -> str:
    """A key the section does not take: an alternative name of a key that is given too, or a typo."""
    dotted = ".".join(loc)
    canonical = alternative_key_names(loc[:-1]).get(loc[-1])
    if canonical is not None:
        other = ".".join([*loc[:-1], canonical])
        return (f"{dotted!r} and {other!r} are the same key ({loc[-1]!r} is an alternative name of "
                f"{canonical!r}); keep one")
    kind = "section" if len(loc) == 1 else "key"
    return f"unknown {kind} {dotted!r}; {did_you_mean(loc[-1], field_names(loc[:-1]))}"


def location_of(dotted: str, path: Path | None, text: str, overridden: set[str]) -> str:
    """'line N: ' for a key in the file, '--set KEY: ' for an override, or nothing."""
    if dotted in overridden:
        return f"--set {dotted}: "
    line = line_of_key(text, dotted.split(".")) if text else None
    return f"line {line}: " if line else ""


def line_of_key(text: str, keys: list[str]) -> int | None:
    """The 1-based line where a nested key is written (composing nodes runs no constructors)."""
    try:
        node = yaml.compose(text)
    except yaml.YAMLError:
        return None
    line = None
    for key in keys:
        if not isinstance(node, yaml.MappingNode):
            return line
        for key_node, value_node in node.value:
            if key_node.value == key:
                line, node = key_node.start_mark.line + 1, value_node
                break
        else:
            return line
    return line


def section_at(loc: list[str]) -> type[BaseModel]:
    """The schema class of the section at `loc` (the whole config for an empty loc)."""
    model: type[BaseModel] = FoundryConfig
    for part in loc:
        annotation = model.model_fields[part].annotation if part in model.model_fields else None
        if not (isinstance(annotation, type) and issubclass(annotation, Section)):
            break
        model = annotation
    return model


def field_names(loc: list[str]) -> list[str]:
    """The canonical keys of the section at `loc` (the root's sections for an empty loc)."""
    return list(section_at(loc).model_fields)


def alternative_key_names(loc: list[str]) -> dict[str, str]:
    """{alternative key name: canonical key} of the section at `loc`, e.g. {'lr': 'learning_rate'}: the
    names other systems give a key, which the schema accepts as aliases (`schema.alias`)."""
    names = {}
    for name, field in section_at(loc).model_fields.items():
        choices = getattr(field.validation_alias, "choices", ())
        names.update({choice: name for choice in choices if isinstance(choice, str) and choice != name})
    return names


def save_yaml(data: dict, path: Path) -> None:
    """Write a mapping as YAML, keys in schema order."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True), encoding="utf-8")
