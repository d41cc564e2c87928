"""A loss or weights that stop being finite end the run with one paragraph naming the step and the likely
cause (exit 2), before any checkpoint holds them: the last good one still loads and resumes."""
from __future__ import annotations

import math
import re

import pytest
import torch
import yaml
from safetensors.torch import load_file

import model_foundry
from model_foundry.cli.main import main
from model_foundry.config.schema import TrainingSection
from model_foundry.errors import UserError
from model_foundry.tasks.language_modeling import CausalLMTask
from model_foundry.training.distributed import Workers
from model_foundry.training.non_finite import FiniteGuard


def one_paragraph(text: str) -> str:
    return " ".join(text.split())


def run_dir_of(tmp_path):
    return tmp_path / "experiments" / "pretraining" / "tiny_gpt"


def assert_finite_checkpoints(run_dir, before_step: int) -> int | None:
    """Every checkpoint on disk holds finite weights from before `before_step`; returns the step of `last`."""
    steps = {}
    root = run_dir / "checkpoints"
    for checkpoint in sorted(root.iterdir()) if root.is_dir() else []:
        weights = load_file(checkpoint / "model.safetensors")
        assert all(bool(torch.isfinite(t).all()) for t in weights.values()), checkpoint.name
        steps[checkpoint.name] = torch.load(checkpoint / "trainer_state.pt", weights_only=True)["step"]
        assert steps[checkpoint.name] < before_step, (checkpoint.name, steps)
    return steps.get("last")


def test_a_learning_rate_that_blows_up_stops_with_exit_2_before_a_checkpoint_holds_it(make_config, tmp_path,
                                                                                      monkeypatch, capsys):
    """The issue's run: learning rate 1e4, no clipping. It used to end with exit 0 and NaN weights as `best`."""
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(make_config(training={"learning_rate": 1e4, "grad_clip": None, "max_steps": 12,
                                                           "warmup_steps": 0, "log_interval": 1,
                                                           "eval_interval": 1})))
    code = main(["train", str(config)])
    err = one_paragraph(capsys.readouterr().err)
    assert code == 2 and "Traceback" not in err, err
    stopped = re.search(r"Training stopped at step (\d+): the (training|validation) loss is (nan|inf)", err)
    assert stopped, err
    assert "training.learning_rate is 10000" in err and "training.grad_clip is unset" in err
    assert_finite_checkpoints(run_dir_of(tmp_path), int(stopped.group(1)))
    assert not (run_dir_of(tmp_path) / "results.json").exists()


@pytest.fixture
def nan_at_step(monkeypatch):
    """Make the training loss NaN on one optimizer step (1-based; one micro-batch a step), between log rows."""
    training_loss = CausalLMTask.training_loss
    calls = {"n": 0}

    def poisoned(step: int):
        def loss(self, model, batch):
            calls["n"] += 1
            value = training_loss(self, model, batch)
            return value * float("nan") if calls["n"] == step else value
        monkeypatch.setattr(CausalLMTask, "training_loss", loss)
    return poisoned


@pytest.mark.parametrize("writes", [{"eval_interval": 4}, {"eval_interval": 100, "save_interval": 4}])
def test_a_nan_between_log_rows_never_reaches_a_checkpoint(make_config, tmp_path, nan_at_step, writes):
    """NaN at step 6; the loss is read at steps 5 and 10 only, so the weights' check before step 8's
    evaluation or checkpoint is what stops the run: `last` stays the step-4 one and resumes."""
    config = make_config(training={"max_steps": 12, "log_interval": 5, **writes})
    nan_at_step(6)
    with pytest.raises(UserError) as error:
        model_foundry.train(config)
    message = one_paragraph(str(error.value))
    assert message.startswith("Training stopped at step 8: the weights are no longer finite numbers"), message
    assert "last seen finite at step 5" in message and "checkpoints/last (step 4)" in message
    assert assert_finite_checkpoints(run_dir_of(tmp_path), 6) == 4

    nan_at_step(0)  # no more NaN
    results = model_foundry.train(config, overrides={"training.resume": True})
    assert results["run"]["steps"] == 12 and math.isfinite(results["val"]["loss"])


class Scaler:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def is_enabled(self) -> bool:
        return self.enabled


def guard(tmp_path, weights: float, scaling: bool) -> FiniteGuard:
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight.fill_(weights)
    return FiniteGuard(model, Workers(), Scaler(scaling), TrainingSection(precision="fp32"), "fp16",
                       tmp_path / "last")


def test_fp16_steps_the_scaler_skipped_do_not_stop_the_run(tmp_path):
    """Under fp16 a step whose loss overflowed is skipped by the grad scaler: the weights stay finite and
    the run goes on. Weights that are not finite stop it, and so does a non-finite loss without a scaler."""
    guard(tmp_path, 1.0, scaling=True).check_loss(7, math.inf)
    with pytest.raises(UserError, match="step 7: the training loss is nan.*fp16 overflow"):
        guard(tmp_path, math.nan, scaling=True).check_loss(7, math.nan)
    with pytest.raises(UserError, match="step 7: the training loss is inf"):
        guard(tmp_path, 1.0, scaling=False).check_loss(7, math.inf)
    with pytest.raises(UserError, match="step 7: the weights are no longer finite"):
        guard(tmp_path, math.inf, scaling=True).check_weights(7)
    with pytest.raises(UserError, match="none had been written yet"):
        guard(tmp_path, math.inf, scaling=False).check_weights(7)
