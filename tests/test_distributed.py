"""Several processes train the model one process trains (DDP and FSDP2 over gloo on the CPU).

The multi-process tests start real workers through `foundry train --nproc 2` (torchrun's launcher)
and compare them with a one-process run of the same config: per-step losses within 1e-5 relative,
final weights within 1e-4. They use tiny models without dropout (dropout draws differ by process).
"""
from __future__ import annotations

import csv
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from safetensors.torch import load_file

import model_foundry
from model_foundry.config.schema import TrainingSection
from model_foundry.data import BatchStream
from model_foundry.errors import WORKER_ERRORS_ENV, UserError, report_user_error
from model_foundry.training.distributed import Piece, check_shardable, check_world_size, shard_fully, step_pieces
from model_foundry.training.launch import unprinted_worker_error
from tests.conftest import says, unwrapped

SENTIMENT = [("a good film", 1), ("great fun", 1), ("i loved it", 1), ("a bad film", 0), ("awful fun", 0),
             ("i hated it", 0)] * 12
ON_LINUX = pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="finds the workers through /proc")
EXACT = {"precision": "fp32", "log_interval": 1, "max_steps": 4, "warmup_steps": 1, "eval_interval": 4}


# ---- the share of each process -------------------------------------------------------------------------
@pytest.mark.parametrize("batch_size,accumulation,world", [(4, 2, 2), (4, 1, 2), (2, 3, 2), (6, 4, 8), (3, 1, 3)])
def test_pieces_of_all_processes_cover_every_row_once(batch_size, accumulation, world):
    rows = [(p.micro_batch, r) for rank in range(world) for p in step_pieces(batch_size, accumulation, world, rank)
            for r in range(p.start, p.stop)]
    assert sorted(rows) == [(m, r) for m in range(accumulation) for r in range(batch_size)]
    shares = {sum(p.stop - p.start for p in step_pieces(batch_size, accumulation, world, rank))
              for rank in range(world)}
    assert shares == {batch_size * accumulation // world}


def test_one_process_takes_every_micro_batch_whole():
    assert step_pieces(4, 3, 1, 0) == [Piece(0, 0, 4), Piece(1, 0, 4), Piece(2, 0, 4)]
    batch = {"input_ids": torch.arange(8).view(4, 2), "objective": "clm"}
    assert Piece(0, 0, 4).of(batch) is batch
    middle = Piece(0, 1, 3).of(batch)
    assert middle["input_ids"].tolist() == [[2, 3], [4, 5]] and middle["objective"] == "clm"


def test_a_global_batch_the_processes_cannot_share_names_both_keys():
    with pytest.raises(UserError, match=r"training.batch_size x training.gradient_accumulation_steps \(4 x 1 = 4"):
        check_world_size(TrainingSection(batch_size=4), 3)
    check_world_size(TrainingSection(batch_size=3, gradient_accumulation_steps=2), 3)


def test_fsdp_refuses_a_model_whose_processes_train_different_parameters():
    model = torch.nn.Linear(2, 2)
    model.config = SimpleNamespace(hybrid_design="shared")
    with pytest.raises(UserError, match="hybrid_design: shared"):
        check_shardable(model)
    model.config.hybrid_design = "two_stack"
    check_shardable(model)


def test_skipping_a_batch_keeps_the_position_of_reading_it():
    class Numbers(torch.utils.data.Dataset):
        def __len__(self):
            return 10

        def __getitem__(self, index):
            return index

    collate = lambda items, generator=None: items  # noqa: E731
    read, skipped = (BatchStream(Numbers(), 3, collate, seed=1) for _ in range(2))
    everything = [next(read) for _ in range(5)]
    for index in range(5):
        if index % 2:
            skipped.skip()
        else:
            assert next(skipped) == everything[index]
    assert skipped.state_dict() == read.state_dict() == {"epoch": 1, "batch_index": 2}


@pytest.mark.slow
def test_the_launcher_refuses_an_unshareable_batch_before_starting_workers(make_config, tmp_path):
    config = write_config(make_config(training={"batch_size": 4}), tmp_path)
    done = subprocess.run([sys.executable, "-m", "model_foundry", "train", str(config), "--nproc", "3"],
                          capture_output=True, text=True, env=worker_env(), timeout=60)
    assert done.returncode == 2 and says(done.stderr, "training.gradient_accumulation_steps"), done.stderr
    assert "Worker" not in done.stderr


# ---- two processes against one -------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_gpt_on_two_processes_matches_one(make_config, tmp_path, strategy):
    """Whole micro-batches per process (accumulation 2 over 2 processes)."""
    config = make_config("gpt", model={"dropout": 0.0}, training={**EXACT, "batch_size": 4, "distributed": strategy,
                                                                   "gradient_accumulation_steps": 2})
    one, two = one_and_two_processes(config, tmp_path)
    assert_same_run(one, two)
    from model_foundry.inference.evaluate import evaluate_run

    assert evaluate_run(str(two), split="val", checkpoint="last")["loss"] == pytest.approx(
        evaluate_run(str(one), split="val", checkpoint="last")["loss"], rel=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_bert_on_two_processes_matches_one(make_config, tmp_path, strategy):
    """Every micro-batch cut in two: the masked positions are still the ones one process draws."""
    config = make_config("bert", model={"dropout": 0.0}, training={**EXACT, "batch_size": 4, "distributed": strategy})
    assert_same_run(*one_and_two_processes(config, tmp_path))


@pytest.mark.slow
@pytest.mark.parametrize("strategy", ["ddp", "fsdp"])
def test_classifier_on_two_processes_matches_one(make_config, tmp_path, strategy):
    """Three micro-batches of 2 over 2 processes: a process's share crosses a micro-batch boundary."""
    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\n" + "\n".join(f"{t}\t{y}" for t, y in SENTIMENT) + "\n", encoding="utf-8")
    config = make_config("gpt", experiment={"name": "tiny_classifier", "kind": "finetuning"},
                         model={"dropout": 0.0}, task={"type": "sequence_classification", "head_dropout": 0.0},
                         training={**EXACT, "batch_size": 2, "gradient_accumulation_steps": 3,
                                   "distributed": strategy},
                         data={"train": {"path": str(data)}, "val": {"path": str(data)}, "format": "tsv",
                               "text_column": "sentence", "label_column": "label"})
    one, two = one_and_two_processes(config, tmp_path)
    assert_same_run(one, two)
    assert read_json(two / "results.json")["val"]["accuracy"] == read_json(one / "results.json")["val"]["accuracy"]


@pytest.mark.slow
def test_fsdp_resumes_a_one_process_checkpoint_and_saves_in_its_format(make_config, tmp_path):
    """Full weights and optimizer state go into the shards and come back out in the one-process
    format; the data continues at the saved global position, whatever the number of processes."""
    config = make_config("gpt", model={"dropout": 0.0}, training={**EXACT, "batch_size": 4, "save_interval": 2})
    one = run_one_process(config, tmp_path)
    resumed = run_two_processes(config, tmp_path, "two", "--set", "training.distributed=fsdp",
                                "--set", f"training.resume_from={one / 'checkpoints' / 'step_2'}")
    assert resumed.returncode == 0, resumed.stderr
    assert says(resumed.stderr, "resuming a run saved by 1 process(es) on 2"), resumed.stderr
    two = tmp_path / "two"
    assert [r["step"] for r in train_rows(two)] == ["3", "4"]
    assert_same_run(one, two, rows=slice(2, None))
    state_one, state_two = (torch.load(d / "checkpoints" / "last" / "trainer_state.pt", weights_only=True)["optimizer"]
                            for d in (one, two))
    assert [g["params"] for g in state_two["param_groups"]] == [g["params"] for g in state_one["param_groups"]]
    for index, moments in state_one["state"].items():
        torch.testing.assert_close(state_two["state"][index]["exp_avg"], moments["exp_avg"], rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt", "lstm"])
def test_fsdp_in_bf16_trains_like_one_process_in_bf16(make_config, tmp_path, arch):
    """FSDP computes with bf16 copies of its float32 shards (one process casts inside autocast), so
    the two agree to bf16's precision, not exactly; the saved weights stay float32."""
    config = make_config(arch, model={"dropout": 0.0}, training={**EXACT, "precision": "bf16", "batch_size": 4,
                                                                  "distributed": "fsdp"})
    one, two = one_and_two_processes(config, tmp_path)
    assert_same_run(one, two, atol=2e-2, loss_rel=2e-2)
    weights_two = load_file(two / "checkpoints" / "last" / "model.safetensors")
    assert {tensor.dtype for tensor in weights_two.values()} == {torch.float32}


def test_fsdp_gathers_weights_in_the_training_precision_and_reduces_gradients_in_float32():
    from torch.distributed.fsdp import FSDPModule

    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    try:
        for precision, compute_dtype in (("bf16", torch.bfloat16), ("fp16", torch.float16), ("fp32", torch.float32)):
            model = torch.nn.Sequential(torch.nn.ModuleList([torch.nn.Linear(4, 4)]))
            shard_fully(model, torch.device("cpu"), 1, precision)
            layer = model[0][0]
            assert isinstance(layer, FSDPModule)
            seen = []
            layer.register_forward_pre_hook(lambda module, args: seen.append(module.weight.dtype))
            layer(torch.randn(2, 4, dtype=compute_dtype)).float().sum().backward()
            assert seen == [compute_dtype]
            assert layer.weight.dtype == layer.weight.grad.dtype == torch.float32
    finally:
        torch.distributed.destroy_process_group()


# ---- stopping and resuming -----------------------------------------------------------------------------
@pytest.mark.slow
@ON_LINUX
def test_sigterm_to_one_worker_saves_last_and_stops_all_then_resume_is_exact(make_config, tmp_path):
    """Resumed on the same number of processes, the run ends bit for bit where the uninterrupted one does.

    (Against one process, 150 steps leave the attention's key biases up to ~5e-4 apart: their true
    gradient is zero, softmax ignores them, so Adam turns rounding noise into steps of the learning
    rate's size. The 4-step comparisons above hold to 1e-4.)
    """
    config = make_config("gpt", model={"dropout": 0.0},
                         training={**EXACT, "max_steps": 60, "eval_interval": 1000, "batch_size": 4})
    launcher = start_two_processes(config, tmp_path, "two")
    two = tmp_path / "two"
    wait_for_rows(two / "metrics" / "train.csv", 3, launcher)
    os.kill(worker_pid(launcher, rank=1), signal.SIGTERM)
    _, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 128 + signal.SIGTERM, err
    saved = torch.load(two / "checkpoints" / "last" / "trainer_state.pt", weights_only=True)
    assert saved["world_size"] == 2 and len(saved["rank_rng"]) == 2 and saved["step"] == len(train_rows(two))
    resumed = run_two_processes(config, tmp_path, "two", "--set", "training.resume=true")
    assert resumed.returncode == 0, resumed.stderr
    uninterrupted = run_two_processes(config, tmp_path, "uninterrupted")
    assert uninterrupted.returncode == 0, uninterrupted.stderr
    assert_same_run(tmp_path / "uninterrupted", two, atol=0.0)


@pytest.mark.slow
@ON_LINUX
def test_a_run_whose_worker_was_killed_resumes_to_the_end(make_config, tmp_path):
    config = make_config("gpt", model={"dropout": 0.0},
                         training={**EXACT, "max_steps": 60, "eval_interval": 1000, "save_interval": 2,
                                   "batch_size": 4})
    launcher = start_two_processes(config, tmp_path, "two")
    two = tmp_path / "two"
    wait_for_rows(two / "metrics" / "train.csv", 5, launcher)
    os.kill(worker_pid(launcher, rank=1), signal.SIGKILL)
    launcher.communicate(timeout=120)
    assert launcher.returncode != 0
    resumed = run_two_processes(config, tmp_path, "two", "--set", "training.resume=true")
    assert resumed.returncode == 0, resumed.stderr
    assert [int(row["step"]) for row in train_rows(two)] == list(range(1, 61))


# ---- helpers -------------------------------------------------------------------------------------------
@pytest.mark.slow
def test_a_users_mistake_under_nproc_is_printed_once(make_config, tmp_path):
    """Both workers stop on the same bad row; the paragraph appears once, without torch's own log line."""
    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in SENTIMENT[:8]) + "awful\t\n")
    config = make_config("gpt", experiment={"name": "bad_rows", "kind": "finetuning"},
                         task={"type": "sequence_classification"}, training={"batch_size": 4, "max_steps": 2},
                         data={"train": {"path": str(data)}, "format": "tsv", "text_column": "sentence",
                               "label_column": "label"})
    done = run_two_processes(config, tmp_path, "bad_rows")
    assert done.returncode == 2, done.stderr
    assert unwrapped(done.stderr).count(unwrapped(f"{data}:10")) == 1, done.stderr
    assert says(done.stderr, "the 'label' label is empty"), done.stderr
    # Both workers stop on the row; torch reports whichever exited first.
    assert "exitcode" not in done.stderr and re.search(r"Worker [01] exited with code 2", done.stderr), done.stderr


def test_the_launcher_prints_a_workers_mistake_that_rank_zero_did_not(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(WORKER_ERRORS_ENV, str(tmp_path))
    monkeypatch.setenv("RANK", "1")
    report_user_error("error: only rank 1 saw this")
    assert capsys.readouterr().err == ""  # a worker other than rank 0 leaves it to the launcher
    assert unprinted_worker_error(tmp_path, 1) == "error: only rank 1 saw this"
    monkeypatch.setenv("RANK", "0")
    report_user_error("error: rank 0 too")
    assert capsys.readouterr().err == "error: rank 0 too\n"
    assert unprinted_worker_error(tmp_path, 1) is None  # rank 0 printed one already


def write_config(config: dict, directory: Path) -> Path:
    path = directory / "config.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def worker_env() -> dict:
    """One thread per worker: the test models are tiny and the machine may be busy."""
    return {**os.environ, "OMP_NUM_THREADS": "1"}


def two_process_command(config: dict, tmp_path: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "model_foundry", "train", str(write_config(config, tmp_path)), "--nproc", "2",
            "--out", str(tmp_path / name), *extra]


def run_two_processes(config: dict, tmp_path: Path, name: str, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(two_process_command(config, tmp_path, name, *extra), capture_output=True, text=True,
                          env=worker_env(), timeout=300)


def start_two_processes(config: dict, tmp_path: Path, name: str) -> subprocess.Popen:
    return subprocess.Popen(two_process_command(config, tmp_path, name), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=worker_env())


def run_one_process(config: dict, tmp_path: Path) -> Path:
    model_foundry.train(config, out=tmp_path / "one")
    return tmp_path / "one"


def one_and_two_processes(config: dict, tmp_path: Path) -> tuple[Path, Path]:
    done = run_two_processes(config, tmp_path, "two")
    assert done.returncode == 0, done.stderr
    return run_one_process(config, tmp_path), tmp_path / "two"


def train_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics" / "train.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def read_json(path: Path) -> dict:
    import json

    return json.loads(path.read_text())


def assert_same_run(one: Path, two: Path, atol: float = 1e-4, rows: slice = slice(None),
                    loss_rel: float = 1e-5) -> None:
    """One train.csv row per step (those of `rows` in `one`), the same losses, the same final weights."""
    rows_one, rows_two = train_rows(one)[rows], train_rows(two)
    assert [r["step"] for r in rows_two] == [r["step"] for r in rows_one]
    assert [float(r["loss"]) for r in rows_two] == pytest.approx([float(r["loss"]) for r in rows_one], rel=loss_rel)
    weights_one = load_file(one / "checkpoints" / "last" / "model.safetensors")
    weights_two = load_file(two / "checkpoints" / "last" / "model.safetensors")
    assert weights_one.keys() == weights_two.keys()
    for name, tensor in weights_one.items():
        torch.testing.assert_close(weights_two[name], tensor, rtol=0, atol=atol, msg=name)


def wait_for_rows(path: Path, rows: int, launcher: subprocess.Popen) -> None:
    """Wait until the run has logged `rows` steps (it must still be running then)."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and launcher.poll() is None:
        if path.is_file() and len(path.read_text().splitlines()) > rows:
            return
        time.sleep(0.02)
    raise AssertionError(f"the run ended or stalled before logging {rows} steps: {launcher.communicate()[1]}")


def worker_pid(launcher: subprocess.Popen, rank: int) -> int:
    """The pid of the launcher's worker of this rank (workers are the launcher's children)."""
    children = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    for pid in children:
        environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        if f"RANK={rank}".encode() in environment:
            return int(pid)
    raise AssertionError(f"no worker of rank {rank} among {children}")
