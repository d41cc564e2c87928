"""The config reference, docs/config-reference.md, generated from the schema so that it cannot go stale:

    python -m model_foundry.templates.reference > docs/config-reference.md

Every key of `FoundryConfig`, section by section, with its type, default, allowed values (a closed
list's choices, numeric bounds, and for the open registries `model.architecture` and `task.type`
the registered names), older spellings and description. A key's description is the comment block
right above it in its section's class (config/schema.py, config/starting_point.py), a section's its
docstring. A comment block that opens with
`----` starts a group of keys: its lines up to the first one ending in `----` or `.` are the
group's note, printed above the group's keys, and the rest describes the key below it.

This lives here rather than in config/ because the registered architectures and tasks are among
the allowed values, and config/ imports neither models/ nor tasks/.
"""
from __future__ import annotations

import ast
import inspect
import json
import re
import types
import typing
from dataclasses import dataclass

import annotated_types
from pydantic import AliasChoices
from pydantic.fields import FieldInfo

from model_foundry.config.schema import FoundryConfig, Section
from model_foundry.models import ARCHITECTURES
from model_foundry.tasks import TASKS

REGENERATE = "python -m model_foundry.templates.reference > docs/config-reference.md"
BOUNDS = ((annotated_types.Ge, "ge", ">="), (annotated_types.Gt, "gt", ">"),
          (annotated_types.Le, "le", "<="), (annotated_types.Lt, "lt", "<"))


@dataclass
class Key:
    """One row of the reference."""

    name: str
    type: str
    default: str
    allowed: str
    aliases: str
    description: str
    group: str | None = None


def field_comments(cls: type) -> dict[str, tuple[str | None, str]]:
    """Per field of a section class, the comment block above it: (group note or None, description)."""
    source = inspect.getsource(cls)
    lines = source.splitlines()
    comments = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            block, index = [], node.lineno - 2
            while index >= 0 and lines[index].strip().startswith("#"):
                block.insert(0, lines[index].strip()[1:].strip())
                index -= 1
            comments[node.target.id] = split_group_note(block)
    return comments


def split_group_note(block: list[str]) -> tuple[str | None, str]:
    """A `---- note ----` opening (see the module docstring) apart from the key's own description."""
    if not block or not block[0].startswith("----"):
        return None, " ".join(block)
    end = next((i for i, line in enumerate(block) if line.endswith(("----", "."))), len(block) - 1)
    return " ".join(block[:end + 1]).strip("- "), " ".join(block[end + 1:])


def type_name(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if origin is typing.Literal:
        return " | ".join(sorted({type(value).__name__ for value in args}))
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(arg) for arg in args)
    if origin is list:
        return f"list[{type_name(args[0])}]"
    return annotation.__name__


def literal_choices(annotation) -> list:
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    return [choice for arg in typing.get_args(annotation) for choice in literal_choices(arg)]


def yaml_value(value) -> str:
    if value == "":
        return '""'
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def registered(registry: dict[str, type], canonical) -> str:
    """The package's own registered names (a test's stand-ins are left out), aliases beside their name."""
    names: dict[str, list[str]] = {}
    for name, cls in sorted(registry.items()):
        if cls.__module__.startswith("model_foundry."):
            names.setdefault(canonical(name, cls), [])
            if name != canonical(name, cls):
                names[canonical(name, cls)].append(name)
    return ", ".join(f"`{name}`" + (f" (alias {', '.join(f'`{a}`' for a in aliases)})" if aliases else "")
                     for name, aliases in sorted(names.items()))


def open_choices() -> dict[str, str]:
    """Allowed values of the keys whose choices are registries, not closed lists."""
    return {"model.architecture": registered(ARCHITECTURES, lambda name, cls: cls.architecture_name),
            "task.type": registered(TASKS, lambda name, cls: name)}


def allowed_values(info: FieldInfo, dotted: str, registries: dict[str, str]) -> str:
    parts = [", ".join(f"`{yaml_value(c)}`" for c in literal_choices(info.annotation))]
    parts.append(registries.get(dotted, ""))
    for constraint in info.metadata:
        parts += [f"{symbol} {getattr(constraint, attribute)}" for kind, attribute, symbol in BOUNDS
                  if isinstance(constraint, kind)]
    return "; ".join(part for part in parts if part)


def aliases_of(info: FieldInfo) -> str:
    if isinstance(info.validation_alias, AliasChoices):
        return ", ".join(f"`{name}`" for name in info.validation_alias.choices[1:])
    return ""


def section_keys(cls: type[Section], prefix: str, registries: dict[str, str]) -> list[Key]:
    comments = field_comments(cls)
    keys = []
    for name, info in cls.model_fields.items():
        group, description = comments.get(name, (None, ""))
        if isinstance(info.annotation, type) and issubclass(info.annotation, Section):
            for inner in section_keys(info.annotation, f"{prefix}{name}.", registries):
                inner.description = " ".join(part for part in (description, inner.description) if part)
                inner.group = inner.group or group
                keys.append(inner)
            continue
        dotted = f"{prefix}{name}"
        keys.append(Key(dotted, type_name(info.annotation), yaml_value(info.default),
                        allowed_values(info, dotted, registries), aliases_of(info), description, group))
    return keys


def cell(text: str) -> str:
    """Text safe inside a Markdown table cell: `|` would end the cell, and `<` outside code spans
    could open an HTML tag."""
    spans = text.replace("|", "\\|").split("`")
    return "`".join(span if index % 2 else span.replace("<", "&lt;") for index, span in enumerate(spans))


def linked(text: str) -> str:
    """`docs/X.md` in a docstring becomes a link (the reference sits in docs/ itself)."""
    return re.sub(r"docs/([\w-]+\.md)", r"[\1](\1)", text)


def section_markdown(name: str, cls: type[Section], registries: dict[str, str]) -> list[str]:
    lines = [f"## {name}", ""]
    if cls.__doc__:
        lines += [linked(" ".join(cls.__doc__.split())), ""]
    header = ["| key | type | default | allowed values | older spellings | description |",
              "| --- | --- | --- | --- | --- | --- |"]
    lines += header
    for key in section_keys(cls, f"{name}.", registries):
        if key.group:
            lines += ["", f"**{cell(key.group)}**", ""] + header
        short = key.name.split(".", 1)[1]
        lines.append(f"| `{short}` | {cell(key.type)} | `{cell(key.default)}` | {cell(key.allowed)} | "
                     f"{key.aliases} | {cell(key.description)} |")
    return lines + [""]


def config_reference() -> str:
    """The Markdown of docs/config-reference.md."""
    registries = open_choices()
    sections = list(FoundryConfig.model_fields.items())
    lines = ["# Config reference", "",
             f"Generated from the schema (`model_foundry/config/schema.py`, `starting_point.py`) by "
             f"`{REGENERATE}`; edit the schema, not this file",
             "(tests/test_config_reference.py fails when they differ). How configs work: [configs.md](configs.md).",
             "Keys are written `section.key` in `--set` and nested in YAML; `null` (None in the descriptions) means unset.", "",
             "Sections: " + ", ".join(f"[`{name}`](#{name})" for name, _ in sections) + ".", ""]
    for name, info in sections:
        lines += section_markdown(name, info.annotation, registries)
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(config_reference(), end="")
