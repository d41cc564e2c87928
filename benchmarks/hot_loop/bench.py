"""Training throughput of `foundry train` beside plain nanoGPT-style loops on the same GPT, one process.

Run by hand (not a test), from the repository root:

    python benchmarks/hot_loop/bench.py [--steps 300] [--rounds 3] [--device auto] [--precision auto]

The shape is nanoGPT's shakespeare_char recipe (4 layers, 4 heads, 128 wide, context 64, batch 12,
no bias, no dropout). Each round runs, one after the other so machine noise hits all alike:

- `foundry train`: the package's trainer on the tinyshakespeare characters (or a stand-in text
  when ../shared/data is absent), its own tokens/s and MFU from metrics/train.csv;
- a plain loop as nanoGPT writes it (forward, backward, clip, AdamW; one `loss.item()` per log
  interval), on random batches of the same shape and vocabulary;
- the same plain loop reading `float(loss)` after every step, as the trainer did before its hot
  loop lost its syncs: the gap between the two plain loops is what a sync per step costs here.

Prints, per loop, the median over rounds of the median tokens/s of its log windows (the first
window, with warm-up, left out), its ratio to the plain loop, and MFU where the device's peak is
known (GPUs in model_foundry/training/flops.py; empty on the CPU).
"""
from __future__ import annotations

import argparse
import csv
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

import model_foundry
from model_foundry.models import create_model
from model_foundry.training.flops import TrainingFlops, model_flops_utilisation, peak_flops
from model_foundry.training.precision import autocast, resolve_device, resolve_precision

SHAPE = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 64, "bias": False, "dropout": 0.0, "activation": "gelu"}
BATCH = 12
SHAKESPEARE = Path("../shared/data/tinyshakespeare/input.txt")
STAND_IN = "First Citizen: Before we proceed any further, hear me speak. All: Speak, speak.\n" * 4000


def foundry_run(data: Path, out: Path, steps: int, device: str, precision: str) -> tuple[list[float], int]:
    """Train with `model_foundry.train`; (tokens/s of each log window after the first, model vocabulary)."""
    config = {"experiment": {"name": "bench", "kind": "pretraining", "seed": 1337},
              "tokenizer": {"type": "char", "vocab_size": 100},
              "data": {"train": {"path": str(data)}, "val_fraction": 0.1},
              "model": {"architecture": "gpt", **SHAPE}, "task": {"type": "causal_lm"},
              "training": {"max_steps": steps, "batch_size": BATCH, "learning_rate": 1e-3, "beta2": 0.99,
                           "eval_interval": steps, "eval_iters": 1, "log_interval": max(1, steps // 10),
                           "device": device, "precision": precision}}
    model_foundry.train(config, out=out)
    with open(out / "metrics" / "train.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    vocab = json.loads((out / "checkpoints" / "last" / "model_config.json").read_text())["config"]["vocab_size"]
    return [float(r["tokens_per_sec"]) for r in rows[1:]], vocab


def plain_run(vocab: int, steps: int, device: torch.device, precision: str, sync_every_step: bool) -> list[float]:
    """nanoGPT's loop on random batches; tokens/s of each log window after the first."""
    torch.manual_seed(0)
    model = create_model("gpt", vocab_size=vocab, **SHAPE).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.99), weight_decay=0.1,
                                  fused=device.type in ("cuda", "cpu"))
    tokens = torch.randint(vocab, (200_000,))
    log_interval, rates = max(1, steps // 10), []
    window_start = time.perf_counter()
    for step in range(1, steps + 1):
        starts = torch.randint(len(tokens) - SHAPE["block_size"] - 1, (BATCH,))
        x, y = (torch.stack([tokens[s + o:s + o + SHAPE["block_size"]] for s in starts]) for o in (0, 1))
        if device.type == "cuda":
            x, y = x.pin_memory(), y.pin_memory()
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        with autocast(device, precision):
            loss = model(input_ids=x, labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if sync_every_step:
            float(loss.detach())
        if step % log_interval == 0:
            loss.item()
            now = time.perf_counter()
            rates.append(log_interval * BATCH * SHAPE["block_size"] / (now - window_start))
            window_start = now
    return rates[1:]


def median_of_medians(runs: list[list[float]]) -> float:
    return statistics.median(statistics.median(rates) for rates in runs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="optimizer steps per run (default 300)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds of all loops (default 3)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    parser.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"])
    parser.add_argument("--data", type=Path, default=SHAKESPEARE, help="training text (default tinyshakespeare)")
    args = parser.parse_args()
    if args.steps < 20:
        parser.error("--steps must be at least 20: each run needs two log windows after the first")
    device = resolve_device(args.device)
    precision = resolve_precision(args.precision, device)
    runs: dict[str, list[list[float]]] = {"foundry train": [], "plain loop, 1 sync per log": [],
                                          "plain loop, sync every step": []}
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data if args.data.is_file() else Path(tmp) / "stand_in.txt"
        if not args.data.is_file():
            print(f"{args.data} not found: training foundry on a stand-in text (speed does not depend on it).")
            data.write_text(STAND_IN, encoding="utf-8")
        for round_index in range(args.rounds):
            rates, vocab = foundry_run(data, Path(tmp) / f"run_{round_index}", args.steps, args.device, precision)
            runs["foundry train"].append(rates)
            runs["plain loop, 1 sync per log"].append(plain_run(vocab, args.steps, device, precision, False))
            runs["plain loop, sync every step"].append(plain_run(vocab, args.steps, device, precision, True))
    print_table(runs, device, precision, args, mfu_of(vocab, device, precision))


def mfu_of(vocab: int, device: torch.device, precision: str) -> Callable[[float], float | None]:
    """tokens/s -> MFU of this GPT on this device (None where the peak is unknown)."""
    per_token = TrainingFlops.of(create_model("gpt", vocab_size=vocab, **SHAPE)).per_token(SHAPE["block_size"])
    peak = peak_flops(device, precision)
    return lambda rate: model_flops_utilisation(per_token * rate, peak)


def print_table(runs: dict[str, list[list[float]]], device: torch.device, precision: str,
                args: argparse.Namespace, mfu: Callable[[float], float | None]) -> None:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{torch.get_num_threads()} threads"
    print(f"\n{device.type} ({name}), {precision}, GPT {SHAPE['n_layer']}x{SHAPE['n_head']}x{SHAPE['n_embd']}, "
          f"context {SHAPE['block_size']}, batch {BATCH}, {args.steps} steps x {args.rounds} rounds, torch "
          f"{torch.__version__}")
    plain = median_of_medians(runs["plain loop, 1 sync per log"])
    print(f"{'loop':30s} {'tokens/s':>10s} {'vs plain':>9s} {'mfu':>7s}")
    for loop, results in runs.items():
        rate = median_of_medians(results)
        utilisation = mfu(rate)
        shown = f"{utilisation:.1%}" if utilisation is not None else "-"
        print(f"{loop:30s} {rate:10,.0f} {rate / plain:9.2f} {shown:>7s}")


if __name__ == "__main__":
    main()
