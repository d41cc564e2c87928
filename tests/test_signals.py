"""Ctrl-C on `foundry train`: the run saves `checkpoints/last` at the step it reached, exits 130 without a
traceback, and `training.resume: true` carries it on to the end, where an uninterrupted run ends."""
from __future__ import annotations

import csv
import os
import re
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

REPO = Path(__file__).resolve().parents[1]
MAX_STEPS = 80
# Bounds that only stop a hung process: a tiny run takes seconds, but minutes on a busy machine.
PATIENCE_S = 240


def foundry_command() -> list[str]:
    """The installed `foundry` console script beside this Python (what a user runs), else the module."""
    script = Path(sys.executable).with_name("foundry")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "model_foundry.cli.main"]


def foundry_env() -> dict[str, str]:
    # One thread: the interrupted-and-resumed run is compared bit for bit with an uninterrupted one.
    return {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def logged_steps(run_dir: Path) -> list[int]:
    try:
        with open(run_dir / "metrics" / "train.csv", newline="") as handle:
            return [int(row["step"]) for row in csv.DictReader(handle) if row.get("step")]
    except FileNotFoundError:
        return []


def saved_step(run_dir: Path) -> int:
    return torch.load(run_dir / "checkpoints" / "last" / "trainer_state.pt", weights_only=True)["step"]


@pytest.mark.slow
def test_sigint_saves_last_exits_130_and_resumes_to_the_end(tiny_corpus, tmp_path):
    config = tiny_config(tiny_corpus, tmp_path / "experiments", training={
        "max_steps": MAX_STEPS, "log_interval": 1, "eval_interval": 20, "eval_iters": 1})
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(yaml.safe_dump(config))
    train = [*foundry_command(), "train", str(config_path), "--out"]

    run = tmp_path / "interrupted"
    process = subprocess.Popen([*train, str(run)], env=foundry_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + PATIENCE_S
        while not logged_steps(run) or logged_steps(run)[-1] < 5:
            assert process.poll() is None, f"the run ended before it was interrupted: {process.communicate()[1][-2000:]}"
            assert time.monotonic() < deadline, "the run took no 5 steps in time"
            time.sleep(0.01)
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=PATIENCE_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 128 + signal.SIGINT == 130, err[-2000:]
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err[-2000:]
    assert "stopped by SIGINT" in err, err[-2000:]
    said = re.search(r"Saved checkpoints/last at step (\d+)\.", err)
    assert said, err[-2000:]
    stopped_at = int(said.group(1))
    assert 5 <= stopped_at < MAX_STEPS, "the signal must stop the run before its end"
    # `last` holds exactly the step the run reached, the last one it logged.
    assert saved_step(run) == stopped_at == logged_steps(run)[-1]
    assert not (run / "results.json").exists()  # an interrupted run did not finish

    resumed = subprocess.run([*train, str(run), "--set", "training.resume=true"], env=foundry_env(),
                             capture_output=True, text=True, timeout=PATIENCE_S)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert f"Resuming at step {stopped_at} " in resumed.stderr, resumed.stderr[-2000:]
    assert saved_step(run) == MAX_STEPS
    assert logged_steps(run) == list(range(1, MAX_STEPS + 1))  # continued, not restarted or duplicated

    # It ends where the same run ends uninterrupted.
    straight = tmp_path / "straight"
    done = subprocess.run([*train, str(straight)], env=foundry_env(), capture_output=True, text=True,
                          timeout=PATIENCE_S)
    assert done.returncode == 0, done.stderr[-2000:]
    want = load_file(straight / "checkpoints" / "last" / "model.safetensors")
    got = load_file(run / "checkpoints" / "last" / "model.safetensors")
    assert want.keys() == got.keys()
    assert all(torch.equal(want[name], got[name]) for name in want), "the resumed run ended elsewhere"
