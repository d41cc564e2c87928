"""The tests' own isolation (tests/conftest.py): a home of the session's own, registries restored."""
from __future__ import annotations

import os
import pwd
import tempfile
from pathlib import Path

from model_foundry.models import BaseLanguageModel, GPT, GPTConfig, get_architecture, register_architecture
from model_foundry.tasks.registry import TASKS, register_task
from tests.conftest import says

REAL_HOME = Path(pwd.getpwuid(os.getuid()).pw_dir)


def test_the_home_and_the_caches_are_the_sessions_own():
    home = Path.home()
    assert home != REAL_HOME and home.is_relative_to(tempfile.gettempdir())
    for name in ("XDG_CACHE_HOME", "HF_HOME", "WANDB_DIR", "MPLCONFIGDIR"):
        assert Path(os.environ[name]).is_relative_to(home), name


class RegisteredByATest(GPT):
    config_class = GPTConfig


def test_a_test_may_register_an_architecture_and_a_task():
    register_architecture("registered_by_a_test")(RegisteredByATest)
    register_task("registered_by_a_test")(type("TaskOfATest", (), {}))
    assert get_architecture("registered_by_a_test") is RegisteredByATest and "registered_by_a_test" in TASKS


def test_and_the_next_test_does_not_see_them():
    """Runs after the test above (pytest keeps a file's order)."""
    from model_foundry.models import ARCHITECTURES

    assert "registered_by_a_test" not in ARCHITECTURES and "registered_by_a_test" not in TASKS
    assert issubclass(get_architecture("gpt"), BaseLanguageModel)  # the built-in ones stay


def test_says_matches_a_phrase_wherever_the_paragraph_wrapped():
    wrapped = "error: /tmp/pytest-of-\nroot/very/long/train.tsv:10: the 'label' label\nis empty; every row needs one."
    assert says(wrapped, "/tmp/pytest-of-root/very/long/train.tsv:10") and says(wrapped, "label is empty")
    assert not says(wrapped, "label is missing")
