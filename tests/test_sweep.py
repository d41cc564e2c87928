"""`foundry sweep`: a grid over seeds of tiny GPT runs, its tables, skipping and resuming, and its mistakes."""
from __future__ import annotations

import csv
import json
import statistics
from pathlib import Path

import pytest
import yaml

from model_foundry.cli.main import main
from model_foundry.sweeps import sweep as sweep_module
from tests.conftest import says, tiny_config

LR = "training.learning_rate"


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


@pytest.fixture
def config_path(tiny_corpus: Path, tmp_path: Path) -> Path:
    """A few-step char-level GPT with val and test splits, as a YAML file."""
    config = tiny_config(tiny_corpus, tmp_path / "experiments", data={"test": {"path": str(tiny_corpus)}},
                         training={"max_steps": 6, "eval_interval": 3, "log_interval": 3, "warmup_steps": 1})
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def count_runs(monkeypatch) -> list[dict]:
    """Record the overrides of every run the sweep starts, still running it."""
    calls: list[dict] = []
    real = sweep_module.run_training

    def spy(config, overrides, out):
        calls.append(dict(overrides))
        return real(config, overrides, out=out)

    monkeypatch.setattr(sweep_module, "run_training", spy)
    return calls


@pytest.mark.slow
def test_grid_over_seeds_tables_skip_and_resume(config_path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "sweep"
    argv = ["sweep", str(config_path), "--set", "model.n_layer=1", "--grid", f"{LR}=1e-3,1e-2",
            "--seeds", "1,2", "--out", str(out)]
    calls = count_runs(monkeypatch)
    code = main(argv)
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert len(calls) == 4 and all(c["model.n_layer"] == 1 for c in calls)

    rows = read_csv(out / "sweep.csv")
    assert len(rows) == 4
    assert list(rows[0])[:4] == [LR, "seed", "run_dir", "wall_s"]
    assert {"val_loss", "val_perplexity", "test_loss"} <= set(rows[0])
    assert [(r[LR], r["seed"]) for r in rows] == [("1e-3", "1"), ("1e-3", "2"), ("1e-2", "1"), ("1e-2", "2")]
    for row in rows:
        run_dir = Path(row["run_dir"])
        assert run_dir.parent == out / "runs"
        results = json.loads((run_dir / "results.json").read_text())
        assert float(row["test_loss"]) == pytest.approx(results["test"]["loss"])
        assert float(row["wall_s"]) == pytest.approx(results["run"]["wall_s"])
        assert yaml.safe_load((run_dir / "resolved_config.yaml").read_text())["experiment"]["seed"] == int(row["seed"])
    assert rows[0]["val_loss"] != rows[1]["val_loss"], "the seed reaches the run"

    summary = read_csv(out / "summary.csv")
    assert [s[LR] for s in summary] == ["1e-3", "1e-2"]
    assert list(summary[0])[0] == LR and list(summary[0])[-1] == "n"
    for entry, runs in zip(summary, (rows[:2], rows[2:])):
        assert entry["n"] == "2"
        for column in ("wall_s", "val_loss", "test_loss"):
            values = [float(r[column]) for r in runs]
            assert float(entry[f"{column}_mean"]) == pytest.approx(statistics.fmean(values))
            assert float(entry[f"{column}_std"]) == pytest.approx(statistics.stdev(values))
    assert (out / "sweep.png").stat().st_size > 1000
    assert "test_loss" in captured.out and "1e-2" in captured.out

    mtimes = {r["run_dir"]: (Path(r["run_dir"]) / "results.json").stat().st_mtime_ns for r in rows}
    calls.clear()
    assert main(argv) == 0
    assert calls == [], "finished runs are not trained again"
    assert read_csv(out / "sweep.csv") == rows
    assert {r["run_dir"]: (Path(r["run_dir"]) / "results.json").stat().st_mtime_ns for r in rows} == mtimes

    # A run that was started again and stopped keeps its old results.json but loses run.json's end_time.
    info_path = Path(rows[3]["run_dir"]) / "run.json"
    info = json.loads(info_path.read_text())
    info_path.write_text(json.dumps({**info, "end_time": None}))
    assert main(argv) == 0
    assert len(calls) == 1 and calls[0]["training.resume"] is True and calls[0]["experiment.seed"] == 2
    assert json.loads(info_path.read_text())["end_time"] is not None


@pytest.mark.slow
def test_python_api_default_seed(config_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    calls = count_runs(monkeypatch)
    rows = sweep_module.run_sweep(config_path, {"model.n_embd": [16]}, None, tmp_path / "api",
                                  overrides={"training.max_steps": 2})
    assert len(calls) == 1 and calls[0]["training.max_steps"] == 2
    assert len(rows) == 1 and rows[0]["seed"] == 7 and rows[0]["model.n_embd"] == 16
    assert Path(rows[0]["run_dir"]).name == "model.n_embd=16,seed=7"
    summary = read_csv(tmp_path / "api" / "summary.csv")
    assert summary[0]["n"] == "1" and summary[0]["val_loss_std"] == "" and summary[0]["val_loss_mean"]


@pytest.mark.parametrize("grid, named", [
    (f"{LR}=1e-3,1e-2", None),
    ("training.lernig_rate=1e-3,1e-2", "training.lernig_rate"),
    (f"{LR}", LR),
    (f"{LR}=", LR),
    (f"{LR}=1e-3,,1e-2", LR),
    ("experiment.seed=1,2", "--seeds"),
])
def test_bad_grid_exits_2_before_any_run(config_path, tmp_path, monkeypatch, capsys, grid, named):
    monkeypatch.chdir(tmp_path)
    calls = count_runs(monkeypatch)
    out = tmp_path / "bad_sweep"
    argv = ["sweep", str(config_path), "--grid", grid, "--out", str(out)]
    if named is None:  # a valid grid, with a mistake in the second grid key
        argv += ["--grid", "model.n_layers=1,2"]
        named = "model.n_layers"
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2 and says(err, named) and "Traceback" not in err
    assert calls == [] and not out.exists()


def test_bad_seeds_exit_2(config_path, tmp_path, capsys):
    code = main(["sweep", str(config_path), "--grid", f"{LR}=1e-3", "--seeds", "1,two", "--out", str(tmp_path / "s")])
    assert code == 2 and says(capsys.readouterr().err, "--seeds")
