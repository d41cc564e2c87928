"""`foundry eval RUN --similarity FILE`: zero-shot sentence similarity (STS-B style).

Each row of FILE (tsv, csv or jsonl) holds two texts and a gold score, by default in the columns
`sentence1`, `sentence2` and `score` (GLUE STS-B's names). Both texts are embedded as `foundry
embed` embeds them; the report is Pearson's and Spearman's correlation of the two vectors' cosine
with the gold scores. Spearman is Pearson's correlation of the ranks, tied values sharing the
average of their ranks (as scipy.stats.spearmanr does).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model_foundry.errors import UserError
from model_foundry.inference.embedding import (TABLE_FORMATS, column_text, column_value, embed_texts, file_format,
                                               load_for_embedding, pooler_name, table_rows)


@dataclass
class SimilarityPairs:
    first: list[str]
    second: list[str]
    gold: list[float]


def read_similarity_pairs(path: str | Path, sentence1: str = "sentence1", sentence2: str = "sentence2",
                          score: str = "score") -> SimilarityPairs:
    """The pairs and gold scores of a similarity file; a bad row is an error naming its file and line."""
    path = Path(path)
    fmt = file_format(path, "--similarity", TABLE_FORMATS)
    pairs = SimilarityPairs([], [], [])
    flags = {sentence1: "--sentence1-column", sentence2: "--sentence2-column", score: "--score-column"}
    for where, row, columns in table_rows(path, fmt, flags):
        pairs.first.append(column_text(where, row, columns, sentence1, "--sentence1-column"))
        pairs.second.append(column_text(where, row, columns, sentence2, "--sentence2-column"))
        pairs.gold.append(gold_score(where, column_value(where, row, columns, score, "--score-column"), score))
    check_correlatable(path, pairs.gold)
    return pairs


def gold_score(where: str, value, column: str) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        number = math.nan
    if not math.isfinite(number):
        raise UserError(f"{where}: the gold score {value!r} in column {column!r} is not a finite number; each row "
                        "needs a number there, e.g. 3.8.")
    return number


def check_correlatable(path: Path, gold: list[float]) -> None:
    """A correlation needs at least two rows and gold scores that are not all the same."""
    if not gold:
        raise UserError(f"--similarity {path} holds no rows; it needs a header (or JSON keys) and one row per pair "
                        "of texts with a gold score.")
    if len(gold) < 2:
        raise UserError(f"--similarity {path} holds one pair; a correlation needs at least 2 (STS-B's "
                        "validation split has 1,500).")
    if len(set(gold)) == 1:
        raise UserError(f"--similarity {path}: every gold score is {gold[0]}, so no correlation with them is "
                        "defined; the scores must vary from pair to pair.")


def cosine_similarities(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """Row-wise cosine of two (n, hidden) arrays; a zero vector has cosine 0 with anything."""
    first, second = first.astype(np.float64), second.astype(np.float64)
    norms = np.linalg.norm(first, axis=1) * np.linalg.norm(second, axis=1)
    return (first * second).sum(axis=1) / np.maximum(norms, 1e-12)


def pearson(x, y) -> float:
    """Pearson's correlation; a UserError when either side is constant (it is undefined then)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    spread = math.sqrt(float((dx * dx).sum()) * float((dy * dy).sum()))
    if spread == 0.0:
        raise UserError("A correlation is undefined when one side is constant: the model gave every pair the same "
                        "cosine (its vectors may not depend on the text; check the run or try another --pooler).")
    return float((dx * dy).sum()) / spread


def average_ranks(values) -> np.ndarray:
    """1-based ranks of `values`; tied values share the mean of the ranks they occupy."""
    values = np.asarray(values, dtype=np.float64)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x, y) -> float:
    return pearson(average_ranks(x), average_ranks(y))


def similarity_report(run: str | Path, path: str | Path, sentence1: str = "sentence1", sentence2: str = "sentence2",
                      score: str = "score", pooler: str | None = None, checkpoint: str = "best",
                      batch_size: int = 64) -> dict:
    """`{"pearson", "spearman", "pairs", "file", "model", "pooler"}` for one similarity file."""
    pairs = read_similarity_pairs(path, sentence1, sentence2, score)
    model, tokenizer = load_for_embedding(run, checkpoint)
    vectors = embed_texts(model, tokenizer, pairs.first + pairs.second, pooler, batch_size)
    n = len(pairs.gold)
    cosines = cosine_similarities(vectors[:n], vectors[n:])
    return {"pearson": pearson(cosines, pairs.gold), "spearman": spearman(cosines, pairs.gold), "pairs": n,
            "file": str(path), "model": str(run), "pooler": pooler_name(model, pooler)}
