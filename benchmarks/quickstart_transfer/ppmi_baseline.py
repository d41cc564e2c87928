"""How much sentiment signal do the unlabelled training sentences hold? A count-based answer.

Word vectors from positive PMI of co-occurrence in the training sentences (labels unused), reduced
to 100 dimensions by SVD; a sentence is the mean of its words' vectors; logistic regression on
N labelled sentences (seeded subsets 1, 2, 3), against logistic regression on bag-of-words counts.
`--window W` counts co-occurrence within W words instead of the whole sentence. Run by hand:

    python benchmarks/quickstart_transfer/ppmi_baseline.py [DIR] [--text-column sentence] [--window W]

DIR holds train.tsv and test.tsv with a `label` column (default: the quickstart's movie reviews;
`../shared/data/sst2` works too).
"""
from __future__ import annotations

import argparse
import csv
import random
import re
from pathlib import Path

import numpy as np
import scipy.sparse as sparse
from scipy.sparse.linalg import svds
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.linear_model import LogisticRegression

from model_foundry.quickstart.data import DEFAULT_CACHE


def read_split(path: Path, text_column: str) -> tuple[list[str], list[str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [row[text_column].lower() for row in rows], [row["label"] for row in rows]


def words(text: str) -> list[str]:
    return re.findall(r"[a-z']+|[^\sa-z']", text)


def ppmi_vectors(sentences: list[str], vocabulary: dict[str, int], window: int | None, dims: int = 100) -> np.ndarray:
    """Word vectors: SVD of the positive PMI of co-occurrence (in a sentence, or within `window` words)."""
    rows, cols = [], []
    for sentence in sentences:
        ids = [vocabulary[w] for w in words(sentence) if w in vocabulary]
        for i, a in enumerate(ids):
            span = range(len(ids)) if window is None else range(max(0, i - window), min(len(ids), i + window + 1))
            rows.extend(a for j in span if j != i)
            cols.extend(ids[j] for j in span if j != i)
    size = len(vocabulary)
    counts = sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(size, size)).tocsr().tocoo()
    total, marginal = counts.sum(), np.asarray(counts.sum(1)).ravel()
    pmi = np.log(counts.data * total / (marginal[counts.row] * marginal[counts.col]))
    keep = pmi > 0
    matrix = sparse.csr_matrix((pmi[keep], (counts.row[keep], counts.col[keep])), shape=(size, size))
    u, s, _ = svds(matrix, k=dims)
    return u * np.sqrt(s)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path, nargs="?", default=DEFAULT_CACHE / "movie_reviews")
    parser.add_argument("--text-column", default="sentence")
    parser.add_argument("--window", type=int, default=None)
    args = parser.parse_args()
    train_texts, train_labels = read_split(args.data / "train.tsv", args.text_column)
    test_texts, test_labels = read_split(args.data / "test.tsv", args.text_column)
    counter = CountVectorizer(tokenizer=words, lowercase=False, min_df=2, token_pattern=None).fit(train_texts)
    vectors = ppmi_vectors(train_texts, counter.vocabulary_, args.window)

    def mean_vectors(texts: list[str]) -> np.ndarray:
        counts = counter.transform(texts).astype(np.float64)
        return sparse.diags(1 / np.maximum(counts.sum(1).A.ravel(), 1)) @ counts @ vectors

    features = {"bag of words": (counter.transform(train_texts), counter.transform(test_texts), 1.0),
                "PPMI-SVD": (mean_vectors(train_texts), mean_vectors(test_texts), 10.0)}
    context = "the whole sentence" if args.window is None else f"+-{args.window} words"
    print(f"{args.data}: {len(train_texts)} training sentences, co-occurrence within {context}")
    for n in (200, 1000, len(train_texts)):
        scores = {}
        for name, (train_x, test_x, c) in features.items():
            subsets = [random.Random(seed).sample(range(len(train_texts)), n) for seed in (1, 2, 3)]
            scores[name] = np.mean([LogisticRegression(C=c, max_iter=3000).fit(train_x[s], [train_labels[i] for i in s])
                                    .score(test_x, test_labels) for s in subsets])
        print(f"{n:>6} labels: " + ", ".join(f"{name} {score:.3f}" for name, score in scores.items()))


if __name__ == "__main__":
    main()
