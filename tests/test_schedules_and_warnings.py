"""Each `training.lr_schedule` name gives its documented curve (aliases the very same one), and every
key that has no effect in a run gets exactly one warning line on stderr, never an error."""
from __future__ import annotations

import math
import typing

import pytest

import model_foundry
from model_foundry.config.loading import load_config
from model_foundry.config.schema import TrainingSection
from model_foundry.training.run import build_trainer
from model_foundry.training.schedules import SCHEDULE_ALIASES, SCHEDULES, LRSchedule, make_schedule

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
NO_VAL = {"val_fraction": 0.0}


@pytest.fixture
def start(make_config, tmp_path, capsys):
    """Build a run's trainer (tokenizer, data, model; no step) and return what it printed on stderr."""
    def build(**sections) -> str:
        capsys.readouterr()
        build_trainer(load_config(make_config(**sections)).config, tmp_path / "run")
        return capsys.readouterr().err
    return build


def warnings_about(stderr: str, key: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("warning:") and key in line]


def test_max_steps_beside_epochs_wins_with_one_warning(start):
    stderr = start(training={"max_steps": 7, "epochs": 3})
    assert len(warnings_about(stderr, "max_steps wins")) == 1
    assert warnings_about(start(training={"max_steps": 7}), "epochs") == []


@pytest.mark.parametrize("key, value, marker", [
    ("early_stopping_patience", 2, "training.early_stopping_patience"),
    ("best_metric", "loss", "training.best_metric"),
    ("lr_schedule", "plateau", "lr_schedule: plateau"),
    ("eval_iters", 3, "training.eval_iters"),
])
def test_validation_keys_without_a_val_split_warn_once(start, key, value, marker):
    stderr = start(data=NO_VAL, training={key: value})
    assert len(warnings_about(stderr, marker)) == 1 and "val split" in warnings_about(stderr, marker)[0]
    assert warnings_about(start(data=NO_VAL, training={"eval_iters": None}), "val split") == []
    assert warnings_about(start(training={key: value}), "val split") == []  # the tiny config has a val split


@pytest.mark.parametrize("training, marker", [
    ({"lr_schedule": "constant", "min_lr": 1e-5}, "training.min_lr"),
    ({"lr_schedule": "warmup_only", "min_lr": 1e-5}, "training.min_lr"),
    ({"lr_schedule": "cosine", "plateau_patience": 5}, "training.plateau_patience"),
    ({"lr_schedule": "linear", "plateau_factor": 0.2}, "training.plateau_factor"),
    ({"keep_last_n": 4}, "training.keep_last_n"),
])
def test_schedule_and_checkpoint_keys_without_effect_warn_once(start, training, marker):
    assert len(warnings_about(start(training=training), marker)) == 1


@pytest.mark.parametrize("training", [
    {"lr_schedule": "cosine", "min_lr": 1e-5},
    {"lr_schedule": "plateau", "plateau_patience": 5, "plateau_factor": 0.2},
    {"save_interval": 10, "keep_last_n": 4},
])
def test_keys_that_act_do_not_warn(start, training):
    assert [line for line in start(training=training).splitlines() if line.startswith("warning:")] == []


def test_unfreezing_keys_without_effect_warn_once(start):
    stderr = start(transfer={"unfreeze_lr_multiplier": 0.5})
    assert len(warnings_about(stderr, "transfer.unfreeze_lr_multiplier")) == 1
    stderr = start(transfer={"unfreeze_at_iteration": 100})  # the tiny run ends at step 30
    assert len(warnings_about(stderr, "transfer.unfreeze_at_iteration")) == 1
    assert warnings_about(start(transfer={"unfreeze_at_iteration": 10}), "transfer.") == []


@pytest.mark.slow
def test_a_run_with_ignored_keys_trains_and_warns_once_each(make_config, capsys):
    config = make_config(data=NO_VAL, training={"max_steps": 3, "epochs": 2, "early_stopping_patience": 1,
                                                "lr_schedule": "plateau", "eval_interval": 1})
    results = model_foundry.train(config)
    assert results["run"]["steps"] == 3
    stderr = capsys.readouterr().err
    for marker in ("max_steps wins", "training.early_stopping_patience", "lr_schedule: plateau"):
        assert len(warnings_about(stderr, marker)) == 1, stderr
