"""Training throughput of the benchmark GPT under each `torch.compile` mode, in a plain loop on one GPU.

Run by hand on a CUDA machine (not a test), from the repository root:

    python benchmarks/gpu/compile_modes.py [--steps 200] [--modes eager,default,reduce-overhead]

The benchmark GPT (6 layers, 6 heads, 384 wide, context 256, batch 16, vocabulary 8192, bf16
autocast, fused AdamW, clipping at 1.0) trains on random batches already on the device. For each
mode it prints the seconds until the first step ends (compilation included), tokens/s over the
steps after a warm-up of 20, and the ratio to eager. It answers whether a mode that removes kernel
launches (CUDA graphs: `reduce-overhead`) pays where the step is launch-bound.
"""
from __future__ import annotations

import argparse
import time

import torch

from model_foundry.models import create_model

SHAPE = {"n_layer": 6, "n_head": 6, "n_embd": 384, "block_size": 256, "dropout": 0.0}
BATCH, VOCAB, WARMUP = 16, 8192, 20


def tokens_per_second(mode: str, steps: int) -> tuple[float, float]:
    """(seconds to the end of the first step, tokens/s after the warm-up) for one compile mode."""
    torch.manual_seed(0)
    device = torch.device("cuda")
    model = create_model("gpt", vocab_size=VOCAB, **SHAPE).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, fused=True)
    forward = model if mode == "eager" else torch.compile(model, mode=None if mode == "default" else mode)
    batches = [torch.randint(VOCAB, (BATCH, SHAPE["block_size"] + 1), device=device) for _ in range(8)]

    def step(index: int) -> torch.Tensor:
        if mode == "reduce-overhead":
            torch.compiler.cudagraph_mark_step_begin()
        rows = batches[index % len(batches)]
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = forward(input_ids=rows[:, :-1], labels=rows[:, 1:]).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss.detach()

    start = time.perf_counter()
    step(0)
    torch.cuda.synchronize()
    first = time.perf_counter() - start
    for index in range(1, WARMUP):
        step(index)
    torch.cuda.synchronize()
    start = time.perf_counter()
    for index in range(steps):
        step(index)
    torch.cuda.synchronize()
    return first, steps * BATCH * SHAPE["block_size"] / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--modes", default="eager,default,reduce-overhead")
    args = parser.parse_args()
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, GPT 6 x 384, context 256, batch 16, bf16")
    print(f"{'mode':<28} {'first step s':>12} {'tokens/s':>12} {'vs eager':>9}")
    eager = None
    for mode in args.modes.split(","):
        first, rate = tokens_per_second(mode, args.steps)
        eager = eager or rate
        print(f"{mode:<28} {first:>12.1f} {rate:>12,.0f} {rate / eager:>9.2f}", flush=True)


if __name__ == "__main__":
    main()
