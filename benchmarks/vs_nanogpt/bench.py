"""nanoGPT's CPU shakespeare_char recipe: `foundry train` beside nanoGPT's own `train.py`, wall clock and val loss.

Run by hand (not a test), from the repository root, with a checkout of https://github.com/karpathy/nanoGPT:

    python benchmarks/vs_nanogpt/bench.py --nanogpt DIR [--steps 2000] [--rounds 1]
        [--foundry-variant NAME:STEPS:KEY=VALUE,KEY=VALUE ...]

Each `--foundry-variant` is one foundry run per round (default: one run of the recipe as it is, at
`--steps`, or `--foundry-steps` with the `--foundry-set` settings), so the recipe of choice can be
timed at fewer steps (how soon it reaches nanoGPT's loss) and at about nanoGPT's wall time in one run.

Without `--nanogpt`, or when DIR lacks train.py or data/shakespeare_char/prepare.py, it prints what
it needs and exits 0 (skipped). Otherwise:

1. it copies the checkout's code (not its .git, data or out* folders) to a temporary folder, puts
   ../shared/data/tinyshakespeare/input.txt into its data/shakespeare_char/ and runs prepare.py
   there (prepare.py downloads input.txt only when it is missing, so nothing touches the network,
   and the user's checkout is never written to);
2. each round runs, one after the other, in an order that alternates between rounds:
   - nanoGPT: `train.py config/train_shakespeare_char.py` with the CPU settings of nanoGPT's README
     (`--device=cpu --compile=False --eval_iters=20 --log_interval=1 --block_size=64 --batch_size=12
     --n_layer=4 --n_head=4 --n_embd=128 --max_iters=STEPS --lr_decay_iters=STEPS --dropout=0.0`),
     plus `--always_save_checkpoint=False --wandb_log=False --dtype=float32 --out_dir=TMP`; its val
     loss is the last "step N: train loss X, val loss Y" line (20 random val batches);
   - foundry: `python -m model_foundry train examples/shakespeare_char.yaml --set
     training.max_steps=STEPS --out TMP`; its val loss is the step-STEPS row of metrics/eval.csv
     (the yaml's eval_iters is 20: 20 val batches, like nanoGPT's), and results.json's val loss on
     the whole val split is shown beside it.
   Both evaluate every `--eval-interval` steps (default: the largest divisor of STEPS not above 250,
   the recipe's 250 for 2000 steps), so both have an eval at step STEPS.
3. it prints the median wall seconds and val losses over rounds, foundry's wall time as a fraction
   of nanoGPT's, and the speed target: foundry in at most half of nanoGPT's wall time at a val loss
   no worse than nanoGPT's (the 20-batch losses at step STEPS), met or NOT met.

Wall time is the whole process of each side (start-up, data loading, evals, checkpoints), measured
from outside. Both inherit this process's environment: set OMP_NUM_THREADS to pin the thread count.
"""
from __future__ import annotations

import argparse
import csv
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "examples" / "shakespeare_char.yaml"
SHAKESPEARE = REPO / ".." / "shared" / "data" / "tinyshakespeare" / "input.txt"
NEEDED = ("train.py", "data/shakespeare_char/prepare.py")
NANOGPT_CPU = ["--device=cpu", "--compile=False", "--eval_iters=20", "--log_interval=1", "--block_size=64",
               "--batch_size=12", "--n_layer=4", "--n_head=4", "--n_embd=128", "--dropout=0.0",
               "--always_save_checkpoint=False", "--wandb_log=False", "--dtype=float32"]
STEP_LINE = re.compile(r"^step (\d+): train loss ([0-9.]+), val loss ([0-9.]+)", re.MULTILINE)
TARGET_WALL_RATIO = 0.5
TARGET_MARGIN = 0.05  # nats below nanoGPT's loss within its wall time


def missing_parts(checkout: Path | None) -> list[str]:
    """What a usable nanoGPT checkout lacks (everything when none was given)."""
    if checkout is None:
        return list(NEEDED)
    return [part for part in NEEDED if not (checkout / part).is_file()]


