"""`foundry sweep`: one training run per combination of grid values and seed, then the tables and a plot.

DIR/runs/<key>=<value>,...,seed=<s>/ holds each run; DIR/sweep.csv has one row per run,
DIR/summary.csv the mean and sample std of every number per grid point, DIR/sweep.png the main
metric against the first grid key. Every combination's config is validated before the first run.
"""
from __future__ import annotations

import csv
import itertools
import json
import re
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from model_foundry.config import FoundryConfig, load_config
from model_foundry.config.loading import parse_overrides
from model_foundry.errors import UserError
from model_foundry.training.plots import save_figure
from model_foundry.reporting.runs import format_table
from model_foundry.tasks import get_task
from model_foundry.training.run import run_training

SEED_KEY = "experiment.seed"
RUN_COLUMNS = ("seed", "run_dir")


@dataclass
class Point:
    """One run of the sweep: its grid values, its seed, its directory name and its validated config."""

    values: dict[str, Any]
    seed: int
    name: str
    config: FoundryConfig


def parse_grid(items: list[str]) -> dict[str, list]:
    """`["training.learning_rate=1e-3,3e-4", ...]` into {key: values}, each value read as `--set` reads it."""
    grid: dict[str, list] = {}
    for item in items:
        key, sep, text = item.partition("=")
        key = key.strip()
        parts = text.split(",")
        if not sep or not key or any(not part.strip() for part in parts):
            raise UserError(f"--grid {item!r} is not of the form KEY=V1,V2,... with a value between every "
                            "comma; for example --grid training.learning_rate=1e-3,3e-4.")
        if key in grid:
            raise UserError(f"--grid {key} is given twice; list all its values in one --grid {key}=V1,V2,...")
        try:
            grid[key] = [parse_overrides([f"{key}={part}"])[key] for part in parts]
        except yaml.YAMLError as exc:
            raise UserError(f"--grid {item!r} has a value that is not valid YAML ({exc}).") from None
    return grid


def parse_seeds(text: str) -> list[int]:
    """`"1,2,3"` into [1, 2, 3]."""
    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise UserError(f"--seeds {text!r} is not a comma-separated list of integers; for example "
                        "--seeds 1,2,3.") from None


def run_sweep(config: str | Path | dict | FoundryConfig, grid: dict[str, list], seeds: list[int] | None,
              out: str | Path, overrides: dict[str, Any] | list[str] | None = None) -> list[dict]:
    """Train every grid combination for every seed (default: the config's experiment.seed) under
    `out/runs/`, skipping finished runs and resuming interrupted ones; write sweep.csv, summary.csv and
    sweep.png in `out`; return the sweep.csv rows."""
    out = Path(out)
    base = parse_overrides(overrides)
    points = plan(config, grid, seeds, base)
    rows = []
    for index, point in enumerate(points, 1):
        run_dir = out / "runs" / point.name
        if is_finished(run_dir):
            print(f"sweep {index}/{len(points)} {point.name}: finished earlier, skipped", file=sys.stderr)
        else:
            run_overrides = {**base, **point.values, SEED_KEY: point.seed}
            if run_dir.exists():  # an interrupted run: continue from its checkpoints/last
                run_overrides["training.resume"] = True
            print(f"sweep {index}/{len(points)} {point.name}", file=sys.stderr)
            run_training(config, run_overrides, out=run_dir)
        rows.append(sweep_row(point, run_dir))
    summary = summarise(rows, list(grid))
    write_csv(rows, out / "sweep.csv")
    write_csv(summary, out / "summary.csv")
    metric = main_metric(points[0], rows)
    if grid and metric is not None:
        plot_sweep(summary, list(grid), metric, out / "sweep.png")
    return rows


def plan(config: str | Path | dict | FoundryConfig, grid: dict[str, list], seeds: list[int] | None,
         base: dict[str, Any]) -> list[Point]:
    """Every run of the sweep, each config validated, so that a mistake stops the sweep before it starts."""
    if SEED_KEY in grid:
        raise UserError(f"--grid {SEED_KEY} is not allowed; list the seeds with --seeds S1,S2,...")
    for key, values in grid.items():
        if not values:
            raise UserError(f"--grid {key} has no values; give at least one: --grid {key}=V1,V2,...")
    if seeds is None:
        seeds = [load_config(config, base).config.experiment.seed]
    if not seeds or len(set(seeds)) != len(seeds):
        raise UserError(f"--seeds must list at least one seed, each once (got {seeds}).")
    points: list[Point] = []
    for combination in itertools.product(*grid.values()):
        values = dict(zip(grid, combination))
        for seed in seeds:
            name = safe_name(",".join([*(f"{k}={format_value(v)}" for k, v in values.items()), f"seed={seed}"]))
            try:
                loaded = load_config(config, {**base, **values, SEED_KEY: seed})
            except UserError as error:
                message = str(error)
                for key in grid:  # the loader names every override `--set`
                    message = message.replace(f"--set {key}: ", f"--grid {key}: ")
                raise UserError(f"Sweep run {name} (no run was started): {message}") from None
            points.append(Point(values, seed, name, loaded.config))
    names = [p.name for p in points]
    if len(set(names)) != len(names):
        twice = sorted({n for n in names if names.count(n) > 1})
        raise UserError(f"--grid values give the same run directory name twice ({', '.join(twice)}): values "
                        "that differ only in characters other than letters, digits and ._=,+- or are repeated.")
    return points


