"""The CPU paths chosen by measurement, each timed against what it replaces, interleaved over rounds.

Run by hand (not a test), from the repository root:

    python benchmarks/cpu_paths.py [attention|decoding|cross_entropy|both] [--rounds 3]

(`both`: attention and cross_entropy, the training paths.)

**attention**: for each head shape (time x head_dim; batch 8, 4 heads, causal) it times
`F.scaled_dot_product_attention`, forward and backward, on bf16 inputs, and on the same inputs cast
to float32 and back (what `model_foundry/models/backbones/attention.py` `attend` does below
CPU_BF16_ATTENTION_MIN_ELEMENTS elements per head), and prints the ratio (above 1: float32 is
faster). On the 2-core development machine (Xeon with AMX, torch 2.13, `--rounds 2`), bf16 /
float32: 64 x 32 3.05, 64 x 128 1.36, 128 x 64 1.94, 256 x 32 1.48, 256 x 48 1.07, 256 x 64 0.91,
256 x 128 0.60, 512 x 64 0.68.

**decoding**: one query position against a cache of keys and values (a greedy decoding step; batch 1
and 8, 6 heads of 64, no gradient), bf16 against float32 as a bf16 model decodes on the CPU (its cache
kept in float32, the query cast, the output cast back; `computes_in_float32` in attention.py). On the AMD EPYC (AVX-512 bf16, no AMX, 2 threads, idle, 2026-12-08, `--rounds 7`),
bf16 / float32 at batch 1: 16 cached positions 1.17, 64 2.34, 136 3.52, 256 3.79; at batch 8: 2.12, 3.85,
4.14, 4.84.

**cross_entropy**: the summed cross-entropy of bf16 logits (tokens x vocabulary), forward and
backward, with `F.cross_entropy` on their float32 copy (the old path) and with
`model_foundry/models/cross_entropy.py`'s blockwise one, and the largest gradient difference. On the
same machine, 4,096 x 8,192: 318 against 142 ms on one thread, 200 against 91 ms on two.
"""
from __future__ import annotations

import argparse
import itertools
import statistics
import time

import torch
import torch.nn.functional as F

from model_foundry.models.backbones.attention import CPU_BF16_ATTENTION_MIN_ELEMENTS
from model_foundry.models.cross_entropy import summed_cross_entropy

HEAD_SHAPES = [(64, 16), (64, 32), (64, 64), (64, 128), (128, 32), (128, 64), (256, 32), (256, 48), (256, 64),
               (256, 128), (512, 64)]
LOGIT_SHAPES = [(768, 70), (4096, 8192), (2048, 32768)]


def seconds_per_call(step, calls: int = 5) -> float:
    step()
    start = time.perf_counter()
    for _ in range(calls):
        step()
    return (time.perf_counter() - start) / calls


def interleaved_medians(steps: dict, rounds: int) -> dict[str, float]:
    """Median milliseconds of each step over `rounds`, the steps alternating within a round."""
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            times[name].append(seconds_per_call(step))
    return {name: statistics.median(values) * 1e3 for name, values in times.items()}


def attention(rounds: int) -> None:
    print(f"attention, batch 8, 4 heads, causal; attend uses float32 below {CPU_BF16_ATTENTION_MIN_ELEMENTS} "
          "elements per head")
    print(f"{'time x dim':>12} {'bf16 ms':>9} {'fp32 ms':>9} {'bf16/fp32':>10}  attend")
    for length, dim in HEAD_SHAPES:
        q, k, v = (torch.randn(8, 4, length, dim, dtype=torch.bfloat16, requires_grad=True) for _ in range(3))
        grad = torch.randn_like(q)
        ms = interleaved_medians({
            "bf16": lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad),
            "fp32": lambda: F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
            .to(torch.bfloat16).backward(grad)}, rounds)
        chosen = "fp32" if length * dim < CPU_BF16_ATTENTION_MIN_ELEMENTS else "bf16"
        print(f"{length:>6} x {dim:<4} {ms['bf16']:>9.2f} {ms['fp32']:>9.2f} {ms['bf16'] / ms['fp32']:>10.2f}  {chosen}")


def decoding(rounds: int) -> None:
    print("decoding: one query against a cache, 6 heads of 64, no gradient; attend uses float32")
    print(f"{'batch x cached':>15} {'bf16 ms':>9} {'fp32 ms':>9} {'bf16/fp32':>10}")
    for batch, cached in itertools.product((1, 8), (16, 64, 136, 256)):
        q = torch.randn(batch, 6, 1, 64, dtype=torch.bfloat16)
        k, v = (torch.randn(batch, 6, cached, 64, dtype=torch.bfloat16) for _ in range(2))
        k32, v32 = k.float(), v.float()  # the cache of a bf16 model on the CPU is kept in float32
        with torch.no_grad():
            ms = interleaved_medians({
                "bf16": lambda: F.scaled_dot_product_attention(q, k, v),
                "fp32": lambda: F.scaled_dot_product_attention(q.float(), k32, v32).to(torch.bfloat16)}, rounds)
        print(f"{batch:>6} x {cached:<6} {ms['bf16']:>9.3f} {ms['fp32']:>9.3f} {ms['bf16'] / ms['fp32']:>10.2f}")


def cross_entropy(rounds: int) -> None:
    print("summed cross-entropy of bf16 logits, forward and backward")
    print(f"{'tokens x vocab':>16} {'F.cross_entropy ms':>19} {'blockwise ms':>13} {'ratio':>6} {'max grad diff':>14}")
    for tokens, vocab in LOGIT_SHAPES:
        logits = torch.randn(tokens, vocab).bfloat16()
        labels = torch.randint(vocab, (tokens,))
        labels[::7] = -100
        grads = {}

        def run(name: str, loss_of) -> None:
            leaf = logits.clone().requires_grad_()
            loss_of(leaf).backward()
            grads[name] = leaf.grad

        steps = {"torch": lambda: run("torch", lambda x: F.cross_entropy(x.float(), labels, ignore_index=-100,
                                                                         reduction="sum")),
                 "blockwise": lambda: run("blockwise", lambda x: summed_cross_entropy(x, labels))}
        ms = interleaved_medians(steps, rounds)
        difference = (grads["torch"].float() - grads["blockwise"].float()).abs().max().item()
        print(f"{tokens:>7} x {vocab:<6} {ms['torch']:>19.1f} {ms['blockwise']:>13.1f} "
              f"{ms['torch'] / ms['blockwise']:>6.2f} {difference:>14.1e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("which", nargs="?", default="both", choices=["attention", "decoding", "cross_entropy", "both"])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.which in ("attention", "both"):
        attention(args.rounds)
    if args.which == "decoding":
        decoding(args.rounds)
    if args.which in ("cross_entropy", "both"):
        cross_entropy(args.rounds)


if __name__ == "__main__":
    main()
