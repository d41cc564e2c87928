"""The count-based mark on the quickstart's reviews, with the package's `ppmi` reference
(model_foundry.quickstart.ppmi_reference): PPMI-SVD vectors of the quickstart's tokens, counted within
a sentence of the unlabelled training reviews, averaged per sentence, logistic regression on N labels.
The same 200-review subsets as the classifiers (`data.max_train_samples` with seeds 1337, 1, 2). Run
from the repository root after `few_labels.py tokenizer`:

    python benchmarks/quickstart_transfer/ppmi_reference.py [--labels 200] [--window N] [--dim 100]
"""
from __future__ import annotations

import argparse
import csv
import statistics

from model_foundry.quickstart.data import DEFAULT_CACHE, ensure_reviews
from model_foundry.quickstart.ppmi_reference import ppmi_reference_accuracy
from model_foundry.tasks.finetuning import seeded_subset
from model_foundry.tokenizer import FoundryTokenizer

from few_labels import SEEDS, TOKENIZER


def read_split(path) -> list[tuple[str, str]]:
    with open(path, encoding="utf-8", newline="") as handle:
        return [(row["sentence"], row["label"]) for row in csv.DictReader(handle, delimiter="\t")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=200)
    parser.add_argument("--window", type=int, help="count within this many tokens (default: the whole sentence)")
    parser.add_argument("--dim", type=int, default=100)
    args = parser.parse_args()
    reviews = ensure_reviews(DEFAULT_CACHE)
    train, test = read_split(reviews / "train.tsv"), read_split(reviews / "test.tsv")
    tokenizer = FoundryTokenizer.load(TOKENIZER)
    accuracies = []
    for seed in SEEDS:
        labelled = seeded_subset(train, args.labels, seed)
        accuracies.append(ppmi_reference_accuracy(
            [t for t, _ in labelled], [y for _, y in labelled], [t for t, _ in train],
            [t for t, _ in test], [y for _, y in test], tokenizer, dim=args.dim, window=args.window))
    print(f"ppmi reference, {args.labels} labels, seeds {SEEDS}: {', '.join(f'{a:.3f}' for a in accuracies)}; "
          f"mean {statistics.fmean(accuracies):.3f} ± {statistics.stdev(accuracies):.3f}")


if __name__ == "__main__":
    main()