def format_value(value: Any) -> str:
    """A grid value as the user would write it: strings as they are, everything else as JSON (true, null)."""
    return value if isinstance(value, str) else json.dumps(value)


def safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=,+-]", "_", name)


def is_finished(run_dir: Path) -> bool:
    """Whether the run's latest attempt finished. results.json alone is not enough: a run restarted
    after finishing keeps its old results.json while run.json's end_time is cleared at the start and
    set only after the new results.json is written."""
    info = run_dir / "run.json"
    if not ((run_dir / "results.json").is_file() and info.is_file()):
        return False
    return json.loads(info.read_text(encoding="utf-8")).get("end_time") is not None


def sweep_row(point: Point, run_dir: Path) -> dict:
    """The grid values, seed, run directory, wall time and every numeric val/test metric of one run."""
    results = json.loads((run_dir / "results.json").read_text(encoding="utf-8"))
    row = {**point.values, "seed": point.seed, "run_dir": str(run_dir), "wall_s": results["run"]["wall_s"]}
    for split in ("val", "test"):
        for name, value in results.get(split, {}).items():
            if is_number(value):  # per_class and confusion_matrix are not
                row[f"{split}_{name}"] = value
    return row


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def summarise(rows: list[dict], grid_keys: list[str]) -> list[dict]:
    """One row per grid point: its values, `<column>_mean` and `<column>_std` (sample std, None with a
    single run) of wall_s and every metric, and `n`, the number of runs."""
    numeric = [c for c in columns(rows) if c not in grid_keys and c not in RUN_COLUMNS]
    groups: dict[tuple[str, ...], list[dict]] = {}
    for row in rows:
        groups.setdefault(tuple(format_value(row[k]) for k in grid_keys), []).append(row)
    summary = []
    for members in groups.values():
        entry = {k: members[0][k] for k in grid_keys}
        for column in numeric:
            values = [r[column] for r in members if column in r]
            entry[f"{column}_mean"] = statistics.fmean(values) if values else None
            entry[f"{column}_std"] = statistics.stdev(values) if len(values) > 1 else None
        entry["n"] = len(members)
        summary.append(entry)
    return summary


def columns(rows: list[dict]) -> list[str]:
    """Every key of the rows, in order of first appearance."""
    return list(dict.fromkeys(key for row in rows for key in row))


def write_csv(rows: list[dict], path: Path) -> None:
    """Numbers as they are, None as an empty cell, grid values as `format_value` writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=columns(rows))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if v is None else v if is_number(v) else format_value(v) for k, v in row.items()})


def main_metric(point: Point, rows: list[dict]) -> str | None:
    """The sweep.csv column of the metric that picks checkpoints/best (training.best_metric, else the
    task's default): test_ when the runs have a test split, else val_; None when they have neither."""
    results = json.loads((Path(rows[0]["run_dir"]) / "results.json").read_text(encoding="utf-8"))
    name = point.config.training.best_metric or get_task(results["task"]).default_best_metric
    for column in (f"test_{name}", f"val_{name}"):
        if any(column in row for row in rows):
            return column
    return None


def format_summary(summary: list[dict], grid_keys: list[str]) -> str:
    """The summary as a fixed-width table, each number as `mean ± std`."""
    numeric = [c.removesuffix("_mean") for c in columns(summary) if c.endswith("_mean")]
    cells = []
    for entry in summary:
        cell = {k: format_value(entry[k]) for k in grid_keys}
        cell["n"] = str(entry["n"])
        for column in numeric:
            mean, std = entry[f"{column}_mean"], entry[f"{column}_std"]
            cell[column] = "" if mean is None else f"{mean:.4g}" + ("" if std is None else f" ± {std:.2g}")
        cells.append(cell)
    return format_table(cells, (*grid_keys, "n", *numeric))


def as_number(value: Any) -> float | None:
    """A grid value as a number for the x axis (YAML reads 1e-3 as a string), or None."""
    if isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def plot_sweep(summary: list[dict], grid_keys: list[str], metric: str, out: Path) -> Path:
    """`metric` mean ± std against the first grid key, one line per combination of the other keys."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first, others = grid_keys[0], grid_keys[1:]
    numeric = all(as_number(entry[first]) is not None for entry in summary)
    labels = list(dict.fromkeys(format_value(entry[first]) for entry in summary))
    lines: dict[str, list[dict]] = {}
    for entry in summary:
        if entry.get(f"{metric}_mean") is not None:
            lines.setdefault(", ".join(f"{k}={format_value(entry[k])}" for k in others), []).append(entry)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, members in lines.items():
        xs = [as_number(e[first]) if numeric else labels.index(format_value(e[first])) for e in members]
        order = sorted(range(len(xs)), key=xs.__getitem__)
        ax.errorbar([xs[i] for i in order], [members[i][f"{metric}_mean"] for i in order],
                    yerr=[members[i][f"{metric}_std"] or 0.0 for i in order],
                    marker="o", capsize=3, label=label or None)
    if numeric:
        values = [as_number(entry[first]) for entry in summary]
        if min(values) > 0 and max(values) >= 100 * min(values):  # learning rates and the like
            ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(labels)), labels)
        ax.set_xlim(-0.5, len(labels) - 0.5)
    ax.set_xlabel(first)
    ax.set_ylabel(f"{metric} (mean ± std over seeds)")
    ax.grid(alpha=0.3)
    if others:
        ax.legend(fontsize="small")
    return save_figure(fig, out)
