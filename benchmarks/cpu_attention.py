"""CPU attention in bf16 against float32, forward and backward: where `attend` switches precision.

Run by hand (not a test), from the repository root:

    python benchmarks/cpu_attention.py [--batch 8] [--heads 4] [--rounds 3]

For each head shape (time x head_dim) it times `F.scaled_dot_product_attention` (causal) on bf16
inputs, and on the same inputs cast to float32 and the result cast back (what
`model_foundry/models/backbones/attention.py` `attend` does below CPU_BF16_ATTENTION_MIN_ELEMENTS
elements per head), interleaved over rounds, and prints the medians and their ratio (above 1:
float32 is faster). Measured on the 2-core development machine (Xeon with AMX, torch 2.13, batch 8,
4 heads, `--rounds 2`), bf16 / float32: 64 x 32 3.05, 64 x 128 1.36, 128 x 64 1.94, 256 x 32 1.48,
256 x 48 1.07, 256 x 64 0.91, 256 x 128 0.60, 512 x 64 0.68.
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from model_foundry.models.backbones.attention import CPU_BF16_ATTENTION_MIN_ELEMENTS

SHAPES = [(64, 16), (64, 32), (64, 64), (64, 128), (128, 32), (128, 64), (256, 32), (256, 48), (256, 64),
          (256, 128), (512, 64)]


def seconds_per_call(step, calls: int = 5) -> float:
    step()
    start = time.perf_counter()
    for _ in range(calls):
        step()
    return (time.perf_counter() - start) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}, {args.heads} heads; "
          f"attend uses float32 below {CPU_BF16_ATTENTION_MIN_ELEMENTS} elements per head")
    print(f"{'time x dim':>12} {'bf16 ms':>9} {'fp32 ms':>9} {'bf16/fp32':>10}  attend")
    for length, dim in SHAPES:
        q, k, v = (torch.randn(args.batch, args.heads, length, dim, dtype=torch.bfloat16, requires_grad=True)
                   for _ in range(3))
        grad = torch.randn_like(q)

        def in_bf16():
            F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad)

        def in_float32():
            y = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True)
            y.to(torch.bfloat16).backward(grad)

        times = {"bf16": [], "fp32": []}
        for _ in range(args.rounds):
            times["bf16"].append(seconds_per_call(in_bf16))
            times["fp32"].append(seconds_per_call(in_float32))
        bf16, fp32 = (statistics.median(times[name]) * 1e3 for name in ("bf16", "fp32"))
        chosen = "fp32" if length * dim < CPU_BF16_ATTENTION_MIN_ELEMENTS else "bf16"
        print(f"{length:>6} x {dim:<4} {bf16:>9.2f} {fp32:>9.2f} {bf16 / fp32:>10.2f}  {chosen}")


if __name__ == "__main__":
    main()
