"""Exact resume: a run killed with SIGKILL at an arbitrary step and resumed ends bit-for-bit where the
uninterrupted run ends; SIGTERM saves `checkpoints/last` before exiting."""
from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from tests.conftest import tiny_config

FOUNDRY = [sys.executable, "-m", "model_foundry.cli.main"]


def resume_config(corpus: Path, root: Path, arch: str) -> Path:
    # Dropout and MLM masking make the run depend on every RNG and on the data position.
    config = tiny_config(corpus, root, arch, model={"dropout": 0.1, "n_embd": 64, "block_size": 64},
                         training={"max_steps": 150, "batch_size": 16, "eval_interval": 25, "save_interval": 10,
                                   "log_interval": 1, "eval_iters": 2, "gradient_accumulation_steps": 2})
    path = root / f"{arch}.yaml"
    root.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(config))
    return path


def last_logged_step(run_dir: Path) -> int:
    try:
        with open(run_dir / "metrics" / "train.csv", newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (FileNotFoundError, StopIteration):
        return 0
    return int(rows[-1]["step"]) if rows and rows[-1].get("step") else 0


def foundry_env() -> dict[str, str]:
    """One thread for every run (bit-identical results need the same thread count: it fixes the order of
    floating-point sums), and one because tiny models gain nothing from more on a busy machine."""
    return {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]), "OMP_NUM_THREADS": "1"}


def start(config: Path, out: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([*FOUNDRY, "train", str(config), "--out", str(out), *extra], env=foundry_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_until_step(config: Path, out: Path, step: int, sig: int) -> subprocess.Popen:
    process = start(config, out)
    deadline = time.monotonic() + 240  # stops a hung run only: minutes on a busy machine
    while last_logged_step(out) < step:
        assert process.poll() is None, process.communicate()[1][-2000:]
        assert time.monotonic() < deadline, "the run did not reach the kill step in time"
        time.sleep(0.02)
    process.send_signal(sig)
    process.wait(timeout=240)
    return process


def weights(run_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(run_dir / "checkpoints" / "last" / "model.safetensors")


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt", "bert"])
def test_sigkill_then_resume_is_bit_identical(tiny_corpus, tmp_path, arch):
    config = resume_config(tiny_corpus, tmp_path, arch)
    reference = tmp_path / "reference"
    done = subprocess.run([*FOUNDRY, "train", str(config), "--out", str(reference)], capture_output=True,
                          text=True, env=foundry_env())
    assert done.returncode == 0, done.stderr[-2000:]

    interrupted = tmp_path / "interrupted"
    killed = run_until_step(config, interrupted, step=37, sig=signal.SIGKILL)
    assert killed.returncode == -signal.SIGKILL
    resumed = start(config, interrupted, "--set", "training.resume=true")
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err[-2000:]
    assert "Resuming at step" in err

    want, got = weights(reference), weights(interrupted)
    assert want.keys() == got.keys()
    for name in want:
        assert torch.equal(want[name], got[name]), name
    steps = [int(r["step"]) for r in csv.DictReader(open(interrupted / "metrics" / "train.csv"))]
    assert steps == list(range(1, 151)), "rows after the checkpoint must be replaced, not duplicated"


@pytest.mark.slow
def test_sigterm_saves_last_and_exits(tiny_corpus, tmp_path):
    config = resume_config(tiny_corpus, tmp_path, "gpt")
    out = tmp_path / "run"
    stopped = run_until_step(config, out, step=13, sig=signal.SIGTERM)
    assert stopped.returncode == 128 + signal.SIGTERM
    state = torch.load(out / "checkpoints" / "last" / "trainer_state.pt", weights_only=True)
    assert state["step"] >= 13