def copy_checkout(checkout: Path, dest: Path) -> None:
    """nanoGPT's code without its .git, its datasets or its out* run folders; then shakespeare_char's prepare.py."""
    dest.mkdir(parents=True)
    for entry in checkout.iterdir():
        if entry.name in (".git", "data", "__pycache__") or entry.name.startswith("out"):
            continue
        if entry.is_dir():
            shutil.copytree(entry, dest / entry.name, ignore=shutil.ignore_patterns(".git", "__pycache__", "*.bin",
                                                                                     "*.pt"))
        elif entry.is_file():
            shutil.copy2(entry, dest / entry.name)
    (dest / "data" / "shakespeare_char").mkdir(parents=True)
    shutil.copy2(checkout / "data" / "shakespeare_char" / "prepare.py", dest / "data" / "shakespeare_char")


def prepare_data(nanogpt: Path, text: Path, python: str, env: dict[str, str], logs: Path) -> None:
    """input.txt into data/shakespeare_char/, then its prepare.py writes train.bin, val.bin and meta.pkl."""
    folder = nanogpt / "data" / "shakespeare_char"
    shutil.copyfile(text, folder / "input.txt")
    # prepare.py imports requests even though input.txt is there: a stand-in that refuses to download
    # keeps it offline, and working where requests is not installed
    stub = logs / "stub"
    stub.mkdir(exist_ok=True)
    (stub / "requests.py").write_text("def get(*args, **kwargs):\n"
                                      "    raise RuntimeError('vs_nanogpt: no downloads, input.txt is provided')\n")
    env = {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(stub), env.get("PYTHONPATH")]))}
    run_logged([python, "prepare.py"], folder, env, logs / "prepare.log", "nanoGPT's prepare.py")
    for name in ("train.bin", "val.bin", "meta.pkl"):
        if not (folder / name).is_file():
            sys.exit(f"nanoGPT's prepare.py did not write data/shakespeare_char/{name}; see {logs / 'prepare.log'}")


def run_logged(command: list[str], cwd: Path, env: dict[str, str], log: Path, what: str) -> float:
    """Run a command with its output in a log file; its wall seconds. Exits with the log's tail on failure."""
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as handle:
        code = subprocess.run(command, cwd=cwd, env=env, stdout=handle, stderr=subprocess.STDOUT).returncode
    wall = time.perf_counter() - started
    if code != 0:
        tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-25:])
        sys.exit(f"{what} failed (exit code {code}): {' '.join(command)}\n--- last lines of {log} ---\n{tail}")
    return wall


def run_nanogpt(nanogpt: Path, steps: int, eval_interval: int, python: str, env: dict[str, str],
                work: Path) -> dict:
    out_dir = work / "out"
    command = [python, "train.py", "config/train_shakespeare_char.py", *NANOGPT_CPU, f"--max_iters={steps}",
               f"--lr_decay_iters={steps}", f"--eval_interval={eval_interval}", f"--out_dir={out_dir}"]
    wall = run_logged(command, nanogpt, env, work / "nanogpt.log", "nanoGPT's train.py")
    evals = STEP_LINE.findall((work / "nanogpt.log").read_text(encoding="utf-8", errors="replace"))
    if not evals:
        sys.exit(f"No 'step N: train loss X, val loss Y' line in {work / 'nanogpt.log'}")
    step, _, val = evals[-1]
    if int(step) != steps:
        print(f"warning: nanoGPT's last eval is at step {step}, not {steps}")
    return {"wall": wall, "val": float(val), "val_step": int(step)}


