"""Does pretraining help the quickstart's sentiment classifier with few labels? The experiments behind
docs/measurements.md, "What pretraining buys at small budgets". Run by hand from the repository root, after
`foundry quickstart` has filled its data cache (~/.cache/model_foundry/quickstart):

    python benchmarks/quickstart_transfer/few_labels.py tokenizer
    python benchmarks/quickstart_transfer/few_labels.py pretrain OUT [--corpus quickstart|reviews|review-rows]
        [--steps 400] [--seed 1337] [--mask 0.15] [--lr 1e-3] [--batch-size N]
        [--objective masked_lm|replaced_token_detection|span_contrastive|span_bag_of_words] [--lm-weight W]
        [--temperature T] [--init-embeddings random|ppmi] [--set SECTION.KEY=VALUE]
    python benchmarks/quickstart_transfer/few_labels.py finetune RUN OUT [--labels 200] [--pooler mean]
        [--scratch] [--freeze-embeddings] [--probe] [--epochs E] [--lr LR] [--set SECTION.KEY=VALUE]

Every run uses the quickstart's model and finetuning settings (model_foundry/quickstart/workflow.py)
unless a flag changes one; `finetune` prints the test accuracy for seeds 1337, 1, 2 and their mean.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch
import yaml

from model_foundry.quickstart.data import DEFAULT_CACHE, ensure_plays, ensure_reviews
from model_foundry.quickstart.workflow import FINETUNING, MODEL, TRAINING, pretraining_corpus
from model_foundry.tokenizer import FoundryTokenizer, train_tokenizer
from model_foundry.training.run import train

WORK = Path("experiments") / "quickstart_transfer"
TOKENIZER = WORK / "tokenizer"
SEEDS = (1337, 1, 2)


def corpus_files(kind: str) -> dict:
    """The data section of a pretraining run: the quickstart's corpus (plays + training reviews, one
    text file), the training reviews alone (one per line, one text file), or one review per row (`.pt`
    rows, never packed with another)."""
    WORK.mkdir(parents=True, exist_ok=True)
    reviews = ensure_reviews(DEFAULT_CACHE)
    if kind == "quickstart":
        corpus = pretraining_corpus(ensure_plays(DEFAULT_CACHE), reviews / "train.tsv", WORK / "corpus.txt")
        return {"train": {"path": str(corpus)}, "val_fraction": 0.05}
    if kind == "reviews":
        text = WORK / "reviews.txt"
        if not text.is_file():
            lines = (reviews / "train.tsv").read_text(encoding="utf-8").splitlines()[1:]
            text.write_text("\n".join(line.split("\t")[0] for line in lines) + "\n", encoding="utf-8")
        return {"train": {"path": str(text)}, "val_fraction": 0.05}
    return {"train": str(review_rows(reviews / "train.tsv")), "val": str(review_rows(reviews / "val.tsv"))}


def review_rows(tsv: Path) -> Path:
    """One row per review sentence, [CLS] text [SEP], as a `.pt` dataset."""
    out = WORK / f"rows_{tsv.stem}.pt"
    if not out.is_file():
        tokenizer = FoundryTokenizer.load(TOKENIZER)
        texts = [line.split("\t")[0] for line in tsv.read_text(encoding="utf-8").splitlines()[1:]]
        rows = [[tokenizer.cls_id, *tokenizer.encode(t)[:MODEL["block_size"] - 2], tokenizer.sep_id] for t in texts]
        width = max(map(len, rows))
        ids = torch.tensor([r + [tokenizer.pad_id] * (width - len(r)) for r in rows])
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows])
        torch.save({"input_ids": ids, "attention_mask": mask}, out)
    return out


def make_tokenizer(_: argparse.Namespace) -> None:
    """The quickstart's tokenizer: byte-level BPE, 4,096 tokens, on its pretraining corpus."""
    files = corpus_files("quickstart")
    train_tokenizer("bpe", 4096, files=[files["train"]["path"]]).save(TOKENIZER)


SENTENCE_OBJECTIVES = ("span_contrastive", "span_bag_of_words")


