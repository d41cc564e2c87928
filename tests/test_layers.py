"""The sub-packages import only downwards (imports inside functions count), and reading a config
loads neither torch nor the models."""
from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "model_foundry"
# Bottom to top; a package may import the ones before it (and the modules at the top of the package).
LAYERS = ["ranks", "errors", "optional_dependencies", "checkpoint_files", "config", "tokenizer", "data", "models",
          "tasks", "templates", "training", "inference", "reporting", "sweeps", "quickstart", "compat", "cli"]


def imported_parts(path: Path) -> set[str]:
    """The first component under model_foundry of every module `path` imports, wherever the import is."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "model_foundry" and len(parts) > 1:
                found.add(parts[1])
    return found


def upward_imports() -> list[str]:
    rank = {name: i for i, name in enumerate(LAYERS)}
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if len(relative.parts) == 1:  # the package's own __init__/__main__ sit on top of everything
            continue
        own = relative.parts[0]
        for target in imported_parts(path) - {own}:
            if target in rank and rank[target] > rank[own]:
                problems.append(f"{relative} imports model_foundry.{target}")
    return problems


def test_every_sub_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    modules = {p.stem for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    assert packages | modules <= set(LAYERS), (packages | modules) - set(LAYERS)


def test_sub_packages_import_only_downwards():
    assert upward_imports() == []


def test_the_layer_check_sees_an_upward_import(tmp_path, monkeypatch):
    """Positive control: a config module importing the models is reported."""
    fake = tmp_path / "model_foundry"
    (fake / "config").mkdir(parents=True)
    (fake / "config" / "bad.py").write_text("def f():\n    from model_foundry.models import GPT\n")
    monkeypatch.setattr(sys.modules[__name__], "PACKAGE", fake)
    assert upward_imports() == ["config/bad.py imports model_foundry.models"]


def test_reading_a_config_loads_neither_torch_nor_the_models():
    code = ("import sys; from model_foundry.config import load_config; "
            "load_config({'model': {'architecture': 'gpt'}, 'task': {'type': 'causal_lm'}}); "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('model_foundry.models')))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_each_list_of_choices_is_the_one_its_registry_implements():
    from model_foundry.config import choices
    from model_foundry.models.backbones import transformer
    from model_foundry.models.heads import CRITERIA, HEADS, POOLERS
    from model_foundry.tokenizer.training import BUILDERS

    assert tuple(POOLERS) == choices.POOLERS and tuple(HEADS) == choices.HEADS
    assert tuple(CRITERIA) == choices.CRITERIA and tuple(transformer.ACTIVATIONS) == choices.ACTIVATIONS
    assert tuple(BUILDERS) == choices.TOKENIZER_TYPES
