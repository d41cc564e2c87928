"""The count-based mark on the quickstart's reviews, with the package's `ppmi` reference
(model_foundry.quickstart.ppmi_reference): PPMI-SVD vectors of the quickstart's tokens, counted within
a sentence of the unlabelled training reviews, averaged per sentence, logistic regression on N labels.
The same 200-review subsets as the classifiers (`data.max_train_samples` with seeds 1337, 1, 2). Run
from the repository root after `few_labels.py tokenizer`:

    python benchmarks/quickstart_transfer/ppmi_reference.py [--labels 200] [--window N] [--dim 100]
"""
from __future__ import annotations

import argparse
import statistics

from model_foundry.quickstart.data import DEFAULT_CACHE, ensure_reviews
from model_foundry.quickstart.ppmi_reference import PpmiReference
from model_foundry.quickstart.workflow import read_reviews
from model_foundry.tasks.finetuning import seeded_subset
from model_foundry.tokenizer import FoundryTokenizer

from few_labels import SEEDS, TOKENIZER


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--labels", type=int, default=200)
    parser.add_argument("--window", type=int, help="count within this many tokens (default: the whole sentence)")
    parser.add_argument("--dim", type=int, default=100)
    args = parser.parse_args()
    reviews = ensure_reviews(DEFAULT_CACHE)
    train, test = read_reviews(reviews / "train.tsv"), read_reviews(reviews / "test.tsv")
    reference = PpmiReference([t for t, _ in train], FoundryTokenizer.load(TOKENIZER), dim=args.dim, window=args.window)
    accuracies = []
    for seed in SEEDS:
        labelled = seeded_subset(train, args.labels, seed)
        accuracies.append(reference.accuracy([t for t, _ in labelled], [y for _, y in labelled],
                                             [t for t, _ in test], [y for _, y in test]))
    print(f"ppmi reference, {args.labels} labels, seeds {SEEDS}: {', '.join(f'{a:.3f}' for a in accuracies)}; "
          f"mean {statistics.fmean(accuracies):.3f} ± {statistics.stdev(accuracies):.3f}")


if __name__ == "__main__":
    main()
