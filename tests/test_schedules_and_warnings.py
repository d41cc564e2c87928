"""Each `training.lr_schedule` name gives its documented curve (aliases the very same one), and every
key that has no effect in a run gets exactly one warning line on stderr, never an error."""
from __future__ import annotations

import math
import typing

import pytest

import model_foundry
from model_foundry.config.loading import load_config
from model_foundry.config.schema import TrainingSection
from model_foundry.training.ignored_keys import ignored_training_keys
from model_foundry.training.schedules import SCHEDULE_ALIASES, SCHEDULES, LRSchedule, make_schedule, total_steps

PEAK, MIN, WARMUP, TOTAL = 1.0, 0.1, 10, 110
# Step 35 is a quarter of the way through the decay: cosine and linear differ there (at the midpoint they meet).
QUARTER = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi / 4))


def curve(kind: str, steps=range(0, TOTAL + 1)) -> list[float]:
    schedule = make_schedule(kind, PEAK, MIN, total_steps=TOTAL, warmup_steps=WARMUP, warmup_ratio=None)
    return [schedule.lr_at(step) for step in steps]


@pytest.mark.parametrize("kind, expected", [
    # steps:   0    4    9    10   35       60    110
    ("cosine", [0.1, 0.5, 1.0, 1.0, QUARTER, 0.55, 0.1]),
    ("linear", [0.1, 0.5, 1.0, 1.0, 0.775, 0.55, 0.1]),
    ("constant", [0.1, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),
    ("plateau", [0.1, 0.5, 1.0, 1.0, 1.0, 1.0, 1.0]),  # until a plateau of the val loss (below)
])
def test_each_schedule_gives_its_documented_curve(kind, expected):
    assert curve(kind, (0, 4, 9, 10, 35, 60, 110)) == pytest.approx(expected)


def test_plateau_reduces_where_constant_stays():
    plateau = make_schedule("plateau", PEAK, MIN, TOTAL, WARMUP, None, plateau_patience=2, plateau_factor=0.5)
    for loss in (1.0, 1.1, 1.2):
        plateau.observe(loss)
    assert plateau.lr_at(50) == pytest.approx(0.5) and curve("constant", [50]) == [1.0]
    for loss in (1.3, 1.4, 1.5, 1.6, 1.7, 1.8):
        plateau.observe(loss)
    assert plateau.lr_at(50) == pytest.approx(MIN)  # never below min_lr


def test_the_named_schedules_are_distinct():
    curves = {kind: curve(kind) for kind in ("cosine", "linear", "constant")}
    assert len({tuple(c) for c in curves.values()}) == 3


@pytest.mark.parametrize("alias", sorted(SCHEDULE_ALIASES))
def test_aliases_give_the_curve_of_the_schedule_they_name(alias):
    assert SCHEDULE_ALIASES[alias] == "constant"
    assert curve(alias) == curve("constant")
    assert LRSchedule(alias, PEAK, MIN, WARMUP, TOTAL) == LRSchedule("constant", PEAK, MIN, WARMUP, TOTAL)


def test_the_config_accepts_exactly_the_schedules_and_their_aliases():
    accepted = set(typing.get_args(TrainingSection.model_fields["lr_schedule"].annotation))
    assert accepted == set(SCHEDULES) | set(SCHEDULE_ALIASES)
    with pytest.raises(ValueError, match="unknown lr_schedule"):
        LRSchedule("triangle", PEAK, MIN, WARMUP, TOTAL)


# ---- one warning line per key that has no effect ------------------------------------------------------
# These are pure functions of the config and two facts about the data; the run at the end checks that
# the trainer prints each message once.
NO_VAL = {"val_fraction": 0.0}
EPOCH = 100  # micro-batches in one pass over the training data


@pytest.fixture
def ignored(make_config):
    """The messages for the keys without effect in the tiny run (30 steps, one process) with these sections."""
    def messages(has_val: bool = True, batches_per_epoch: int = EPOCH, **sections) -> list[str]:
        return ignored_training_keys(load_config(make_config(**sections)).config, has_val, batches_per_epoch)
    return messages


def about(messages: list[str], key: str) -> list[str]:
    return [message for message in messages if key in message]


@pytest.mark.parametrize("keys, batches_per_epoch, steps", [
    ({"max_steps": 7, "epochs": 3}, 100, 7),  # max_steps wins
    ({}, 10, 10),  # one epoch by default
    ({"epochs": 2.5, "gradient_accumulation_steps": 2}, 10, 13),  # 2.5 x 5 steps, rounded up
    ({"gradient_accumulation_steps": 4}, 1, 1),  # at least one step
])
def test_the_run_length_is_max_steps_else_epochs_of_optimizer_steps(keys, batches_per_epoch, steps):
    assert total_steps(TrainingSection(**keys), batches_per_epoch) == steps


def test_max_steps_beside_epochs_wins_with_one_warning(ignored):
    assert len(about(ignored(training={"max_steps": 7, "epochs": 3}), "max_steps wins")) == 1
    assert about(ignored(training={"max_steps": 7}), "epochs") == []


@pytest.mark.parametrize("key, value, marker", [
    ("early_stopping_patience", 2, "training.early_stopping_patience"),
    ("best_metric", "loss", "training.best_metric"),
    ("lr_schedule", "plateau", "lr_schedule: plateau"),
    ("eval_iters", 3, "training.eval_iters"),
])
def test_validation_keys_without_a_val_split_warn_once(ignored, key, value, marker):
    messages = ignored(has_val=False, data=NO_VAL, training={key: value})
    assert len(about(messages, marker)) == 1 and "val split" in about(messages, marker)[0]
    assert about(ignored(has_val=False, data=NO_VAL, training={"eval_iters": None}), "val split") == []
    assert about(ignored(training={key: value}), "val split") == []


@pytest.mark.parametrize("training, marker", [
    ({"lr_schedule": "constant", "min_lr": 1e-5}, "training.min_lr"),
    ({"lr_schedule": "warmup_only", "min_lr": 1e-5}, "training.min_lr"),
    ({"lr_schedule": "cosine", "plateau_patience": 5}, "training.plateau_patience"),
    ({"lr_schedule": "linear", "plateau_factor": 0.2}, "training.plateau_factor"),
    ({"keep_last_n": 4}, "training.keep_last_n"),
])
def test_schedule_and_checkpoint_keys_without_effect_warn_once(ignored, training, marker):
    assert len(about(ignored(training=training), marker)) == 1


@pytest.mark.parametrize("training", [
    {"lr_schedule": "cosine", "min_lr": 1e-5},
    {"lr_schedule": "plateau", "plateau_patience": 5, "plateau_factor": 0.2},
    {"save_interval": 10, "keep_last_n": 4},
])
def test_keys_that_act_do_not_warn(ignored, training):
    assert ignored(training=training) == []


def test_unfreezing_keys_without_effect_warn_once(ignored):
    assert len(about(ignored(transfer={"unfreeze_lr_multiplier": 0.5}), "transfer.unfreeze_lr_multiplier")) == 1
    late = ignored(transfer={"unfreeze_at_iteration": 100})  # the tiny run ends at step 30
    assert len(about(late, "transfer.unfreeze_at_iteration unfreezes at step 100")) == 1
    assert ignored(transfer={"unfreeze_at_iteration": 10}) == []
    # freeze_epochs counts optimizer steps of the data's epochs: 0.5 x 100 batches is step 50, after the end.
    assert len(about(ignored(transfer={"freeze_epochs": 0.5}), "transfer.freeze_epochs unfreezes at step 50")) == 1
    assert ignored(batches_per_epoch=40, transfer={"freeze_epochs": 0.5}) == []  # step 20


def test_training_distributed_has_no_effect_in_one_process(make_config):
    config = load_config(make_config(training={"distributed": "fsdp"})).config
    assert len(about(ignored_training_keys(config, True, EPOCH, alone=True), "training.distributed")) == 1
    assert ignored_training_keys(config, True, EPOCH, alone=False) == []


@pytest.mark.slow
def test_a_run_with_ignored_keys_trains_and_warns_once_each(make_config, capsys):
    config = make_config(data=NO_VAL, training={"max_steps": 3, "epochs": 2, "early_stopping_patience": 1,
                                                "lr_schedule": "plateau", "eval_interval": 1})
    results = model_foundry.train(config)
    assert results["run"]["steps"] == 3
    warnings = [line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")]
    for marker in ("max_steps wins", "training.early_stopping_patience", "lr_schedule: plateau"):
        assert len(about(warnings, marker)) == 1, warnings
