"""The training loop's hot path: at most one wait for the device per log interval, MFU on every log
row, and `python -m model_foundry` as the CLI.

A CPU run has no device to wait for, so the sync test models one: the collated batches are
`HostTensor`s (host memory, as on a GPU run), `.to()` turns them into plain tensors (the copy to
the device), and every read of a plain tensor's value into Python (`item`, `tolist`, `float`,
`int`, `bool`) counts as a host-device synchronisation, as it would be on a GPU.
"""
from __future__ import annotations

import csv
import itertools
import json
import statistics
import subprocess
import sys
from pathlib import Path
from unittest.mock import patch

import pytest
import torch

from model_foundry.config import load_config
from model_foundry.data import BatchStream
from model_foundry.errors import UserError
from model_foundry.models import create_model
from model_foundry.reporting.runs import run_row
from model_foundry.training import flops as flops_module
from model_foundry.training import trainer as trainer_module
from model_foundry.training.flops import (MatmulProbe, TrainingFlops, cpu_peak_flops, gpu_peak_flops,
                                          measure_matmul_flops, model_flops_utilisation, peak_flops)
from model_foundry.training.metrics_log import MetricsLogger
from model_foundry.training.progress import Progress
from model_foundry.training.run import absolute_paths, build_trainer

REPO = Path(__file__).resolve().parents[1]
READS = ("item", "tolist", "__float__", "__int__", "__bool__")
SENTIMENT = [("a good film", 1), ("great fun", 1), ("i loved it", 1), ("a bad film", 0), ("awful fun!", 0),
             ("i hated it so", 0)] * 12  # rows of different lengths: the batches have padding


class HostTensor(torch.Tensor):
    """A tensor in host memory: a collated batch, and whatever is computed from it before it moves.

    `.to()` is the move to the device: it returns a plain tensor, as a copy to a GPU would.
    """

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        result = super().__torch_function__(func, types, args, kwargs or {})
        if func is torch.Tensor.to:
            with torch._C.DisableTorchFunctionSubclass():
                return result.as_subclass(torch.Tensor)
        return result


@pytest.fixture
def device_reads(monkeypatch) -> list[str]:
    """Where each read of a device (plain) tensor's value happened, in order.

    Loading data is host work: reads inside the batch stream (its indices, its collator) are not
    counted, and the batches it returns are HostTensors.
    """
    reads: list[str] = []
    loading = [False]
    for name in READS:
        original = getattr(torch.Tensor, name)

        def counted(self, *args, _original=original, _name=name, **kwargs):
            if not loading[0] and not isinstance(self, HostTensor):
                caller = sys._getframe(1)
                reads.append(f"{_name} at {caller.f_code.co_filename}:{caller.f_lineno}")
            return _original(self, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, name, counted)
    next_batch = BatchStream.__next__

    def host_batch(stream: BatchStream) -> dict:
        loading[0] = True
        try:
            batch = next_batch(stream)
        finally:
            loading[0] = False
        return {k: v.as_subclass(HostTensor) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    monkeypatch.setattr(BatchStream, "__next__", host_batch)
    return reads


def run_config(make_config, tmp_path, kind: str) -> dict:
    """A 10-step run, 2 micro-batches a step, a log row every 5 steps, evaluation only at the end."""
    training = {"max_steps": 10, "gradient_accumulation_steps": 2, "log_interval": 5, "eval_interval": 10,
                "batch_size": 4, "precision": "fp32"}
    if kind != "classifier":
        arch, task = {"gpt": ("gpt", "causal_lm"), "bert": ("bert", "masked_lm"), "hybrid": ("hybrid", "hybrid"),
                      "rtd": ("bert", "replaced_token_detection")}[kind]
        return make_config(arch, task={"type": task}, training=training)
    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\n" + "\n".join(f"{t}\t{y}" for t, y in SENTIMENT) + "\n", encoding="utf-8")
    return make_config("gpt", experiment={"name": "tiny_classifier", "kind": "finetuning"},
                       task={"type": "sequence_classification"}, training=training,
                       data={"train": {"path": str(data)}, "val": {"path": str(data)}, "format": "tsv",
                             "text_column": "sentence", "label_column": "label"})


def reads_per_log_interval(config: dict, run_dir: Path, reads: list[str]) -> list[list[str]]:
    """Train, and split the device reads made by `Trainer.fit` at its log rows (evaluation comes after the last)."""
    trainer = build_trainer(absolute_paths(load_config(config).config), run_dir)
    logger = MetricsLogger(run_dir, csv_enabled=True, tensorboard=False, wandb=False, wandb_mode="offline",
                           project="p", run_name="r", config={})
    marks: list[int] = []
    log_train = logger.log_train
    logger.log_train = lambda row: (marks.append(len(reads)), log_train(row))
    del reads[:]
    trainer.fit(logger)
    return [reads[start:end] for start, end in zip([0, *marks], marks)]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["gpt", "bert", "hybrid", "rtd", "classifier"])
