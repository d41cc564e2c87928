"""Training throughput of one process against `--nproc N` workers on the same config, interleaved.

Run by hand from the repository root (not a test):

    python benchmarks/processes/bench.py [--nproc 2] [--steps 200] [--rounds 3] [--arch gpt]

Each round trains the same config twice, one process (`foundry train CONFIG`, all the cores) and N
local workers (`foundry train CONFIG --nproc N`, cores / N threads each, DDP), one after the other so
machine noise hits both alike. The model is nanoGPT's shakespeare_char shape (4 x 4 x 128, context
64) with a global batch of 12 x 2 accumulation steps, so N = 2 splits every step in two. Prints, per
setting, the median over rounds of the median tokens/s of its log rows (the first row, with warm-up
and process start, left out), the ratio to one process, and the final val loss of the last round
(the two must agree: the same config trains the same model on 1 or N processes).
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

DATA = Path("../shared/data/tinyshakespeare/input.txt")


def config_for(text: Path, steps: int, arch: str) -> dict:
    return {
        "experiment": {"name": "processes_bench", "kind": "pretraining", "seed": 1337},
        "tokenizer": {"type": "char"},
        "data": {"train": {"path": str(text.resolve())}, "val_fraction": 0.1},
        "model": {"architecture": arch, "n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "dropout": 0.0},
        "training": {"max_steps": steps, "batch_size": 12, "gradient_accumulation_steps": 2, "learning_rate": 1e-3,
                     "warmup_steps": 20, "eval_interval": steps, "eval_iters": 10, "log_interval": max(1, steps // 10),
                     "precision": "fp32"},
    }


def stand_in_text(directory: Path) -> Path:
    """A few hundred kilobytes of text when the shared data is absent (speed does not depend on it)."""
    path = directory / "stand_in.txt"
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jumbo fish".split()
    path.write_text("\n".join(" ".join(words[(i * 7 + j) % len(words)] for j in range(12)) for i in range(20000)))
    return path


def train_once(config_path: Path, out: Path, nproc: int) -> tuple[float, float]:
    """(median tokens/s of the log rows after the first, final val loss) of one `foundry train`."""
    command = [sys.executable, "-m", "model_foundry", "train", str(config_path), "--out", str(out)]
    env = dict(os.environ)
    if nproc > 1:
        command += ["--nproc", str(nproc)]
        env.pop("OMP_NUM_THREADS", None)  # the launcher gives each worker cores / N threads
    subprocess.run(command, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(out / "metrics" / "train.csv", newline="") as handle:
        rates = [float(row["tokens_per_sec"]) for row in csv.DictReader(handle)]
    results = json.loads((out / "results.json").read_text())
    return statistics.median(rates[1:] or rates), results["val"]["loss"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--arch", default="gpt")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        text = DATA if DATA.is_file() else stand_in_text(work)
        config_path = work / "config.yaml"
        config_path.write_text(yaml.safe_dump(config_for(text, args.steps, args.arch)))
        rates: dict[int, list[float]] = {1: [], args.nproc: []}
        losses: dict[int, float] = {}
        for round_index in range(args.rounds):
            for nproc in rates:
                rate, losses[nproc] = train_once(config_path, work / f"round{round_index}_nproc{nproc}", nproc)
                rates[nproc].append(rate)
    one = statistics.median(rates[1])
    print(f"{args.arch} 4 x 4 x 128, context 64, global batch 12 x 2, {args.steps} steps x {args.rounds} rounds, "
          f"{os.cpu_count()} cores, fp32")
    print(f"{'setting':<22}{'tokens/s':>10}{'vs 1 process':>14}{'final val loss':>16}")
    for nproc, values in rates.items():
        label = "1 process" if nproc == 1 else f"--nproc {nproc} (DDP)"
        print(f"{label:<22}{statistics.median(values):>10,.0f}{statistics.median(values) / one:>14.2f}"
              f"{losses[nproc]:>16.6f}")


if __name__ == "__main__":
    main()
