"""Exact losses of tiny runs, pinned so a refactor cannot drift.

Every setting that shapes the numbers is written out (defaults may change under them), the runs
are fp32 on CPU, and each step's training loss and the final val loss are compared to the values
recorded when the test was written. A change that moves them is either a bug or a deliberate
change of behaviour: then update the numbers in the same commit and say why.
"""
from __future__ import annotations

import csv

import pytest

import model_foundry

CORPUS = ["the cat sat on the mat and the dog sat on the log .",
          "a bird sang in the tree while the sun rose over the hill .",
          "she sells sea shells by the sea shore every summer morning .",
          "to be or not to be , that is the question we ask ."] * 30
SENTIMENT = [("a good film", 1), ("great fun", 1), ("i loved it", 1), ("a bad film", 0), ("awful fun", 0),
             ("i hated it", 0)] * 12


def full_config(tmp_path, arch: str, objective: str, model: dict | None = None, **sections) -> dict:
    """A config with every key that shapes a tiny run's numbers written out."""
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(CORPUS) + "\n", encoding="utf-8")
    config = {
        "experiment": {"name": f"pinned_{arch}_{objective}", "kind": "pretraining", "seed": 11,
                       "output_dir": str(tmp_path / "experiments")},
        "tokenizer": {"type": "char", "vocab_size": 64, "lowercase": False, "min_frequency": 1},
        "data": {"train": {"path": str(corpus)}, "val_fraction": 0.1},
        "model": {"architecture": arch, "n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 32,
                  "dropout": 0.0, **(model or {})},
        "task": {"type": objective, "mlm_probability": 0.15},
        "training": {"max_steps": 4, "batch_size": 4, "gradient_accumulation_steps": 1, "learning_rate": 3e-3,
                     "lr_schedule": "cosine", "warmup_steps": 1, "min_lr": 3e-4, "weight_decay": 0.1,
                     "beta1": 0.9, "beta2": 0.95, "grad_clip": 1.0, "eval_interval": 4, "eval_iters": 2,
                     "log_interval": 1, "precision": "fp32", "device": "cpu", "compile": False},
        "loss_modifiers": {"enabled": False},
    }
    for section, values in sections.items():
        config.setdefault(section, {}).update(values)
    return config


TRANSFORMER = {"positional": "learned", "norm_position": "pre", "bias": True, "activation": "gelu",
               "layer_norm_eps": 1e-5}
RECURRENT = {"n_layer": 1, "hidden_size": 32, "bidirectional": False}
RECURRENT_DROPPED = ("n_head", "n_embd")

PRETRAINING_RUNS = {
    "gpt": ("gpt", "causal_lm", {**TRANSFORMER, "attention_type": "causal"}, {}),
    "bert": ("bert", "masked_lm", {**TRANSFORMER, "positional": "rotary", "norm_position": "post",
                                   "attention_type": "bidirectional"}, {}),
    "hybrid": ("hybrid", "hybrid", {**TRANSFORMER, "positional": "rotary", "hybrid_design": "two_stack"},
               {"task": {"loss_weights": [0.5, 0.5]}}),
    "lstm": ("lstm", "causal_lm", RECURRENT, {}),
}

# Recorded with the code of commit bc00c9b (train losses per step, then the val loss).
EXPECTED = {
    "gpt": [3.402616, 3.230949, 3.175241, 3.112768, 3.099815082550049],
    "bert": [3.474958, 3.29071, 3.289189, 3.217494, 3.180776483607742],
    "hybrid": [3.400773, 3.280806, 3.238448, 3.185884, 3.1740991377830508],
    "lstm": [3.405116, 3.319912, 3.212027, 3.03435, 2.969328784942627],
    "classifier": [0.719245, 0.770866, 0.652727, 0.693203, 0.6966282526652018],
}


def losses_of(run_dir) -> list[float]:
    with open(run_dir / "metrics" / "train.csv", newline="") as handle:
        return [float(row["loss"]) for row in csv.DictReader(handle)]


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(PRETRAINING_RUNS))
def test_pretraining_losses_are_pinned(tmp_path, name):
    arch, task, model, sections = PRETRAINING_RUNS[name]
    config = full_config(tmp_path, arch, task, model, **sections)
    if arch == "lstm":
        for key in RECURRENT_DROPPED:
            config["model"].pop(key)
    results = model_foundry.train(config)
    run_dir = tmp_path / "experiments" / "pretraining" / config["experiment"]["name"]
    observed = losses_of(run_dir) + [results["val"]["loss"]]
    assert observed == pytest.approx(EXPECTED[name], rel=1e-5)


@pytest.mark.slow
def test_classifier_losses_are_pinned(tmp_path):
    rows = "\n".join(f"{text}\t{label}" for text, label in SENTIMENT)
    for split in ("train", "dev"):
        (tmp_path / f"{split}.tsv").write_text("sentence\tlabel\n" + rows + "\n", encoding="utf-8")
    config = full_config(tmp_path, "gpt", "sequence_classification", {**TRANSFORMER, "attention_type": "causal"},
                         data={"train": {"path": str(tmp_path / "train.tsv")},
                               "val": {"path": str(tmp_path / "dev.tsv")}, "format": "tsv",
                               "text_column": "sentence", "label_column": "label"})
    config["experiment"]["kind"] = "finetuning"
    config["task"] = {"type": "sequence_classification", "pooler": "last", "head": "linear", "head_dropout": 0.0,
                      "criterion": "cross_entropy", "label_smoothing": 0.0}
    results = model_foundry.train(config)
    run_dir = tmp_path / "experiments" / "finetuning" / config["experiment"]["name"]
    observed = losses_of(run_dir) + [results["val"]["loss"]]
    assert observed == pytest.approx(EXPECTED["classifier"], rel=1e-5)
