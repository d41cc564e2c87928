"""Small helpers of benchmarks/gpu/check.sh (one file, several subcommands).

    python benchmarks/gpu/helpers.py facts [--probe N] [--reps R]     torch, the device, a bf16 matmul probe
    python benchmarks/gpu/helpers.py text OUT.txt --mb 4              a stand-in English-ish corpus
    python benchmarks/gpu/helpers.py summary NAME=RUN_DIR ... [--csv F] [--json F]
                                                                      median tokens/s and MFU of runs
"""
from __future__ import annotations

import argparse
import csv
import json
import random
import statistics
import sys
import time
from pathlib import Path


# ---- facts ----------------------------------------------------------------------------------------------
def facts(args: argparse.Namespace) -> int:
    import torch

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, cuda runtime {torch.version.cuda}, "
          f"cuda available {torch.cuda.is_available()}, {torch.get_num_threads()} CPU threads")
    try:
        import transformers
        print(f"transformers {transformers.__version__}")
    except ImportError as error:
        print(f"transformers not importable: {error}")
    import model_foundry
    from model_foundry.training.flops import gpu_peak_flops
    print(f"model_foundry {model_foundry.__version__} from {Path(model_foundry.__file__).parent}")
    if not torch.cuda.is_available():
        print("no CUDA device: the GPU facts are skipped; the matmul probe runs on the CPU")
        device = torch.device("cpu")
    else:
        device = torch.device("cuda")
        name = torch.cuda.get_device_name(device)
        props = torch.cuda.get_device_properties(device)
        print(f"device: {name}, capability {props.major}.{props.minor}, {props.total_memory / 2**30:.1f} GiB, "
              f"{props.multi_processor_count} SMs")
        print(f"flops.py table peak for '{name}': bf16 {gpu_peak_flops(name, 'bf16')}, "
              f"tf32 {gpu_peak_flops(name, 'tf32')}, fp32 {gpu_peak_flops(name, 'fp32')}")
        try:
            version = torch.cuda.nccl.version()
            version = ".".join(map(str, version)) if isinstance(version, tuple) else str(version)
        except Exception as error:  # noqa: BLE001 - a fact, not a requirement
            version = f"unknown ({error})"
        print(f"nccl available: {torch.distributed.is_nccl_available()}, nccl version {version}")
    n = args.probe
    a = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    b = torch.randn(n, n, device=device, dtype=torch.bfloat16)
    for _ in range(2):
        a @ b
    synchronize(device)
    start = time.perf_counter()
    for _ in range(args.reps):
        a @ b
    synchronize(device)
    seconds = (time.perf_counter() - start) / args.reps
    measured = 2 * n ** 3 / seconds
    print(f"bf16 matmul {n}^3: {seconds * 1000:.2f} ms each, {measured / 1e12:.1f} TFLOP/s measured")
    if device.type == "cuda":
        peak = gpu_peak_flops(torch.cuda.get_device_name(device), "bf16")
        if peak:
            print(f"  = {measured / peak:.1%} of the table's dense bf16 peak ({peak / 1e12:.0f} TFLOP/s)")
    return 0