def pretrain(args: argparse.Namespace) -> None:
    task = {"type": args.objective, "mlm_probability": args.mask}
    if args.objective in SENTENCE_OBJECTIVES:  # whole text units (lines), each one row of the batch
        task["lm_weight"] = args.lm_weight
    if args.objective == "span_contrastive":
        task["temperature"] = args.temperature
    by_rows = args.corpus == "review-rows" or args.objective in SENTENCE_OBJECTIVES
    train(with_overrides(args.set, {
        "experiment": {"name": "bert", "kind": "pretraining", "seed": args.seed, "output_dir": str(args.out)},
        "tokenizer": {"path": str(TOKENIZER)}, "data": corpus_files(args.corpus),
        "model": {"architecture": "bert", **MODEL, "init_embeddings": args.init_embeddings},
        "task": task,
        "training": {**TRAINING, "max_steps": args.steps, "learning_rate": args.lr,
                     "batch_size": args.batch_size or (64 if by_rows else TRAINING["batch_size"])}}))


def finetune(args: argparse.Namespace) -> None:
    reviews = ensure_reviews(DEFAULT_CACHE)
    transfer = {"init_from_checkpoint": str(args.run), "load_weights": not args.scratch,
                "freeze_embeddings": args.freeze_embeddings, "freeze_transformer": args.probe}
    training = {**FINETUNING, "epochs": args.epochs or (30 if args.probe else 10),
                "learning_rate": args.lr or (3e-3 if args.probe else FINETUNING["learning_rate"])}
    accuracies, val_accuracies = [], []
    for seed in SEEDS:
        results = train(with_overrides(args.set, {
            "experiment": {"name": f"classifier_seed{seed}", "kind": "finetuning", "seed": seed,
                           "output_dir": str(args.out)},
            "data": {"train": str(reviews / "train.tsv"), "val": str(reviews / "val.tsv"),
                     "test": str(reviews / "test.tsv"), "text_column": "sentence", "label_column": "label",
                     "max_train_samples": args.labels},
            "task": {"type": "sequence_classification", "pooler": args.pooler},
            "transfer": transfer, "training": training}))
        accuracies.append(results["test"]["accuracy"])
        val_accuracies.append(results["val"]["accuracy"])
    print(f"val accuracy mean {statistics.fmean(val_accuracies):.3f} ± {statistics.stdev(val_accuracies):.3f}; "
          f"test accuracy, seeds {SEEDS}: {', '.join(f'{a:.3f}' for a in accuracies)}; "
          f"mean {statistics.fmean(accuracies):.3f} ± {statistics.stdev(accuracies):.3f}")


def with_overrides(settings: list[str], config: dict) -> dict:
    """`config` with each `section.key=value` of `--set` applied (the value read as YAML)."""
    for setting in settings:
        key, _, value = setting.partition("=")
        section, _, name = key.partition(".")
        config.setdefault(section, {})[name] = yaml.safe_load(value)
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("tokenizer").set_defaults(func=make_tokenizer)
    p = commands.add_parser("pretrain")
    p.add_argument("out", type=Path)
    p.add_argument("--corpus", choices=["quickstart", "reviews", "review-rows"], default="quickstart")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--seed", type=int, default=1337, help="the pretraining seed (finetuning always uses 1337, 1, 2)")
    p.add_argument("--mask", type=float, default=0.15)
    p.add_argument("--lr", type=float, default=TRAINING["learning_rate"])
    p.add_argument("--objective", default="masked_lm",
                   choices=["masked_lm", "replaced_token_detection", *SENTENCE_OBJECTIVES])
    p.add_argument("--lm-weight", type=float, default=0.0,
                   help="span objectives: weight of masked LM on the same units (0: the sentence objective alone)")
    p.add_argument("--init-embeddings", choices=["random", "ppmi"], default="random",
                   help="ppmi: start the token embedding from PPMI-SVD vectors of the corpus")
    p.add_argument("--temperature", type=float, default=0.05, help="span_contrastive's softmax temperature")
    p.add_argument("--batch-size", type=int, help="default 16 windows, or 64 rows for row and span objectives")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any other key of the pretraining config, e.g. model.recipe=modern")
    p.set_defaults(func=pretrain)
    f = commands.add_parser("finetune")
    f.add_argument("run", type=Path)
    f.add_argument("out", type=Path)
    f.add_argument("--labels", type=int, default=200)
    f.add_argument("--pooler", default="mean")
    f.add_argument("--scratch", action="store_true", help="the run's architecture and tokenizer, random weights")
    f.add_argument("--freeze-embeddings", action="store_true")
    f.add_argument("--probe", action="store_true", help="frozen backbone: a linear probe (30 epochs, lr 3e-3)")
    f.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="any other key of the finetuning config, e.g. training.eval_interval=6")
    f.add_argument("--epochs", type=float, help="default 10 (30 for --probe)")
    f.add_argument("--lr", type=float, help="default the quickstart's 5e-4 (3e-3 for --probe)")
    f.set_defaults(func=finetune)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
