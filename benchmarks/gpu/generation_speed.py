"""Part 5 of benchmarks/gpu/check.sh: our `generate` against `transformers`' `generate`, same weights.

The run's GPT is exported with `foundry export --format hf` (`export_hf`, a GPT2LMHeadModel) and both
models decode greedily with their key/value cache, batch 1, the same prompt, the same number of new
tokens (no early stop: transformers gets min_new_tokens = max_new_tokens, ours no stop tokens),
at each batch size of `--batch-sizes` (every row the same prompt, so nothing is padded).
Prompt plus new tokens stay within the model's context (`block_size`): past it our `generate`
slides its window and recomputes it (a different algorithm), and GPT-2 has no positions past
n_positions. Timed runs alternate between the two after one warm-up each; prints the median
tokens/s of each, the ratio (ours / transformers, above 1: we are faster) and how many generated
tokens agree (fp32 should agree on all; bf16 may part after a near-tie).

    python benchmarks/gpu/generation_speed.py RUN_DIR [--new-tokens 240] [--prompt-tokens 16] [--reps 5]
        [--batch-sizes 1,8] [--device auto|cpu|cuda] [--dtypes fp32,bf16]

On the CPU it runs as well (`--device cpu`); tokens/s count every row's new tokens.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn, device: torch.device) -> tuple[float, list[int]]:
    synchronize(device)
    start = time.perf_counter()
    tokens = fn()
    synchronize(device)
    return time.perf_counter() - start, tokens


def compare(ours, theirs, ids: torch.Tensor, new_tokens: int, pad: int, dtype_name: str, reps: int,
            device: torch.device) -> dict:
    """Both models' greedy tokens/s on `ids` in one precision, alternating runs after one warm-up each."""
    from model_foundry.inference.generation import generate

    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype_name]
    ours.to(dtype)
    theirs.to(dtype)

    def run_ours() -> list[list[int]]:
        return generate(ours, ids, max_new_tokens=new_tokens, temperature=0.0, use_cache=True)

    def run_theirs() -> list[list[int]]:
        with torch.no_grad():
            out = theirs.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=new_tokens,
                                  min_new_tokens=new_tokens, do_sample=False, use_cache=True, pad_token_id=pad)
        return out[:, ids.shape[1]:].tolist()

    times = {"ours": [], "transformers": []}
    outputs = {}
    for rep in range(reps + 1):  # the first of each warms up and is not counted
        for label, fn in (("ours", run_ours), ("transformers", run_theirs)):
            seconds, tokens = timed(fn, device)
            outputs[label] = tokens
            if rep:
                times[label].append(seconds)
    agree = min(next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
                for a, b in zip(outputs["ours"], outputs["transformers"]))
    generated = new_tokens * ids.size(0)
    ours_rate = generated / statistics.median(times["ours"])
    theirs_rate = generated / statistics.median(times["transformers"])
    return {"ours_tokens_per_s": ours_rate, "transformers_tokens_per_s": theirs_rate, "ratio": ours_rate / theirs_rate,
            "new_tokens": new_tokens, "batch": ids.size(0), "agreeing_prefix": agree}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", type=Path)
    parser.add_argument("--checkpoint", default="last")
    parser.add_argument("--new-tokens", type=int, default=240)
    parser.add_argument("--prompt-tokens", type=int, default=16)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--batch-sizes", default="1,8")
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args()

    import transformers

    import model_foundry
    from model_foundry.inference.export import export_hf
    from model_foundry.inference.loading import load_tokenizer

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    ours = model_foundry.load_model(args.run, checkpoint=args.checkpoint)
    block = ours.config.block_size
    new_tokens = min(args.new_tokens, block - args.prompt_tokens + 1)
    if new_tokens != args.new_tokens:
        print(f"--new-tokens {args.new_tokens} does not fit the context of {block} after a {args.prompt_tokens}-token "
              f"prompt: generating {new_tokens}")
    tokenizer = load_tokenizer(args.run)
    prompt = tokenizer.encode("The people said that the number of words was long, and they had a way about them " * 4)
    prompt = prompt[:args.prompt_tokens]
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        export_hf(args.run, Path(tmp) / "hf", checkpoint=args.checkpoint)
        theirs = transformers.GPT2LMHeadModel.from_pretrained(Path(tmp) / "hf")
        print(f"exported {args.run.name} with export_hf and loaded it as {type(theirs).__name__} in "
              f"{time.perf_counter() - start:.1f} s")
    ours, theirs = ours.to(device).eval(), theirs.to(device).eval()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu, {torch.get_num_threads()} threads"
    print(f"{name}; torch {torch.__version__}, transformers {transformers.__version__}; GPT "
          f"{ours.config.n_layer}x{ours.config.n_head}x{ours.config.n_embd}, vocab {ours.config.vocab_size}, "
          f"context {block}; greedy, prompt {len(prompt)} tokens, {new_tokens} new tokens, KV cache both")
    pad = tokenizer.pad_id if tokenizer.pad_id is not None else 0
    results = {}
    for batch in map(int, args.batch_sizes.split(",")):
        ids = torch.tensor([prompt] * batch, device=device)
        for dtype_name in args.dtypes.split(","):
            result = compare(ours, theirs, ids, new_tokens, pad, dtype_name, args.reps, device)
            results[f"batch {batch}, {dtype_name}"] = result
            print(f"batch {batch}, {dtype_name}: ours {result['ours_tokens_per_s']:8.1f} tok/s | transformers "
                  f"{result['transformers_tokens_per_s']:8.1f} tok/s | ratio {result['ratio']:.2f} (target >= 1.5) | "
                  f"the first {result['agreeing_prefix']} of {new_tokens} tokens agree in every row")
    if args.json:
        Path(args.json).write_text(json.dumps({"device": name, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