def run_foundry(steps: int, eval_interval: int, text: Path, env: dict[str, str], work: Path,
                settings: list[str], name: str = "foundry") -> dict:
    out = work / name
    command = [sys.executable, "-m", "model_foundry", "train", str(RECIPE), "--set", f"training.max_steps={steps}",
               "--set", f"training.eval_interval={eval_interval}", "--set", f"data.train.path={text}",
               "--out", str(out)]
    for setting in settings:
        command += ["--set", setting]
    wall = run_logged(command, REPO, env, work / f"{name}.log", "foundry train")
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    with open(out / "metrics" / "eval.csv", newline="", encoding="utf-8") as handle:
        rows = [r for r in csv.DictReader(handle) if r.get("split") == "val" and r.get("loss")]
    at_end = [r for r in rows if int(float(r["step"])) == steps]
    row = at_end[-1] if at_end else (rows[-1] if rows else None)
    if row is None:
        sys.exit(f"No val loss in {out / 'metrics' / 'eval.csv'}")
    if not at_end:
        print(f"warning: foundry's last eval is at step {row['step']}, not {steps}")
    return {"wall": wall, "val": float(row["loss"]), "val_step": int(float(row["step"])),
            "val_whole": float(results["val"]["loss"]), "checkpoint": results.get("checkpoint"),
            "train_wall": float(results["run"]["wall_s"])}


def default_eval_interval(steps: int) -> int:
    """The largest divisor of steps not above the recipe's 250, so both sides evaluate at the last step."""
    return max(d for d in range(1, min(steps, 250) + 1) if steps % d == 0)


