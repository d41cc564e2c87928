"""Faults at the run directory: a second process that would write a run another one is writing is
refused (and a killed run leaves nothing locked), and a file system that refuses the directory
gives a one-paragraph error instead of an OSError traceback."""
from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

import model_foundry
from model_foundry.cli.main import main
from model_foundry.errors import UserError

STARTUP_SECONDS = 120  # a cold `python -m model_foundry` imports torch; the machine may be busy


def one_line(text: str) -> str:
    return " ".join(text.split())


def squeezed(text: str) -> str:
    """The text without any whitespace: the CLI's wrapping also breaks at hyphens ("pytest-of-" +
    newline), so a wrapped message is compared with every space and line break removed."""
    return "".join(text.split())


def wait_for_line(process: subprocess.Popen, marker: str, log: Path) -> None:
    """Wait until the process has written `marker` to its stderr log (it holds the run by then)."""
    deadline = time.monotonic() + STARTUP_SECONDS
    while marker not in log.read_text(encoding="utf-8", errors="replace"):
        if process.poll() is not None:
            pytest.fail(f"the first training process ended early:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"the first training process never got to {marker!r}:\n{log.read_text()}")
        time.sleep(0.2)


@pytest.fixture
def trained_run(make_config, tmp_path):
    """A finished tiny run (config file, run directory) that a second process can resume."""
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(make_config(training={"max_steps": 4, "eval_interval": 2})), encoding="utf-8")
    model_foundry.train(path)
    return path, tmp_path / "experiments" / "pretraining" / "tiny_gpt"


def test_a_second_writer_is_refused_and_a_killed_run_leaves_no_lock(trained_run, tmp_path):
    path, run_dir = trained_run
    log = tmp_path / "first.log"
    with open(log, "w", encoding="utf-8") as stderr:
        first = subprocess.Popen([sys.executable, "-m", "model_foundry", "train", str(path),
                                  "--set", "training.resume=true", "--set", "training.max_steps=1000000",
                                  "--set", "training.eval_interval=1000000"],
                                 cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        wait_for_line(first, "Resuming at step 4", log)
        with pytest.raises(UserError) as refused:
            model_foundry.train(path, overrides={"training.resume": True, "training.max_steps": 8})
        message = one_line(str(refused.value))
        assert f"Run directory {run_dir} is being written by another training process (pid {first.pid})" in message
        assert first.poll() is None, "the first run must go on unharmed"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # The kernel dropped the killed process's lock: resuming works at once.
    results = model_foundry.train(path, overrides={"training.resume": True, "training.max_steps": 8})
    assert results["run"]["steps"] == 8


def test_the_cli_refuses_a_second_writer_with_exit_2(trained_run, tmp_path, capsys):
    """The lock as the CLI user meets it; the holder here is this test, through the lock file itself."""
    import fcntl

    path, run_dir = trained_run
    with open(run_dir / ".lock", "a+", encoding="ascii") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        held.truncate(0)
        held.write(f"{os.getpid()}\n")
        held.flush()
        before = (run_dir / "run.json").read_bytes()
        assert main(["train", str(path), "--set", "training.resume=true"]) == 2
    error = capsys.readouterr().err
    expected = f"{run_dir} is being written by another training process (pid {os.getpid()})"
    assert "Traceback" not in error and squeezed(expected) in squeezed(error)
    assert (run_dir / "run.json").read_bytes() == before, "the refused run wrote into the directory"


@pytest.fixture
def read_only_experiments(monkeypatch, tmp_path):
    """Creating anything under tmp_path/experiments fails as on a read-only file system (as root,
    chmod would not stop the writes)."""
    root = tmp_path / "experiments"
    real_mkdir = Path.mkdir

    def mkdir(self, *args, **kwargs):
        if self == root or root in self.parents:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    return root


def test_a_read_only_output_directory_is_a_one_paragraph_error(make_config, read_only_experiments, tmp_path,
                                                               capsys):
    run_dir = read_only_experiments / "pretraining" / "tiny_gpt"
    with pytest.raises(UserError) as refused:
        model_foundry.train(make_config())
    message = one_line(str(refused.value))
    assert f"Cannot write the run directory {run_dir}: Read-only file system" in message

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(make_config()), encoding="utf-8")
    assert main(["train", str(path)]) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error and "OSError" not in error
    assert squeezed(f"Cannot write the run directory {run_dir}: Read-only file system") in squeezed(error)
