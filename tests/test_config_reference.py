"""docs/config-reference.md is what the schema generates, every key has a description, and every
relative link of the README and docs/ leads somewhere."""
from __future__ import annotations

import re
from pathlib import Path

from pydantic import BaseModel

from model_foundry.config.schema import FoundryConfig
from model_foundry.templates.reference import REGENERATE, config_reference, section_keys

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "config-reference.md"
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCED = re.compile(r"^```.*?^```", re.DOTALL | re.MULTILINE)
INLINE_CODE = re.compile(r"`[^`\n]*`")


def schema_keys(model: type[BaseModel], prefix: str = "") -> list[str]:
    """Every leaf key of the schema, dotted, found by walking pydantic's fields (not the generator)."""
    keys = []
    for name, info in model.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            keys += schema_keys(info.annotation, f"{prefix}{name}.")
        else:
            keys.append(f"{prefix}{name}")
    return keys


def test_the_committed_reference_is_the_generated_one():
    committed = REFERENCE.read_text(encoding="utf-8") if REFERENCE.is_file() else ""
    assert committed == config_reference(), (
        f"docs/config-reference.md differs from what config/schema.py generates; regenerate it with `{REGENERATE}` "
        "from the repository root and commit it")


def test_every_key_of_the_schema_is_a_row_with_a_description():
    rows = {}
    for section, info in FoundryConfig.model_fields.items():
        rows.update({key.name: key for key in section_keys(info.annotation, f"{section}.", {})})
    assert sorted(rows) == sorted(schema_keys(FoundryConfig))
    undescribed = [name for name, key in rows.items() if not key.description.strip()]
    assert undescribed == [], (f"keys without a description: {undescribed}; write a comment line right above "
                               f"each in model_foundry/config/schema.py, then `{REGENERATE}`")


def test_the_reference_lists_the_registered_architectures_and_closed_choices():
    text = config_reference()
    architecture_row = next(line for line in text.splitlines() if line.startswith("| `architecture`"))
    for name in ("gpt", "bert", "electra", "hybrid", "lstm", "gru", "rnn", "hf"):
        assert f"`{name}`" in architecture_row
    format_row = next(line for line in text.splitlines() if line.startswith("| `format`"))
    assert "`conllu`" in format_row and "`conll`" in format_row


def github_anchor(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as hyphens."""
    text = heading.strip().lower().replace("`", "")
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(markdown: Path) -> set[str]:
    found, seen = set(), {}
    for line in FENCED.sub("", markdown.read_text(encoding="utf-8")).splitlines():
        if line.startswith("#"):
            anchor = github_anchor(line.lstrip("#"))
            count = seen.get(anchor, 0)
            seen[anchor] = count + 1
            found.add(anchor if count == 0 else f"{anchor}-{count}")
    return found


def broken_links(files: list[Path]) -> list[str]:
    """'file: target' for every relative link whose file, or whose #anchor in a Markdown file, is missing."""
    broken = []
    for source in files:
        text = INLINE_CODE.sub("", FENCED.sub("", source.read_text(encoding="utf-8")))
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue
            path_part, _, anchor = target.partition("#")
            path = (source.parent / path_part).resolve() if path_part else source
            if not path.exists():
                broken.append(f"{source.name}: {target}")
            elif anchor and path.suffix == ".md" and anchor not in anchors(path):
                broken.append(f"{source.name}: {target} (no such heading)")
    return broken


def test_every_relative_link_of_the_readme_and_docs_resolves():
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    assert len(files) > 5
    assert broken_links(files) == []


def test_the_link_check_sees_a_missing_file_and_a_missing_heading(tmp_path):
    """Positive control: a link to no file and a link to no heading are both reported."""
    (tmp_path / "other.md").write_text("# Other page\n\n## A section (with punctuation)\n", encoding="utf-8")
    page = tmp_path / "page.md"
    page.write_text("[fine](other.md#a-section-with-punctuation) [gone](missing.md) [nowhere](other.md#nope)\n"
                    "[web](https://example.org) `[in code](missing.md)`\n", encoding="utf-8")
    assert broken_links([page]) == ["page.md: missing.md", "page.md: other.md#nope (no such heading)"]
