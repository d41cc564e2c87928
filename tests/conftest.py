"""Shared fixtures and helpers. Tests that read ../shared/data skip cleanly when it is absent.

Every test runs with HOME and the tools' cache directories in a temporary directory of the session
(nothing is written to the real home), and with the architecture and task registries as they were
before it (a test may register its own).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Where programs write per-user files: HOME covers ~/.cache (the CPU peak probe, the quickstart's
# data, matplotlib's font list, wandb's logs, Hugging Face) and the others point there too in case a
# user has set them. torch.compile keeps its cache in the system's temporary directory
# (/tmp/torchinductor_$USER), not the home; a cold one makes the compiled-run test take 110 s, not 6.
HOME_VARIABLES = ("HOME", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "HF_HOME", "WANDB_DIR",
                  "WANDB_CACHE_DIR", "WANDB_CONFIG_DIR", "WANDB_DATA_DIR", "MPLCONFIGDIR")
_real_environment: dict[str, str | None] = {}


def pytest_configure(config: pytest.Config) -> None:
    """A home of the session's own, set before the test modules are imported (some modules read
    the home when imported) and inherited by the processes the tests start."""
    home = Path(tempfile.mkdtemp(prefix="foundry-test-home-"))
    copy_cpu_peak_measurement(Path.home(), home)
    for name in HOME_VARIABLES:
        _real_environment[name] = os.environ.get(name)
    os.environ["HOME"] = str(home)
    for name in HOME_VARIABLES[1:]:
        os.environ[name] = str(home / name.lower())


def copy_cpu_peak_measurement(real_home: Path, home: Path) -> None:
    """Start the session's home with the CPU peak FLOP/s already measured on this machine (read, never
    written): every trainer would otherwise probe it again whenever other work keeps it from caching."""
    measured = Path(".cache") / "model_foundry" / "cpu_peak_flops.json"
    if (real_home / measured).is_file():
        (home / measured).parent.mkdir(parents=True)
        shutil.copyfile(real_home / measured, home / measured)


def pytest_unconfigure(config: pytest.Config) -> None:
    home = os.environ["HOME"]
    for name, value in _real_environment.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(autouse=True)
def restore_registries():
    """The registered architectures and tasks after a test are those before it: a test that registers
    its own (tests/test_new_architecture.py) leaves no trace for the tests after it."""
    from model_foundry.models import registry as architectures
    from model_foundry.tasks import registry as tasks  # importing the packages registers the built-in ones

    saved = [(table, dict(table)) for table in (architectures.ARCHITECTURES, architectures.PRESETS, tasks.TASKS)]
    yield
    for table, entries in saved:
        table.clear()
        table.update(entries)


def unwrapped(text: str) -> str:
    """`text` without any whitespace. The CLI wraps its one-paragraph errors at a fixed width,
    breaking at spaces and after hyphens, inside paths too, so where a line breaks depends on the
    length of the temporary path: match messages on this, through `says`."""
    return "".join(text.split())


def says(output: str, phrase: str) -> bool:
    """Whether `output` contains `phrase`, wherever a wrapped paragraph broke its lines."""
    return unwrapped(phrase) in unwrapped(output)


@pytest.fixture(autouse=True, scope="session")
def one_thread():
    """Test models are tiny: they run fastest on one thread, and a second one only spin-waits on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True, scope="session")
def no_cpu_peak_probe():
    """Every training run logs MFU, and on a CPU its peak is measured (a second of matrix products, cached
    under $HOME): state it unknown instead, for this process and the runs it starts, from the session's
    start (module-scoped fixtures train too). A test about MFU states a peak or deletes the variable."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MODEL_FOUNDRY_CPU_PEAK_FLOPS", "0")
        yield


@pytest.fixture
def shared_data() -> Path:
    """The real data sets beside the clone; skips the test when they are not there."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA}")
    return SHARED_DATA


@pytest.fixture
def tiny_corpus(tmp_path: Path) -> Path:
    """A small, repetitive English text file: enough for a tokenizer and a loss that falls."""
    lines = [
        "the cat sat on the mat and the dog sat on the log .",
        "a bird sang in the tree while the sun rose over the hill .",
        "she sells sea shells by the sea shore every summer morning .",
        "to be or not to be , that is the question we ask .",
    ]
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(lines * 40) + "\n", encoding="utf-8")
    return path


def tiny_config(corpus: Path, out_root: Path, arch: str = "gpt", **sections) -> dict:
    """A config for a seconds-long run: char tokenizer, a two-layer model, a few dozen steps
    (recurrent models take no `n_head`). fp32, not `precision: auto`: auto is bf16 on some CPUs and
    fp32 on others, and a test's numbers must not depend on the processor."""
    config = {
        "experiment": {"name": f"tiny_{arch}", "seed": 7, "output_dir": str(out_root)},
        "tokenizer": {"type": "char", "vocab_size": 64},
        "data": {"train": {"path": str(corpus)}, "val_fraction": 0.1},
        "model": {"architecture": arch, "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32},
        "training": {"max_steps": 30, "batch_size": 8, "learning_rate": 3e-3, "warmup_steps": 3,
                     "eval_interval": 10, "eval_iters": 2, "log_interval": 5, "device": "cpu",
                     "precision": "fp32"},
    }
    if arch in ("lstm", "gru", "rnn"):
        del config["model"]["n_head"]
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


def train_tiny_runs(root: Path, lines: list[str], archs: tuple[str, ...], **sections) -> dict[str, Path]:
    """Tiny pretraining runs of each architecture on `lines` x 60 (for module-scoped fixtures):
    {arch: run directory}."""
    import model_foundry

    corpus = root / "corpus.txt"
    corpus.write_text("\n".join(lines * 60) + "\n", encoding="utf-8")
    runs = {}
    for arch in archs:
        model_foundry.train(tiny_config(corpus, root / "experiments", arch, **sections))
        runs[arch] = root / "experiments" / "pretraining" / f"tiny_{arch}"
    return runs


@pytest.fixture
def make_config(tiny_corpus: Path, tmp_path: Path):
    """Build a tiny run config: make_config(arch="bert", training={...})."""
    def build(arch: str = "gpt", **sections) -> dict:
        return tiny_config(tiny_corpus, tmp_path / "experiments", arch, **sections)
    return build
