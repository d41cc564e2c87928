"""The quickstart's classifiers with all training labels over three seeds (the quickstart runs one).

Run by hand after `foundry quickstart`, with the directory of its runs:

    python benchmarks/quickstart_transfer/all_labels.py experiments/quickstart/steps400-HASH

Finetunes the pretrained BERT, the pretrained GPT and the from-scratch control exactly as the
quickstart does (its `finetuning_config`), for seeds 1337, 1 and 2 (1337 is the quickstart's own
run, reused), and prints each backbone's test accuracies, mean and std.
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

from model_foundry.quickstart.data import DEFAULT_CACHE
from model_foundry.quickstart.workflow import FINETUNING, SEED, classifier_name, finetuning_config
from model_foundry.training.run import train

SEEDS = (SEED, 1, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", type=Path, help="the quickstart's runs of one set of settings")
    args = parser.parse_args()
    pretrained = {arch: args.runs / "pretraining" / arch for arch in ("bert", "gpt")}
    reviews = DEFAULT_CACHE / "movie_reviews"
    for backbone in ("bert", "gpt", "scratch"):
        accuracies = [train(finetuning_config(classifier_name(backbone, None, seed), "sequence_classification",
                                              pretrained, backbone, reviews, args.runs, FINETUNING["epochs"],
                                              None, seed))["test"]["accuracy"] for seed in SEEDS]
        print(f"{backbone:<8} all labels, seeds {SEEDS}: {', '.join(f'{a:.3f}' for a in accuracies)}; "
              f"mean {statistics.fmean(accuracies):.3f} ± {statistics.stdev(accuracies):.3f}", flush=True)


if __name__ == "__main__":
    main()