def median(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


class Variant(NamedTuple):
    """One foundry run per round: its name, steps and `--set` settings."""
    name: str
    steps: int
    settings: list[str]


def parse_variant(text: str) -> Variant:
    """`NAME:STEPS:KEY=VALUE,KEY=VALUE` (the settings may be empty)."""
    name, steps, settings = (text.split(":", 2) + ["", ""])[:3]
    if not name or not steps.isdigit() or int(steps) < 1:
        raise argparse.ArgumentTypeError(f"--foundry-variant {text!r}: expected NAME:STEPS:KEY=VALUE,KEY=VALUE")
    return Variant(name, int(steps), [item for item in settings.split(",") if item])


def print_table(nano: list[dict], ours: dict[str, list[dict]], variants: list[Variant], args: argparse.Namespace,
                eval_interval: int) -> None:
    import torch  # only for the versions line; neither run happens in this process

    threads = os.environ.get("OMP_NUM_THREADS", f"{torch.get_num_threads()} (torch default)")
    print(f"\nshakespeare_char, CPU, nanoGPT {args.steps} steps x {args.rounds} rounds (order alternating), eval "
          f"every {eval_interval} steps on 20 batches, OMP_NUM_THREADS={threads}, torch {torch.__version__}, "
          f"{os.cpu_count()} CPUs")
    n_wall, n_val = median(nano, "wall"), median(nano, "val")
    medians = {v.name: (median(ours[v.name], "wall"), median(ours[v.name], "val")) for v in variants}
    print(f"{'run':26s} {'steps':>6s} {'wall s':>8s} {'vs nanoGPT':>10s} {'val loss':>9s} {'whole val':>10s}")
    print(f"{'nanoGPT train.py':26s} {args.steps:6d} {n_wall:8.1f} {1.0:10.2f} {n_val:9.4f} {'-':>10s}")
    for variant in variants:
        o_wall, o_val = medians[variant.name]
        print(f"{variant.name:26s} {variant.steps:6d} {o_wall:8.1f} {o_wall / n_wall:10.2f} {o_val:9.4f} "
              f"{median(ours[variant.name], 'val_whole'):10.4f}")
    print("(medians over rounds; val loss: each side's eval at its last step, 20 batches each; whole val: "
          "foundry's results.json)")
    for variant in variants:
        runs = ours[variant.name]
        o_wall, o_val = medians[variant.name]
        print(f"{variant.name}: settings {variant.settings or 'the recipe as it is'}; rounds "
              + ", ".join(f"{r['wall']:.1f} s / {r['val']:.4f}" for r in runs))
        half = o_wall <= TARGET_WALL_RATIO * n_wall and o_val <= n_val
        full = o_wall <= n_wall and o_val <= n_val - TARGET_MARGIN
        print(f"  nanoGPT's loss in at most {TARGET_WALL_RATIO:.0%} of its wall time: {'met' if half else 'NOT met'}"
              f" | within its wall time at least {TARGET_MARGIN} lower: {'met' if full else 'NOT met'} "
              f"(wall x{o_wall / n_wall:.2f}, val {o_val - n_val:+.4f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nanogpt", type=Path, metavar="DIR", help="a checkout of karpathy/nanoGPT (read only)")
    parser.add_argument("--steps", type=int, default=2000, help="optimizer steps of each run (default 2000)")
    parser.add_argument("--rounds", type=int, default=1, help="rounds of both runs (default 1)")
    parser.add_argument("--eval-interval", type=int, help="steps between evals on both sides "
                        "(default: the largest divisor of --steps not above 250)")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter for nanoGPT's scripts (default this one; it needs numpy and torch)")
    parser.add_argument("--data", type=Path, default=SHAKESPEARE, help="tinyshakespeare's input.txt")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the logs and runs in DIR (default: deleted)")
    parser.add_argument("--foundry-set", action="append", default=[], metavar="KEY=VALUE",
                        help="a setting added to foundry's run (repeatable), e.g. model.recipe=modern")
    parser.add_argument("--foundry-steps", type=int, metavar="N",
                        help="foundry's steps (default --steps): fewer, to time how soon it reaches nanoGPT's loss")
    parser.add_argument("--foundry-variant", action="append", default=[], type=parse_variant,
                        metavar="NAME:STEPS:KEY=VALUE,...", help="a named foundry run per round (repeatable); "
                        "replaces --foundry-steps and --foundry-set")
    args = parser.parse_args()
    missing = missing_parts(args.nanogpt)
    if missing:
        where = "no --nanogpt DIR given" if args.nanogpt is None else f"{args.nanogpt} lacks {', '.join(missing)}"
        print(f"skipped: this benchmark needs a checkout of https://github.com/karpathy/nanoGPT "
              f"(--nanogpt DIR with {' and '.join(NEEDED)}); {where}.")
        return
    if not args.data.is_file():
        print(f"skipped: {args.data} (tinyshakespeare's input.txt) not found; give it with --data.")
        return
    if args.steps < 1 or args.rounds < 1:
        parser.error("--steps and --rounds must be at least 1")
    eval_interval = args.eval_interval or default_eval_interval(args.steps)
    if args.steps % eval_interval:
        parser.error(f"--eval-interval {eval_interval} must divide --steps {args.steps}, "
                     "so that both sides evaluate at the last step")
    variants = args.foundry_variant or [Variant("foundry train", args.foundry_steps or args.steps, args.foundry_set)]
    env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
    env.pop("RANK", None)  # nanoGPT would take a leftover RANK for a DDP launch
    with tempfile.TemporaryDirectory(prefix="vs_nanogpt_") as tmp:
        root = args.keep.resolve() if args.keep else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        nanogpt = root / "nanoGPT"
        if nanogpt.exists():
            shutil.rmtree(nanogpt)
        copy_checkout(args.nanogpt.resolve(), nanogpt)
        prepare_data(nanogpt, args.data.resolve(), args.python, env, root)
        nano: list[dict] = []
        ours: dict[str, list[dict]] = {variant.name: [] for variant in variants}
        for round_index in range(args.rounds):
            work = root / f"round_{round_index}"
            if work.exists():
                shutil.rmtree(work)
            work.mkdir()
            sides = [None, *variants]  # None: nanoGPT
            for side in sides if round_index % 2 == 0 else sides[::-1]:
                if side is None:
                    nano.append(run_nanogpt(nanogpt, args.steps, eval_interval, args.python, env, work))
                    name, result = "nanoGPT", nano[-1]
                else:
                    interval = eval_interval if side.steps == args.steps else default_eval_interval(side.steps)
                    ours[side.name].append(run_foundry(side.steps, interval, args.data.resolve(), env, work,
                                                       side.settings, name=f"variant_{sides.index(side)}"))
                    name, result = side.name, ours[side.name][-1]
                print(f"round {round_index + 1}/{args.rounds}: {name:26s} {result['wall']:7.1f} s, "
                      f"val loss {result['val']:.4f} at step {result['val_step']}", flush=True)
        print_table(nano, ours, variants, args, eval_interval)


if __name__ == "__main__":
    main()
