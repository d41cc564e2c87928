"""Shared fixtures. Tests that read ../shared/data skip cleanly when it is absent."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


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
    (recurrent models take no `n_head`)."""
    config = {
        "experiment": {"name": f"tiny_{arch}", "seed": 7, "output_dir": str(out_root)},
        "tokenizer": {"type": "char", "vocab_size": 64},
        "data": {"train": {"path": str(corpus)}, "val_fraction": 0.1},
        "model": {"architecture": arch, "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32},
        "training": {"max_steps": 30, "batch_size": 8, "learning_rate": 3e-3, "warmup_steps": 3,
                     "eval_interval": 10, "eval_iters": 2, "log_interval": 5, "device": "cpu"},
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
