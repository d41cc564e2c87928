"""The loop's checkpoint writes (each once), gradient clipping, and the backbone's learning-rate multiplier."""
from __future__ import annotations

import csv
import statistics

import pytest
import torch

import model_foundry
from model_foundry.config import load_config
from model_foundry.training import checkpoints
from model_foundry.training.run import absolute_paths, build_trainer, seed_everything

SENTIMENT = [("a good film", 1), ("great fun", 1), ("i loved it", 1), ("a bad film", 0), ("awful fun!", 0),
             ("i hated it so", 0)] * 12


@pytest.fixture
def writes(monkeypatch) -> list[tuple[str, int]]:
    """Every checkpoint written, in order: (name, step)."""
    written: list[tuple[str, int]] = []
    save = checkpoints.save_checkpoint

    def recording(directory, model, state):
        written.append((directory.name, state["step"]))
        save(directory, model, state)

    monkeypatch.setattr(checkpoints, "save_checkpoint", recording)
    return written


@pytest.mark.parametrize("training, expected", [
    # The last step is an eval step: `last` used to be written there, then again after the loop.
    ({"max_steps": 4, "eval_interval": 2}, [("last", 2), ("last", 4)]),
    # ...and a step checkpoint's step too.
    ({"max_steps": 4, "eval_interval": 4, "save_interval": 2}, [("step_2", 2), ("last", 2), ("step_4", 4),
                                                                ("last", 4)]),
    # Early stopping ends at an eval step (a learning rate of ~0 never improves on the first evaluation).
    ({"max_steps": 30, "eval_interval": 2, "learning_rate": 1e-12, "warmup_steps": 0, "min_lr": 0.0,
      "early_stopping_patience": 2}, [("last", 2), ("last", 4), ("last", 6)]),
])
def test_each_checkpoint_is_written_once_a_step(make_config, writes, training, expected):
    model_foundry.train(make_config(training={"log_interval": 2, **training}))
    assert [write for write in writes if write[0] != "best"] == expected
    assert len(writes) == len(set(writes))  # best too: at most once a step


def first_step_gradient_norm(make_config, tmp_path, grad_clip: float | None) -> float:
    """The norm of the gradients the optimizer steps with, on the first step of the tiny fp32 run."""
    config = make_config(training={"grad_clip": grad_clip, "precision": "fp32"})
    seed_everything(config["experiment"]["seed"])  # as `train` does: the same model and batch each time
    trainer = build_trainer(absolute_paths(load_config(config).config), tmp_path / f"clip_{grad_clip}")
    norms = []
    step = trainer.scaler.step

    def recording(optimizer, *args, **kwargs):
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
        return step(optimizer, *args, **kwargs)

    trainer.scaler.step = recording
    trainer.train_step()
    return norms[0]


def test_grad_clip_bounds_the_gradient_norm_the_optimizer_sees(make_config, tmp_path):
    natural = first_step_gradient_norm(make_config, tmp_path, None)
    bound = natural / 20
    assert first_step_gradient_norm(make_config, tmp_path, bound) == pytest.approx(bound, rel=1e-4)
    # A bound above the norm leaves the gradients as they are.
    assert first_step_gradient_norm(make_config, tmp_path, natural * 20) == pytest.approx(natural, rel=1e-5)


def classifier_config(make_config, tmp_path, **transfer) -> dict:
    data = tmp_path / "train.tsv"
    data.write_text("sentence\tlabel\n" + "\n".join(f"{t}\t{y}" for t, y in SENTIMENT) + "\n", encoding="utf-8")
    return make_config("gpt", experiment={"name": "tiny_classifier", "kind": "finetuning"},
                       task={"type": "sequence_classification"}, transfer=transfer,
                       training={"max_steps": 1, "log_interval": 1, "learning_rate": 1e-3, "lr_schedule": "constant",
                                 "warmup_steps": 0, "precision": "fp32", "batch_size": 8},
                       data={"train": {"path": str(data)}, "val": {"path": str(data)}, "format": "tsv",
                             "text_column": "sentence", "label_column": "label"})


def test_backbone_lr_mult_scales_the_backbones_rate_and_its_steps(make_config, tmp_path):
    """The backbone trains at head LR x backbone_lr_mult. AdamW's first step moves each weight by about its
    rate (the update is m / sqrt(v) = g / |g|), so the weights' typical move shows the rate they got."""
    config = classifier_config(make_config, tmp_path, backbone_lr_mult=0.25)
    run_dir = tmp_path / "run"
    trainer = build_trainer(absolute_paths(load_config(config).config), run_dir)
    before = {name: p.detach().clone() for name, p in trainer.model.named_parameters()}
    logger = model_foundry.training.metrics_log.MetricsLogger(run_dir, csv_enabled=True, tensorboard=False,
                                                              wandb=False, wandb_mode="offline", project="p",
                                                              run_name="r", config={})
    trainer.fit(logger)
    logger.close()
    with open(run_dir / "metrics" / "train.csv", newline="") as handle:
        row = next(csv.DictReader(handle))
    assert float(row["lr_head_decay"]) == pytest.approx(1e-3)
    assert float(row["lr_backbone_decay"]) == pytest.approx(0.25e-3)

    def typical_move(prefix: str) -> float:
        moves = [(p.detach() - before[name]).abs().flatten() for name, p in trainer.model.named_parameters()
                 if name.startswith(prefix) and p.dim() == 2]
        return statistics.median(torch.cat(moves).tolist())

    assert typical_move("backbone.blocks.") == pytest.approx(0.25e-3, rel=0.05)
    assert typical_move("head.") == pytest.approx(1e-3, rel=0.05)
