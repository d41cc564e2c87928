"""Each piece of the modern recipe, measured: named variants of one config, over seeds, interleaved.

Run by hand from the repository root (not a test):

    python benchmarks/recipes/ablate.py examples/shakespeare_char.yaml --seeds 1337,1,2 \
        --variant classic: \
        --variant modern:model.recipe=modern,model.activation=relu2 \
        --variant modern_muon:model.recipe=modern,model.activation=relu2,training.optimizer=muon

A variant is `NAME:KEY=VALUE,KEY=VALUE` (`NAME:` alone runs the config as it is). For each seed, every
variant trains once, one after the other, so a slower machine or a busy neighbour hits all variants alike.
The table gives, per variant, the mean ± std over seeds of the last evaluation's val loss (the
`eval_iters` batches of metrics/eval.csv at the final step) and of the wall time of the whole
`foundry train` process. `--keep DIR` keeps the runs; `--set KEY=VALUE` applies to every variant.
"""
from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, settings = text.partition(":")
    if not name:
        raise argparse.ArgumentTypeError(f"variant {text!r} has no name; write NAME:KEY=VALUE,...")
    return name, [s for s in settings.split(",") if s]


def last_val_loss(run: Path) -> tuple[int, float]:
    with open(run / "metrics" / "eval.csv", newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row.get("split") == "val" and row.get("loss")]
    return int(float(rows[-1]["step"])), float(rows[-1]["loss"])


def train(config: Path, settings: list[str], seed: int, out: Path) -> dict:
    command = [sys.executable, "-m", "model_foundry", "train", str(config), "--out", str(out),
               "--set", f"experiment.seed={seed}"]
    for setting in settings:
        command += ["--set", setting]
    start = time.perf_counter()
    with open(out.with_suffix(".log"), "w", encoding="utf-8") as log:
        subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT, check=True)
    step, loss = last_val_loss(out)
    return {"wall": time.perf_counter() - start, "step": step, "val": loss}


def mean_std(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.4f} ± {spread:.4f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", type=Path)
    parser.add_argument("--variant", type=parse_variant, action="append", required=True, metavar="NAME:K=V,...")
    parser.add_argument("--seeds", default="1337,1,2")
    parser.add_argument("--set", dest="common", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--keep", type=Path, metavar="DIR")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    results: dict[str, list[dict]] = {name: [] for name, _ in args.variant}
    with tempfile.TemporaryDirectory(prefix="ablate_") as tmp:
        root = args.keep.resolve() if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        for seed in seeds:
            for name, settings in args.variant:
                result = train(args.config.resolve(), args.common + settings, seed, root / f"{name}_s{seed}")
                results[name].append(result)
                print(f"{name:16s} seed {seed:5d}: val {result['val']:.4f} at step {result['step']}, "
                      f"{result['wall']:.1f} s", flush=True)
    print(f"\n{args.config}, seeds {args.seeds}: last eval's val loss and wall seconds, mean ± std")
    for name, runs in results.items():
        print(f"{name:16s} val {mean_std([r['val'] for r in runs])}   wall {mean_std([r['wall'] for r in runs])}")


if __name__ == "__main__":
    main()
