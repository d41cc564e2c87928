"""`foundry runs`: one row per finished run, read from its results.json."""
from __future__ import annotations

import json
import statistics
from pathlib import Path

import yaml

from model_foundry.training.plots import read_csv

COLUMNS = ("run", "task", "arch", "params", "steps", "tokens", "tok/s", "mfu", "val loss", "val ppl", "val bits/tok",
           "val", "best", "test")
LANGUAGE_MODEL_TASKS = ("causal_lm", "masked_lm", "hybrid")


def find_results(root: Path) -> list[Path]:
    return sorted(root.rglob("results.json"))


def run_row(results_path: Path, root: Path) -> dict[str, str]:
    """The table row of one run; the 'best' and 'test' cells show the task's headline metric."""
    results = json.loads(results_path.read_text(encoding="utf-8"))
    run_dir = results_path.parent
    resolved = run_dir / "resolved_config.yaml"
    config = yaml.safe_load(resolved.read_text(encoding="utf-8")) if resolved.is_file() else {}
    val, test, run = results.get("val", {}), results.get("test", {}), results.get("run", {})
    return {
        "run": str(run_dir.relative_to(root)) if run_dir.is_relative_to(root) else str(run_dir),
        "task": results.get("task", "?"),
        "arch": (config.get("model") or {}).get("architecture", "?"),
        "params": human_count(run.get("params")),
        "steps": str(run.get("steps", "")),
        "tokens": human_count(run.get("tokens")),
        "tok/s": f"{run['tokens_per_sec']:,.0f}" if run.get("tokens_per_sec") else "",
        "mfu": typical_mfu(run_dir / "metrics" / "train.csv"),
        "val loss": number(val.get("loss")),
        "val ppl": number(val.get("perplexity"), 2),
        # Bits per token of next-token prediction for causal LMs and hybrids (bits per character with the
        # char tokenizer: comparable across them); of the masked tokens for masked LMs.
        "val bits/tok": number(val.get("bits_per_token"), 3),
        "val": "" if results.get("task") in LANGUAGE_MODEL_TASKS else headline(val),
        "best": f"step {results.get('best_step')} ({results.get('checkpoint')})",
        "test": headline(test),
    }


def typical_mfu(train_csv: Path) -> str:
    """The median `mfu` of the logged rows as a percentage (the first row, with warm-up, left out when
    there are others); empty when the run logged none or its device's peak was unknown."""
    try:
        values = [float(row["mfu"]) for row in read_csv(train_csv) if row.get("mfu")]
    except (OSError, ValueError):
        return ""
    values = values[1:] if len(values) > 1 else values
    return f"{statistics.median(values):.1%}" if values else ""


def headline(metrics: dict) -> str:
    for key in ("accuracy", "token_accuracy", "pearson", "rtd_accuracy", "mlm_accuracy", "loss"):
        if key in metrics:
            return f"{key} {metrics[key]:.4f}"
    return ""


def number(value, digits: int = 4) -> str:
    return "" if value is None else f"{value:.{digits}f}"


def human_count(value) -> str:
    if value is None:
        return ""
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if value >= size:
            return f"{value / size:.2f}{unit}"
    return str(value)


def format_table(rows: list[dict[str, str]], columns: tuple[str, ...] = COLUMNS) -> str:
    """A plain fixed-width table (columns that are empty in every row are left out)."""
    shown = [c for c in columns if any(row.get(c) for row in rows)]
    widths = {c: max(len(c), *(len(row.get(c, "")) for row in rows)) for c in shown}
    lines = ["  ".join(c.ljust(widths[c]) for c in shown), "  ".join("-" * widths[c] for c in shown)]
    lines += ["  ".join(row.get(c, "").ljust(widths[c]) for c in shown) for row in rows]
    return "\n".join(lines)
