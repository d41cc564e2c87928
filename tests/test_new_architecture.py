"""The "Adding an architecture" example of docs/models.md is one file that trains, saves, loads and templates."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

import model_foundry
from model_foundry.models import BaseLanguageModel
from model_foundry.templates import new_pretraining

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "models.md"


def readme_example(tmp_path) -> Path:
    section = GUIDE.read_text(encoding="utf-8").split("\n## Adding an architecture\n", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    path = tmp_path / "tiny_architecture.py"
    path.write_text(code, encoding="utf-8")
    return path


@pytest.mark.slow
def test_the_readme_architecture_is_one_file_that_works(tmp_path, make_config):
    spec = importlib.util.spec_from_file_location("tiny_architecture", readme_example(tmp_path))
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
    results = model_foundry.train(make_config("tiny", training={"max_steps": 20, "eval_interval": 20}))
    assert results["task"] == "causal_lm" and results["val"]["loss"] < 3.0  # chance is ln(~30 chars) = 3.4
    run = tmp_path / "experiments" / "pretraining" / "tiny_tiny"
    model = BaseLanguageModel.from_pretrained(run / "checkpoints" / "best")
    assert type(model).__name__ == "Tiny"
    template = new_pretraining("fresh", arch="tiny", root=tmp_path / "new").read_text()
    assert "architecture: tiny" in template and "type: causal_lm" in template and "type: bpe" in template