def test_one_device_read_per_log_interval(make_config, tmp_path, device_reads, kind):
    """10 steps x 2 micro-batches, logged every 5 steps: the loss read for each log row and nothing else
    (the old loop read the loss and the token and target counts of every micro-batch, and BERT's
    forward asked whether the mask had padding: 20 to 50 reads per interval)."""
    intervals = reads_per_log_interval(run_config(make_config, tmp_path, kind), tmp_path / "run", device_reads)
    assert [len(reads) for reads in intervals] == [1, 1], intervals


def test_the_counter_sees_a_deliberate_read(make_config, tmp_path, device_reads, monkeypatch):
    """Positive control: an `.item()` on each micro-batch's loss shows up, 5 steps x 2 per interval."""
    from model_foundry.tasks.language_modeling import CausalLMTask

    training_loss = CausalLMTask.training_loss

    def reading_loss(self, model, batch):
        loss = training_loss(self, model, batch)
        loss.item()
        return loss

    monkeypatch.setattr(CausalLMTask, "training_loss", reading_loss)
    intervals = reads_per_log_interval(run_config(make_config, tmp_path, "gpt"), tmp_path / "run", device_reads)
    assert [len(reads) for reads in intervals] == [11, 11]
    assert sum("item at" in read for reads in intervals for read in reads) == 20


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["gpt", "bert"])
def test_a_padded_forward_compiles_to_one_graph(arch):
    """Asking the device whether the mask had padding broke the graph in two places (a `.item()`)."""
    model = create_model(arch, vocab_size=64, n_layer=2, n_head=2, n_embd=32, block_size=16)
    ids = torch.randint(5, 60, (2, 16))
    mask = torch.ones_like(ids)
    mask[0, 12:] = 0
    explained = torch._dynamo.explain(model)(ids, attention_mask=mask, labels=ids)
    assert explained.graph_break_count == 0 and explained.graph_count == 1, explained.break_reasons


@pytest.mark.slow
def test_a_compiled_run_trains_in_the_mode_asked(make_config, tmp_path, monkeypatch):
    """`training.compile_mode` reaches torch.compile; on the CPU reduce-overhead compiles without CUDA graphs."""
    import model_foundry
    from model_foundry.training import compilation

    modes, compile_for_real = [], torch.compile
    monkeypatch.setattr(compilation.torch, "compile",
                        lambda module, mode=None: modes.append(mode) or compile_for_real(module, mode=mode))
    model_foundry.train(make_config(training={"compile": True, "compile_mode": "reduce-overhead", "max_steps": 8,
                                              "log_interval": 1, "eval_interval": 8, "precision": "fp32"}))
    losses = [float(r["loss"]) for r in read_rows(tmp_path / "experiments" / "pretraining" / "tiny_gpt" / "metrics"
                                                  / "train.csv")]
    assert modes == ["reduce-overhead"] and len(losses) == 8 and losses[-1] < losses[0]
    assert compilation.replays_cuda_graphs(True, "reduce-overhead") and not compilation.replays_cuda_graphs(
        False, "reduce-overhead") and not compilation.replays_cuda_graphs(True, "default")


@pytest.mark.slow
def test_cuda_graph_modes_begin_one_replay_generation_per_optimizer_step(make_config, tmp_path, monkeypatch):
    """Not one per micro-batch: a new generation would overwrite the gradients earlier micro-batches
    left in `.grad` (they are graph outputs), which failed on a GPU with gradient accumulation."""
    import model_foundry
    from model_foundry.training import compilation

    marks = []
    monkeypatch.setattr(compilation.torch, "compile", lambda module, mode=None: module)
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    model_foundry.train(make_config(training={"compile": True, "compile_mode": "reduce-overhead", "max_steps": 4,
                                              "gradient_accumulation_steps": 3, "eval_interval": 4}))
    assert len(marks) == 4
    marks.clear()
    model_foundry.train(make_config(experiment={"name": "plain_compile"},
                                    training={"compile": True, "max_steps": 2, "eval_interval": 2}))
    assert marks == []


