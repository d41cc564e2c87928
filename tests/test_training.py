"""The training loop end to end on tiny runs, and its parts: schedules, groups, accumulation, logs."""
from __future__ import annotations

import copy
import csv
import json
import math

import pytest
import torch
import yaml
from safetensors.torch import load_file

import model_foundry
from model_foundry.config import load_config
from model_foundry.errors import UserError
from model_foundry.tokenizer import FoundryTokenizer
from model_foundry.training.metrics_log import CsvLog
from model_foundry.training.optimizer import build_optimizer, parameter_groups
from model_foundry.training.precision import cpu_has_native_bf16, precision_note, resolve_precision
from model_foundry.training.run import absolute_paths, build_trainer
from model_foundry.training.schedules import make_schedule


def read_rows(path) -> list[dict]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# Masked LM learns from the ~15% masked positions only, so BERT needs more steps than GPT to leave
# the unigram plateau (checked against transformers' BertForMaskedLM on the same batches: same curve).
@pytest.mark.slow
@pytest.mark.parametrize("arch,steps,margin", [("gpt", 60, 1.0), ("bert", 120, 0.45)])
def test_loss_falls_and_run_directory_is_complete(make_config, tmp_path, arch, steps, margin):
    config = make_config(arch, training={"max_steps": steps, "eval_interval": steps // 3, "learning_rate": 1e-2})
    results = model_foundry.train(config)
    run_dir = tmp_path / "experiments" / "pretraining" / f"tiny_{arch}"
    uniform_loss = math.log(FoundryTokenizer.load(run_dir / "tokenizer").vocab_size)
    rows = read_rows(run_dir / "metrics" / "train.csv")
    first, last = float(rows[0]["loss"]), sum(float(r["loss"]) for r in rows[-3:]) / 3
    assert last < first - margin / 2, (first, last)
    assert results["val"]["loss"] < uniform_loss - margin, (results["val"], uniform_loss)
    assert set(rows[0]) >= {"step", "loss", "lr", "lr_decay", "lr_no_decay", "tokens_per_sec", "elapsed_s"}
    evals = read_rows(run_dir / "metrics" / "eval.csv")
    assert [int(r["step"]) for r in evals] == [steps // 3, 2 * steps // 3, steps] and {r["split"] for r in evals} == {"val"}
    for name in ("last", "best"):
        for file in ("model.safetensors", "model_config.json", "trainer_state.pt"):
            assert (run_dir / "checkpoints" / name / file).is_file()
    on_disk = json.loads((run_dir / "results.json").read_text())
    assert on_disk == json.loads(json.dumps(results))
    assert results["format_version"] == 1 and results["checkpoint"] == "best"
    assert results["task"] == ("causal_lm" if arch == "gpt" else "masked_lm")
    assert set(results["run"]) == {"params", "trainable_params", "steps", "tokens", "tokens_per_sec", "wall_s"}
    # Packed blocks: every step sees batch_size (8) full rows of block_size (32) tokens.
    assert results["run"]["steps"] == steps and results["run"]["tokens"] == steps * 8 * 32
    expected = {"loss", "perplexity", "bits_per_token"} | ({"mlm_accuracy"} if arch == "bert" else set())
    assert set(results["val"]) == expected
    assert results["val"]["perplexity"] == pytest.approx(math.exp(results["val"]["loss"]))
    run_info = json.loads((run_dir / "run.json").read_text())
    assert run_info["end_time"] and run_info["packages"]["torch"] and run_info["hardware"]["precision"]
    resolved = yaml.safe_load((run_dir / "resolved_config.yaml").read_text())
    assert resolved["data"]["train"]["path"].startswith("/") and resolved["model"]["n_layer"] == 2
    assert (run_dir / "tokenizer" / "tokenizer.json").is_file()
    assert (run_dir / "plots" / "loss.png").stat().st_size > 1000


@pytest.mark.slow
def test_existing_checkpoints_are_refused_then_resume_only_reevaluates(make_config, tmp_path):
    config = make_config(training={"max_steps": 10})
    first = model_foundry.train(config)
    run_dir = tmp_path / "experiments" / "pretraining" / "tiny_gpt"
    before = (run_dir / "checkpoints" / "last" / "model.safetensors").read_bytes()
    with pytest.raises(UserError, match="already holds checkpoints"):
        model_foundry.train(config)
    again = model_foundry.train(config, overrides={"training.resume": True})
    assert again["run"]["steps"] == first["run"]["steps"] == 10
    assert again["val"] == pytest.approx(first["val"])
    assert (run_dir / "checkpoints" / "last" / "model.safetensors").read_bytes() == before


@pytest.mark.slow
def test_resume_without_checkpoint_starts_fresh(make_config, tmp_path, capsys):
    results = model_foundry.train(make_config(training={"max_steps": 5, "resume": True}))
    assert results["run"]["steps"] == 5
    assert "starting fresh" in capsys.readouterr().err


@pytest.mark.slow
def test_resume_from_other_run_weights_only(make_config, tmp_path):
    model_foundry.train(make_config(training={"max_steps": 10}))
    source = tmp_path / "experiments" / "pretraining" / "tiny_gpt"
    saved = load_file(source / "checkpoints" / "last" / "model.safetensors")
    source_state = torch.load(source / "checkpoints" / "last" / "trainer_state.pt", weights_only=True)
    assert source_state["step"] == 10 and source_state["optimizer"]["state"]

    def trainer_for(name: str, **training):
        config = make_config(experiment={"name": name}, training={"max_steps": 5, **training})
        return build_trainer(absolute_paths(load_config(config).config), tmp_path / "inspect" / name)

    weights_only = {"resume_from": str(source), "load_only_model_state": True}
    started = trainer_for("continued", **weights_only)
    # The weights are the source's last checkpoint, every tensor of it...
    state = started.model.state_dict()
    not_loaded = [name for name, tensor in saved.items() if not torch.equal(state[name], tensor)]
    assert saved and not not_loaded, not_loaded
    # ...which a fresh model is not (so the comparison above can fail),
    fresh = trainer_for("fresh")
    assert not any(torch.equal(fresh.model.state_dict()[name], saved[name]) for name in saved
                   if name.endswith(".weight") and saved[name].dim() == 2)
    # while the step counter, optimizer, schedule and data position are those of a new run.
    assert started.counters.step == 0 and started.counters.tokens == 0 and started.counters.best_metric is None
    assert not started.optimizer.state
    assert started.train_stream.state_dict() == fresh.train_stream.state_dict()
    assert started.schedule.state_dict() == fresh.schedule.state_dict()

    config = make_config(experiment={"name": "continued"}, training={"max_steps": 5, "log_interval": 1,
                                                                   **weights_only})
    results = model_foundry.train(config)
    assert results["run"]["steps"] == 5  # weights only: the step counter starts again
    run_dir = tmp_path / "experiments" / "pretraining" / "continued"
    assert [int(r["step"]) for r in read_rows(run_dir / "metrics" / "train.csv")] == [1, 2, 3, 4, 5]
    state = torch.load(run_dir / "checkpoints" / "last" / "trainer_state.pt", weights_only=True)
    assert state["step"] == 5
    # A fresh AdamW counts its own 5 steps; the source's moments (10 steps) were not carried over.
    assert {int(s["step"]) for s in state["optimizer"]["state"].values()} == {5}
    # Starting from trained weights, its first loss is far below a fresh model's first loss.
    model_foundry.train(make_config(experiment={"name": "scratch"}, training={"max_steps": 1, "log_interval": 1}))
    scratch = float(read_rows(tmp_path / "experiments" / "pretraining" / "scratch" / "metrics" / "train.csv")[0]["loss"])
    continued = float(read_rows(run_dir / "metrics" / "train.csv")[0]["loss"])
    assert continued < scratch - 0.3, (continued, scratch)


def test_accumulation_normalises_by_real_targets(make_config, tmp_path, monkeypatch):
    """A training step over two micro-batches with 3 and 32 targets gives the gradient, and reports
    the loss, of one batch of those 35 targets: each micro-batch weighs by its share of the step's
    targets (not equally, and not by its tokens, which are 32 and 32). It goes through
    `Trainer.train_step`, where the run counts the targets, as every step of a run does."""
    config = absolute_paths(load_config(make_config(training={"gradient_accumulation_steps": 2})).config)
    trainer = build_trainer(config, tmp_path / "run")
    torch.manual_seed(0)
    ids = torch.randint(5, 30, (4, 16))
    labels = torch.randint(5, 30, (4, 16))
    labels[:2, 3:] = -100
    labels[0, :] = -100
    micro = [{"input_ids": ids[:2], "labels": labels[:2]}, {"input_ids": ids[2:], "labels": labels[2:]}]
    assert [trainer.task.count_targets(b) for b in micro] == [3, 32]
    whole = copy.deepcopy(trainer.model)
    whole_loss = whole(input_ids=ids, labels=labels).loss
    whole_loss.backward()
    gradients = {}
    monkeypatch.setattr(trainer, "train_stream", iter(micro))
    monkeypatch.setattr(trainer, "update_parameters",
                        lambda: gradients.update((n, p.grad.clone()) for n, p in trainer.model.named_parameters()))
    step = trainer.train_step()
    assert step.loss.value() == pytest.approx(whole_loss.item(), rel=1e-5)
    for name, parameter in whole.named_parameters():
        torch.testing.assert_close(gradients[name], parameter.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_cosine_schedule_with_warmup():
    schedule = make_schedule("cosine", 1e-3, 1e-4, total_steps=110, warmup_steps=10, warmup_ratio=None)
    assert schedule.lr_at(0) == pytest.approx(1e-4)
    assert schedule.lr_at(9) == pytest.approx(1e-3)
    assert schedule.lr_at(60) == pytest.approx(0.5 * (1e-3 + 1e-4))
    assert schedule.lr_at(110) == pytest.approx(1e-4)
    linear = make_schedule("linear", 1.0, 0.0, total_steps=100, warmup_steps=None, warmup_ratio=0.1)
    assert linear.warmup_steps == 10 and linear.lr_at(55) == pytest.approx(0.5)
    for kind in ("constant", "warmup_only"):
        flat = make_schedule(kind, 2.0, None, total_steps=50, warmup_steps=5, warmup_ratio=None)
        assert flat.lr_at(2) == pytest.approx(1.2) and flat.lr_at(49) == 2.0
    assert make_schedule("cosine", 1.0, None, 10, 0, None).min_lr == pytest.approx(0.1)


def test_schedule_keeps_group_ratios_and_groups_skip_decay():
    model = torch.nn.Sequential(torch.nn.Embedding(10, 4), torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    groups = parameter_groups(model, weight_decay=0.1)
    by_name = {g["name"]: g for g in groups}
    assert [p.shape for p in by_name["decay"]["params"]] == [torch.Size([4, 4])]
    assert len(by_name["no_decay"]["params"]) == 4 and by_name["no_decay"]["weight_decay"] == 0.0
    by_name["no_decay"]["lr_scale"] = 0.5
    optimizer = build_optimizer(groups, 1.0, (0.9, 0.95), torch.device("cpu"))
    make_schedule("cosine", 1.0, 0.0, 10, 0, None).apply(optimizer, 5)
    lrs = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert lrs["no_decay"] == pytest.approx(0.5 * lrs["decay"])


def test_decay_embeddings_puts_the_tied_embedding_with_the_decayed_matrices():
    from model_foundry.models.gpt import GPT, GPTConfig
    model = GPT(GPTConfig(vocab_size=20, n_layer=1, n_head=2, n_embd=8, block_size=8))
    token_table = model.backbone.token_embedding.weight  # tied: the head's weight too
    by_name = {g["name"]: g for g in parameter_groups(model, weight_decay=0.1)}
    assert any(p is token_table for p in by_name["no_decay"]["params"])
    by_name = {g["name"]: g for g in parameter_groups(model, weight_decay=0.1, decay_embeddings=True)}
    assert any(p is token_table for p in by_name["decay"]["params"]) and by_name["decay"]["weight_decay"] == 0.1
    assert all(p.dim() < 2 for p in by_name["no_decay"]["params"])  # biases and norms stay undecayed


def test_precision_auto_and_refusals():
    cpu = torch.device("cpu")
    assert resolve_precision("auto", cpu) == ("bf16" if cpu_has_native_bf16() else "fp32")
    assert resolve_precision("bf16", cpu) == "bf16"
    with pytest.raises(UserError, match="fp16 needs a GPU"):
        resolve_precision("fp16", cpu)


@pytest.mark.parametrize("capability, expected", [((9, 0), "bf16"), ((8, 0), "bf16"), ((7, 5), "fp16"),
                                                  ((7, 0), "fp16")])
def test_precision_auto_on_cuda_is_native_bf16_else_fp16_with_a_note(monkeypatch, capsys, capability, expected):
    """As the README says: bf16 where the GPU runs it natively (Ampere on), fp16 with loss scaling before.

    torch.cuda.is_bf16_supported() says yes on a T4 or V100 too (bf16 emulated, slower than fp16), so it
    is made to say yes here: auto must not believe it. Resolving prints nothing (evaluation and scoring
    resolve too); the note is returned, for the trainer to print once at the start of a run."""
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "Some GPU")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    cuda = torch.device("cuda")
    assert [resolve_precision("auto", cuda) for _ in range(3)] == [expected] * 3
    assert capsys.readouterr().err == ""
    note = precision_note("auto", cuda, expected)
    if expected == "fp16":
        assert "Some GPU has no native bf16" in note and "fp16 with loss scaling" in note
    else:
        assert note is None
    assert precision_note("fp16", cuda, "fp16") is None  # asked for: no surprise to explain
    assert resolve_precision("bf16", cuda) == "bf16" and resolve_precision("fp32", cuda) == "fp32"


def test_csv_log_truncates_rows_after_resumed_step(tmp_path):
    log = CsvLog(tmp_path / "train.csv")
    for step in (5, 10, 15):
        log.append({"step": step, "loss": 1.0 / step})
    log.truncate_after(10)
    assert [r["step"] for r in read_rows(tmp_path / "train.csv")] == ["5", "10"]
    CsvLog(tmp_path / "train.csv").append({"step": 15, "loss": 0.5})
    assert [r["step"] for r in read_rows(tmp_path / "train.csv")] == ["5", "10", "15"]


def test_best_metric_must_be_reported_by_task(make_config, tmp_path):
    with pytest.raises(UserError, match="best_metric 'accuracy'"):
        model_foundry.train(make_config(training={"best_metric": "accuracy"}))


def test_missing_training_file_names_the_key(make_config, tmp_path):
    config = make_config(data={"train": {"path": str(tmp_path / "missing_*.txt")}})
    with pytest.raises(UserError, match="data.train.path"):
        model_foundry.train(config)