def synchronize(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---- stand-in text ----------------------------------------------------------------------------------
ONSETS = ["", "b", "c", "d", "f", "g", "h", "j", "k", "l", "m", "n", "p", "r", "s", "t", "v", "w", "y", "z",
          "bl", "br", "ch", "cl", "cr", "dr", "fl", "fr", "gl", "gr", "pl", "pr", "sc", "sh", "sl", "sm", "sn",
          "sp", "st", "str", "th", "tr", "wh"]
VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ee", "ie", "oa", "oo", "ou", "y"]
CODAS = ["", "", "", "n", "r", "s", "t", "l", "m", "nd", "ng", "nt", "rt", "st", "ck", "ll", "ss", "th"]
COMMON = ("the of and to a in is it you that he was for on are with as I his they be at one have this from "
          "or had by not word but what some we can out other were all there when up use your how said an "
          "each she which do their time if will way about many then them write would like so these her long "
          "make thing see him two has look more day could go come did number sound no most people my over").split()


def text(args: argparse.Namespace) -> int:
    """Zipf-distributed made-up words (plus common English ones) in sentences and paragraphs: enough
    distinct words for a byte-level BPE to fill an 8192-token vocabulary; speed does not depend on it."""
    rng = random.Random(args.seed)
    words = list(COMMON)
    seen = set(words)
    while len(words) < args.words:
        word = "".join(rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)
                       for _ in range(rng.choice((1, 1, 1, 2, 2, 3))))
        if word and word not in seen:
            seen.add(word)
            words.append(word)
    cumulative, total = [], 0.0
    for rank in range(len(words)):
        total += 1.0 / (rank + 1) ** 1.05
        cumulative.append(total)
    target = int(args.mb * 1_000_000)
    out, size = [], 0
    while size < target:
        sentences = []
        for _ in range(rng.randint(2, 7)):
            sentence = rng.choices(words, cum_weights=cumulative, k=rng.randint(4, 18))
            sentence[0] = sentence[0].capitalize()
            punctuation = rng.choice((".", ".", ".", "?", "!"))
            if len(sentence) > 8 and rng.random() < 0.5:
                sentence[len(sentence) // 2] += ","
            sentences.append(" ".join(sentence) + punctuation)
        paragraph = " ".join(sentences) + "\n\n"
        out.append(paragraph)
        size += len(paragraph)
    Path(args.out).write_text("".join(out), encoding="utf-8")
    print(f"wrote {args.out}: {size / 1e6:.1f} MB, {len(words)} distinct words")
    return 0


# ---- summaries of train.csv -----------------------------------------------------------------------------
def train_rows(run_dir: Path) -> list[dict]:
    with open(run_dir / "metrics" / "train.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def summary(args: argparse.Namespace) -> int:
    """Median tokens/s and MFU over the log rows of each run (the first row, with warm-up and
    compilation, left out), and the ratio of every run to the first."""
    results, table = {}, []
    for item in args.runs:
        name, _, path = item.partition("=")
        run_dir = Path(path)
        try:
            rows = train_rows(run_dir)
        except OSError as error:
            print(f"{name}: no metrics ({error})")
            continue
        kept = rows[1:] if len(rows) > 1 else rows
        rates = [float(r["tokens_per_sec"]) for r in kept]
        mfus = [float(r["mfu"]) for r in kept if r.get("mfu") not in (None, "")]
        first_window_s = float(rows[0]["elapsed_s"]) if rows else float("nan")
        info = {"rows": len(rows), "tokens_per_sec": statistics.median(rates) if rates else None,
                "mfu": statistics.median(mfus) if mfus else None, "first_row_elapsed_s": first_window_s,
                "last_loss": float(rows[-1]["loss"]) if rows else None,
                "elapsed_s": float(rows[-1]["elapsed_s"]) if rows else None}
        results_json = run_dir / "results.json"
        if results_json.is_file():
            info["results"] = json.loads(results_json.read_text())
        run_json = run_dir / "run.json"
        if run_json.is_file():
            info["hardware"] = json.loads(run_json.read_text()).get("hardware")
        results[name] = info
        for row in rows:
            table.append({"run": name, **row})
    if not results:
        print("no runs to summarise")
        return 1
    base = next(iter(results.values()))["tokens_per_sec"]
    print(f"{'run':28s} {'rows':>4s} {'tokens/s (median)':>18s} {'mfu (median)':>13s} {'vs first':>9s} "
          f"{'1st row s':>9s} {'last loss':>9s}")
    for name, info in results.items():
        rate, mfu = info["tokens_per_sec"], info["mfu"]
        ratio = f"{rate / base:.2f}" if rate and base else "-"
        print(f"{name:28s} {info['rows']:4d} {rate or 0:18,.0f} {f'{mfu:.1%}' if mfu is not None else '-':>13s} "
              f"{ratio:>9s} {info['first_row_elapsed_s']:9.1f} {info['last_loss']:9.4f}")
        if info.get("hardware"):
            print(f"    hardware: {info['hardware']}")
    first = next(iter(results))
    for name, info in list(results.items())[1:]:
        if info["tokens_per_sec"] and base:
            mfu, mfu_base = info["mfu"], results[first]["mfu"]
            print(f"{name} / {first}: tokens/s x{info['tokens_per_sec'] / base:.3f}"
                  + (f", mfu {mfu:.1%} vs {mfu_base:.1%}" if mfu is not None and mfu_base is not None else ""))
    if args.csv:
        columns = list(dict.fromkeys(key for row in table for key in row))
        with open(args.csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(table)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, default=str))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("facts")
    p.add_argument("--probe", type=int, default=8192)
    p.add_argument("--reps", type=int, default=10)
    p = commands.add_parser("text")
    p.add_argument("out")
    p.add_argument("--mb", type=float, default=4.0)
    p.add_argument("--words", type=int, default=30000)
    p.add_argument("--seed", type=int, default=0)
    p = commands.add_parser("summary")
    p.add_argument("runs", nargs="+", help="NAME=RUN_DIR")
    p.add_argument("--csv")
    p.add_argument("--json")
    args = parser.parse_args()
    return {"facts": facts, "text": text, "summary": summary}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
