"""A self-contained Hugging Face export: our own model code, flattened into the export directory.

For a model no `transformers` class computes exactly, `foundry export --format hf` writes
`inference/remote_model.py` as `modeling_foundry.py` and every module of ours that it imports, each as
one flat file beside it (`model_foundry.models.backbones.attention` -> `foundry_models_backbones_attention.py`),
with `from model_foundry.x.y import ...` rewritten to `from .foundry_x_y import ...`. transformers
copies a remote-code module together with its relative imports, so `AutoModel*.from_pretrained(DIR,
trust_remote_code=True)` runs with only torch and transformers installed, on the very source that
trained the model: there is no second implementation to drift from the first.
"""
from __future__ import annotations

import ast
import re
from pathlib import Path

import model_foundry

PACKAGE = "model_foundry"
ENTRY_MODULE = "model_foundry.inference.remote_model"
ENTRY_FILE = "modeling_foundry"
IMPORT_LINE = re.compile(r"^(\s*)from model_foundry((?:\.\w+)+) import", re.MULTILINE)


def flat_name(module: str) -> str:
    """The file name (without .py) that `module` gets in an export."""
    if module == ENTRY_MODULE:
        return ENTRY_FILE
    return "foundry_" + module.removeprefix(PACKAGE + ".").replace(".", "_")


def source_file(module: str) -> Path:
    """The source of one of our modules (a package's `__init__.py`), found without importing it."""
    path = Path(model_foundry.__file__).parent.joinpath(*module.split(".")[1:])
    return path / "__init__.py" if path.is_dir() else path.with_suffix(".py")


def imported_modules(module: str) -> list[str]:
    """Our modules that `module` imports, anywhere in its source (lazy imports in functions too).

    Only `from model_foundry.x import name` is allowed: the other forms cannot be flattened (a
    bare `import model_foundry.x` or `from model_foundry.x import submodule` would need the package),
    so they are a programming error here, caught by the export tests.
    """
    tree = ast.parse(source_file(module).read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import) and any(alias.name.split(".")[0] == PACKAGE for alias in node.names):
            raise RuntimeError(f"{module} imports model_foundry with `import`; use `from ... import`.")
        if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] == PACKAGE):
            if node.level or node.module == PACKAGE:
                raise RuntimeError(f"{module} line {node.lineno}: only `from model_foundry.<module> import` "
                                   "can be flattened into an export.")
            for alias in node.names:
                if source_file(f"{node.module}.{alias.name}").exists():
                    raise RuntimeError(f"{module} line {node.lineno} imports the module {alias.name} from "
                                       f"{node.module}; import names from {node.module}.{alias.name} instead.")
            found.append(node.module)
    return found


def module_closure(root: str = ENTRY_MODULE) -> list[str]:
    """`root` and every module of ours it needs, transitively, in a stable order."""
    seen, pending = [], [root]
    while pending:
        module = pending.pop()
        if module not in seen:
            seen.append(module)
            pending.extend(imported_modules(module))
    return sorted(seen)


def flattened_source(module: str) -> str:
    """The source of `module` with our imports made relative to its flat neighbours."""
    text = source_file(module).read_text(encoding="utf-8")
    return IMPORT_LINE.sub(lambda match: f"{match[1]}from .{flat_name(PACKAGE + match[2])} import", text)


def write_model_code(out: Path) -> list[str]:
    """The modeling files written into `out`; their names."""
    names = []
    for module in module_closure():
        name = flat_name(module) + ".py"
        (out / name).write_text(flattened_source(module), encoding="utf-8")
        names.append(name)
    return names


def auto_map(auto_classes: list[str]) -> dict[str, str]:
    """config.json's `auto_map`: each Auto class -> `modeling_foundry.<our class>`."""
    from model_foundry.inference.remote_model import AUTO_CLASSES

    return {auto: f"{ENTRY_FILE}.{AUTO_CLASSES[auto].__name__}" for auto in auto_classes}