def test_flops_of_a_tiny_gpt_by_hand():
    model = create_model("gpt", vocab_size=64, n_layer=2, n_head=2, n_embd=32, block_size=16, bias=True)
    d, mlp = 32, 4 * 32
    block = (2 * d) + (d * 3 * d + 3 * d) + (d * d + d) + (2 * d) + (d * mlp + mlp) + (mlp * d + d)  # norms, attn, mlp
    weights = 2 * block + 2 * d + 64 * d  # final norm; the output layer, tied to the token embedding (counted once)
    flops = TrainingFlops.of(model)  # the 16 x 32 position table is a lookup: not counted
    assert flops.weights == 6 * weights == 6 * 27_520
    assert flops.attention == 12 * 2 * d
    assert flops.per_token(16) == 6 * 27_520 + 12 * 2 * 32 * 16


def test_models_without_our_attention_count_their_weights_only():
    model = create_model("lstm", vocab_size=64, n_layer=1, n_embd=16, hidden_size=32)
    flops = TrainingFlops.of(model)
    assert flops.attention == 0 and flops.per_token(1000) == flops.weights
    lookups = sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Embedding))
    tied = model.get_output_embeddings() is not None
    multiplying = sum(p.numel() for p in model.parameters()) - (0 if tied else lookups)
    assert flops.weights == 6 * multiplying


def test_peak_flops_by_gpu_name_and_precision():
    assert gpu_peak_flops("NVIDIA A100-SXM4-80GB", "bf16") == 312e12
    assert gpu_peak_flops("NVIDIA H100 80GB HBM3", "bf16") == 989e12
    assert gpu_peak_flops("NVIDIA H100 PCIe", "bf16") == 756e12
    assert gpu_peak_flops("NVIDIA A10G", "bf16") == 125e12
    assert gpu_peak_flops("Tesla T4", "fp16") == 65e12
    assert gpu_peak_flops("Tesla T4", "bf16") is None  # emulated only
    assert gpu_peak_flops("NVIDIA RTX A1000", "bf16") is None  # not an A100
    assert peak_flops(torch.device("mps"), "fp32") is None  # no table, no probe
    assert model_flops_utilisation(2e12, 4e12) == 0.5 and model_flops_utilisation(2e12, None) is None


