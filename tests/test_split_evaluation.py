"""Evaluation split across processes: each process evaluates every N-th batch and returns totals
(sums, and every prediction where a metric needs them); the totals of all give one process's metrics.

These run in one process: the shares of two ranks are computed one after the other and added, as
`Trainer.evaluate` adds what `gather_objects` brings back (tests/test_distributed.py runs the same
with real workers).
"""
from __future__ import annotations

import pytest

from model_foundry.config import load_config
from model_foundry.tasks.base import add_totals
from model_foundry.training.run import absolute_paths, build_trainer
from model_foundry.training.evaluation import evaluate_stream, stream_totals

SENTIMENT = [("a good film", "pos"), ("great fun", "pos"), ("i loved it", "pos"), ("a bad film", "neg"),
             ("awful fun", "neg"), ("i hated it", "neg"), ("not good", "neg")] * 5


def trainer_for(config: dict, tmp_path):
    return build_trainer(absolute_paths(load_config(config).config), tmp_path / "run")


def two_shares(trainer, limit=None) -> tuple[dict, list[dict]]:
    stream = trainer.eval_streams["val"]
    whole = evaluate_stream(trainer.task, trainer.model, stream, trainer.device, trainer.precision, limit)
    shares = [stream_totals(trainer.task, trainer.model, stream, trainer.device, trainer.precision, limit, (rank, 2))
              for rank in (0, 1)]
    return whole, shares


def assert_same_metrics(split: dict, whole: dict) -> None:
    assert split.keys() == whole.keys()
    for name, value in whole.items():
        if isinstance(value, float):
            assert split[name] == pytest.approx(value, rel=1e-9, abs=1e-12), name
        else:  # per-class reports, counts
            assert split[name] == value, name


@pytest.mark.slow
@pytest.mark.parametrize("arch, task", [("gpt", None), ("bert", None), ("hybrid", None),
                                        ("bert", "replaced_token_detection")])
def test_language_model_totals_of_two_shares_give_the_whole_splits_metrics(make_config, tmp_path, arch, task):
    config = make_config(arch, training={"batch_size": 2, "precision": "fp32"},
                         **({"task": {"type": task}} if task else {}))
    trainer = trainer_for(config, tmp_path)
    whole, shares = two_shares(trainer)
    batches = sum(1 for _ in trainer.eval_streams["val"].one_pass())
    assert batches >= 3  # so both shares hold batches, and unequal numbers of them
    assert shares[0] != shares[1]
    assert_same_metrics(trainer.task.metrics_from_totals(add_totals(shares)), whole)
    limited, limited_shares = two_shares(trainer, limit=3)  # training.eval_iters: the first 3 batches
    assert_same_metrics(trainer.task.metrics_from_totals(add_totals(limited_shares)), limited)


@pytest.mark.parametrize("task", ["sequence_classification", "token_classification"])
def test_finetuning_totals_carry_every_prediction(make_config, tmp_path, task):
    data = tmp_path / "data.tsv"
    if task == "sequence_classification":
        data.write_text("sentence\tlabel\n" + "".join(f"{t}\t{y}\n" for t, y in SENTIMENT), encoding="utf-8")
        columns = {"text_column": "sentence", "label_column": "label"}
    else:
        data = tmp_path / "data.conll"
        data.write_text("".join("".join(f"{w}\t{'ADJ' if w in ('good', 'bad', 'great', 'awful') else 'X'}\n"
                                        for w in t.split()) + "\n" for t, _ in SENTIMENT), encoding="utf-8")
        columns = {}
    config = make_config("gpt", experiment={"name": "tiny_tagger", "kind": "finetuning"},
                         task={"type": task}, training={"batch_size": 4, "precision": "fp32"},
                         data={"train": {"path": str(data)}, "val": {"path": str(data)}, **columns})
    trainer = trainer_for(config, tmp_path)
    whole, shares = two_shares(trainer)
    assert [len(share["outputs"]) for share in shares] == [5, 4]  # 35 rows in batches of 4: 9 batches
    assert_same_metrics(trainer.task.metrics_from_totals(add_totals(shares)), whole)


def test_add_totals_sums_numbers_and_concatenates_lists():
    assert add_totals([{"n": 1, "s": 0.5, "rows": [1]}, {"n": 2, "s": 0.25, "rows": [2, 3]}]) == \
        {"n": 3, "s": 0.75, "rows": [1, 2, 3]}
