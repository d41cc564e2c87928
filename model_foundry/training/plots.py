"""PNG curves of one or several runs: training loss per step, validation loss at each evaluation."""
from __future__ import annotations

import csv
from pathlib import Path

from model_foundry.errors import UserError


def read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def plot_runs(run_dirs: list[Path], out: Path, metric: str = "loss") -> Path:
    """One PNG with train and val `metric` curves of every run (val drawn dashed, same colour)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    drawn = 0
    for index, run_dir in enumerate(run_dirs):
        colour = f"C{index % 10}"
        name = run_dir.name
        train_rows = [r for r in read_csv(run_dir / "metrics" / "train.csv") if r.get(metric)]
        val_rows = [r for r in read_csv(run_dir / "metrics" / "eval.csv")
                    if r.get("split") == "val" and r.get(metric)]
        if train_rows:
            ax.plot([int(r["step"]) for r in train_rows], [float(r[metric]) for r in train_rows],
                    color=colour, alpha=0.8, label=f"{name} train")
            drawn += 1
        if val_rows:
            ax.plot([int(r["step"]) for r in val_rows], [float(r[metric]) for r in val_rows],
                    color=colour, linestyle="--", marker="o", markersize=3, label=f"{name} val")
            drawn += 1
    if not drawn:
        plt.close(fig)
        raise UserError(f"No {metric!r} values in metrics/train.csv or metrics/eval.csv of "
                        f"{', '.join(str(r) for r in run_dirs)}; was CSV logging on (logging.csv: true)?")
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(f"{metric} per step")
    ax.grid(alpha=0.3)
    ax.legend(fontsize="small")
    return save_figure(fig, out)


def plot_label_efficiency(rows: list[dict], out: Path) -> Path:
    """Test accuracy against the number of training labels, one line per backbone (error bars: std over seeds).

    `rows` hold `labels` (a number, or "all" drawn at the largest count's right), `backbone`,
    `test_accuracy` and `test_accuracy_std`; a backbone named "... (reference)" is drawn dashed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = sorted({row["labels"] for row in rows if row["labels"] != "all"})
    positions = {count: index for index, count in enumerate(counts)}
    positions["all"] = len(counts)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for backbone in dict.fromkeys(row["backbone"] for row in rows):
        points = sorted((positions[r["labels"]], r["test_accuracy"], r.get("test_accuracy_std", 0.0))
                        for r in rows if r["backbone"] == backbone)
        ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                    capsize=3, label=backbone, linestyle="--" if "reference" in backbone else "-")
    ax.set_xticks(list(positions.values()), [f"{c:,}" if c != "all" else "all" for c in positions])
    ax.set_xlabel("training labels")
    ax.set_ylabel("test accuracy")
    ax.set_title("What pretraining buys")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, out)


def save_figure(fig, out: Path) -> Path:
    """Write a matplotlib figure as a PNG (creating its folder) and free it."""
    import matplotlib.pyplot as plt

    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out