def read_rows(path: Path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def fit_logging(config: dict, run_dir: Path):
    """Build a run's trainer and train it with a CSV log; returns the trainer."""
    trainer = build_trainer(absolute_paths(load_config(config).config), run_dir)
    trainer.fit(MetricsLogger(run_dir, csv_enabled=True, tensorboard=False, wandb=False, wandb_mode="offline",
                              project="p", run_name="r", config={}))
    return trainer


def test_mfu_column_is_flops_per_token_times_tokens_per_sec_over_peak(make_config, tmp_path, monkeypatch):
    config = make_config(training={"max_steps": 4, "log_interval": 2, "precision": "fp32"})
    run_dir = tmp_path / "run"
    monkeypatch.setattr(trainer_module, "peak_flops", lambda device, precision: 1e9)  # a known peak
    trainer = fit_logging(config, run_dir)
    rows = read_rows(run_dir / "metrics" / "train.csv")
    per_token = trainer.flops.per_token(32)  # packed windows of block_size 32
    for row in rows:
        expected = per_token * float(row["tokens_per_sec"]) / 1e9
        assert float(row["mfu"]) == pytest.approx(expected, rel=1e-3, abs=1e-4)


def test_mfu_is_empty_where_the_peak_is_unknown(make_config, tmp_path, monkeypatch):
    import model_foundry

    monkeypatch.setattr(trainer_module, "peak_flops", lambda device, precision: None)  # as on MPS
    model_foundry.train(make_config(training={"max_steps": 2, "log_interval": 1}))
    rows = read_rows(tmp_path / "experiments" / "pretraining" / "tiny_gpt" / "metrics" / "train.csv")
    assert [row["mfu"] for row in rows] == ["", ""] and all(float(row["tokens_per_sec"]) > 0 for row in rows)
    assert run_row(tmp_path / "experiments" / "pretraining" / "tiny_gpt" / "results.json", tmp_path)["mfu"] == ""


def test_cpu_mfu_comes_from_a_matmul_probe_measured_once(make_config, tmp_path, monkeypatch):
    import model_foundry

    cache = tmp_path / "cache" / "cpu_peak_flops.json"
    monkeypatch.setattr(flops_module, "measure_matmul_flops", lambda *a, **k: MatmulProbe(7e9, idle=False))
    assert cpu_peak_flops("fp32", cache) == 7e9 and not cache.exists()  # measured beside other work: not kept
    monkeypatch.setattr(flops_module, "measure_matmul_flops", lambda *a, **k: MatmulProbe(9e9, idle=True))
    assert cpu_peak_flops("fp32", cache) == 9e9 and list(json.loads(cache.read_text()).values()) == [9e9]
    monkeypatch.setattr(flops_module, "measure_matmul_flops", lambda *a, **k: pytest.fail("measured twice"))
    assert cpu_peak_flops("fp32", cache) == 9e9
    cache.write_text("{not json")
    monkeypatch.setattr(flops_module, "measure_matmul_flops", lambda *a, **k: MatmulProbe(5e9, idle=True))
    assert cpu_peak_flops("fp32", cache) == 5e9  # a damaged cache is measured again

    monkeypatch.setattr(trainer_module, "peak_flops", lambda device, precision: 5e9)
    model_foundry.train(make_config(training={"max_steps": 3, "log_interval": 1}))
    run_dir = tmp_path / "experiments" / "pretraining" / "tiny_gpt"
    mfu = [float(row["mfu"]) for row in read_rows(run_dir / "metrics" / "train.csv")]
    assert len(mfu) == 3 and all(value > 0 for value in mfu)
    assert run_row(run_dir / "results.json", tmp_path)["mfu"] == f"{statistics.median(mfu[1:]):.1%}"


def test_the_cpu_peak_is_measured_when_training_starts_and_once_per_process(make_config, tmp_path, monkeypatch,
                                                                           request):
    """Building a trainer measures nothing (it used to probe, and write under $HOME, in `__init__`); the
    first run to train measures, and a second run in the process does not measure again."""
    monkeypatch.delenv(flops_module.CPU_PEAK_ENV)
    probes = []
    monkeypatch.setattr(flops_module, "cpu_peak_flops", lambda precision, cache=None: probes.append(precision) or 4e9)
    flops_module.measured_once.cache_clear()
    request.addfinalizer(flops_module.measured_once.cache_clear)  # no other test may see this figure
    config = make_config(training={"max_steps": 4, "log_interval": 2, "precision": "fp32"})
    trainer = build_trainer(absolute_paths(load_config(config).config), tmp_path / "built")
    assert probes == []
    first = fit_logging(config, tmp_path / "first")
    assert probes == ["fp32"] and first.peak_flops == 4e9
    fit_logging(make_config(experiment={"name": "second"}, training={"max_steps": 4, "log_interval": 2,
                                                                     "precision": "fp32"}), tmp_path / "second")
    assert probes == ["fp32"]
    for run in ("first", "second"):
        assert [float(row["mfu"]) > 0 for row in read_rows(tmp_path / run / "metrics" / "train.csv")] == [True] * 2
    assert trainer.counters.step == 0  # the trainer built first never trained, and never asked


@pytest.mark.parametrize("stated, peak", [("2e12", 2e12), ("0", None)])
def test_a_stated_cpu_peak_replaces_the_probe(monkeypatch, stated, peak):
    monkeypatch.setenv(flops_module.CPU_PEAK_ENV, stated)
    monkeypatch.setattr(flops_module, "cpu_peak_flops", lambda *a, **k: pytest.fail("measured"))
    assert peak_flops(torch.device("cpu"), "fp32") == peak


@pytest.mark.parametrize("stated", ["fast", "-1", "inf", "nan"])
def test_a_stated_cpu_peak_that_is_not_a_figure_names_the_variable(monkeypatch, stated):
    monkeypatch.setenv(flops_module.CPU_PEAK_ENV, stated)
    with pytest.raises(UserError, match=f"MODEL_FOUNDRY_CPU_PEAK_FLOPS is '{stated}'"):
        peak_flops(torch.device("cpu"), "fp32")


def test_the_matmul_probe_takes_the_best_size_and_sees_whether_its_threads_had_their_cores():
    probe = measure_matmul_flops(torch.float32, sizes=(64, 128), seconds=0.01)
    assert 1e8 < probe.flops < 1e15
    with patch.object(flops_module.time, "process_time", side_effect=itertools.count(0, 1e-9)):
        assert not measure_matmul_flops(torch.float32, sizes=(64,), seconds=0.01).idle  # no CPU time: others ran


def test_progress_line_shows_mfu_when_known(capsys):
    progress = Progress(10, 0, "run")
    progress.update(5, 2.5, 1234.0, 1e-3, 0.4123)
    progress.update(10, 2.4, 1234.0, 1e-3, None)
    lines = capsys.readouterr().err.splitlines()
    assert "| mfu 41.2% |" in lines[0] and "mfu" not in lines[1]


@pytest.mark.slow
def test_python_dash_m_runs_the_cli():
    done = subprocess.run([sys.executable, "-m", "model_foundry", "--help"], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("usage: foundry")
    bare = subprocess.run([sys.executable, "-m", "model_foundry"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert bare.returncode == 2  # main's exit code comes through (no command: help and 2)
