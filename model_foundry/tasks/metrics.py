"""Evaluation metrics for the finetuning tasks: classification, multi-label, token tagging, scoring.

Pure numpy, so the package needs neither scikit-learn nor scipy. Every value is a plain Python
float or int, so a metrics dict goes straight into `results.json` and the CSV logs. Conventions
shared by all tasks:

- A ratio with a zero denominator (the precision of a class never predicted, a correlation with a
  constant input) is 0.0, never NaN: the trainer compares metrics to pick the best checkpoint, and
  NaN compares false with everything and is not valid JSON.
- `f1_macro` of `classification_metrics` and `multilabel_metrics` averages over ALL the labels
  the task declares, also those absent from this split (scikit-learn's
  `f1_score(..., labels=all_labels, average="macro", zero_division=0)`). Every evaluation then
  averages over the same classes, so values are comparable across steps and between val and
  test; the price is that a class missing from both targets and predictions scores 0.
- Inputs of the wrong shape or size are our bugs, not the user's: they raise `ValueError`, as
  does empty input, whose metrics are undefined.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def classification_metrics(predictions: Sequence[int], targets: Sequence[int],
                           labels: Sequence[str]) -> dict:
    """Accuracy, macro and micro F1, per-class scores and the confusion matrix of single-label predictions.

    `predictions` and `targets` are indices into `labels`. The confusion matrix has one row per
    true label and one column per predicted label. Micro F1 equals accuracy here: every wrong
    prediction is one false positive and one false negative.
    """
    _check_labels(labels)
    predicted = _as_label_indices(predictions, "predictions", len(labels))
    true = _as_label_indices(targets, "targets", len(labels))
    _check_same_length(predicted, true)
    matrix = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(matrix, (true, predicted), 1)
    true_positives = np.diag(matrix)
    false_positives = matrix.sum(axis=0) - true_positives
    false_negatives = matrix.sum(axis=1) - true_positives
    return {
        "accuracy": float(true_positives.sum() / len(true)),
        **_class_scores(labels, true_positives, false_positives, false_negatives),
        "confusion_matrix": {"labels": list(labels), "matrix": matrix.tolist()},
    }


def multilabel_metrics(predictions: Sequence[Sequence[int]] | np.ndarray,
                       targets: Sequence[Sequence[int]] | np.ndarray, labels: Sequence[str]) -> dict:
    """Subset accuracy, macro and micro F1 and per-class scores of 0/1 matrices (rows = examples).

    `accuracy` counts an example as right only when its whole label set is right (exact match),
    the strict reading that does not reward predicting nothing for a mostly-negative matrix.
    """
    _check_labels(labels)
    predicted = _as_binary_matrix(predictions, "predictions", len(labels))
    true = _as_binary_matrix(targets, "targets", len(labels))
    _check_same_length(predicted, true)
    true_positives = (predicted & true).sum(axis=0)
    false_positives = (predicted & ~true).sum(axis=0)
    false_negatives = (~predicted & true).sum(axis=0)
    return {
        "accuracy": float((predicted == true).all(axis=1).mean()),
        **_class_scores(labels, true_positives, false_positives, false_negatives),
    }


def token_metrics(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> dict:
    """Token accuracy, per-tag scores and, for BIO tag sets, entity-level F1 of tagged sentences.

    The tag set is every tag seen in `gold` or `predicted`, so `f1_macro` averages over those tags
    ("O" included). `entity_f1` is present only when every tag other than "O" starts with "B-" or
    "I-": it is the micro F1 over exact entity spans, matched within their own sentence.
    """
    _check_sentences(predicted, gold)
    flat_predicted = [tag for sentence in predicted for tag in sentence]
    flat_gold = [tag for sentence in gold for tag in sentence]
    tags = sorted(set(flat_gold) | set(flat_predicted))
    tag_index = {tag: i for i, tag in enumerate(tags)}
    scores = classification_metrics([tag_index[tag] for tag in flat_predicted],
                                    [tag_index[tag] for tag in flat_gold], tags)
    metrics = {"token_accuracy": scores["accuracy"], "f1_macro": scores["f1_macro"],
               "per_class": scores["per_class"]}
    if _looks_like_bio(tags):
        metrics["entity_f1"] = _entity_f1(predicted, gold)
    return metrics


def entity_spans(tags: Sequence[str]) -> set[tuple[str, int, int]]:
    """The entities in one sentence's BIO tags, as (type, start, end) with `end` exclusive.

    Decoding follows conlleval, which also reads IOB1 and model output that breaks IOB2's rules:
    an entity starts at every B- tag and at an I- tag that follows "O" or an entity of another
    type; it goes on over I- tags of its own type and ends at anything else.
    """
    spans: set[tuple[str, int, int]] = set()
    current_type: str | None = None
    start = 0
    for position, tag in enumerate(tags):
        prefix, entity_type = _split_bio_tag(tag)
        if prefix == "I" and entity_type == current_type:
            continue
        if current_type is not None:
            spans.add((current_type, start, position))
        current_type, start = entity_type, position
    if current_type is not None:
        spans.add((current_type, start, len(tags)))
    return spans


def scoring_metrics(predictions: Sequence[float], targets: Sequence[float]) -> dict:
    """Mean squared and absolute error, Pearson and Spearman correlation of real-valued predictions.

    Spearman is Pearson on ranks, tied values sharing the mean of the ranks they span (as scipy).
    A correlation with a constant side is undefined (scipy returns NaN); it is reported as 0.0,
    "no linear or monotonic relation", which is what a constant predictor early in training has.
    """
    predicted = _as_float_vector(predictions, "predictions")
    true = _as_float_vector(targets, "targets")
    _check_same_length(predicted, true)
    error = predicted - true
    return {
        "mse": float(np.mean(error ** 2)),
        "mae": float(np.mean(np.abs(error))),
        "pearson": _pearson(predicted, true),
        "spearman": _pearson(_average_ranks(predicted), _average_ranks(true)),
    }


def _class_scores(labels: Sequence[str], true_positives: np.ndarray, false_positives: np.ndarray,
                  false_negatives: np.ndarray) -> dict:
    """Macro and micro F1 and per-class precision, recall, F1 and support from per-class counts."""
    precision = _ratio(true_positives, true_positives + false_positives)
    recall = _ratio(true_positives, true_positives + false_negatives)
    # 2PR / (P + R) rewritten on counts: the same value, and 0 rather than 0/0 when tp is 0.
    f1 = _ratio(2 * true_positives, 2 * true_positives + false_positives + false_negatives)
    support = true_positives + false_negatives
    pooled_f1 = _ratio(2 * true_positives.sum(),
                       2 * true_positives.sum() + false_positives.sum() + false_negatives.sum())
    per_class = {
        label: {"precision": float(precision[i]), "recall": float(recall[i]), "f1": float(f1[i]),
                "support": int(support[i])}
        for i, label in enumerate(labels)
    }
    return {"f1_macro": float(f1.mean()), "f1_micro": float(pooled_f1), "per_class": per_class}


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator elementwise, 0.0 where the denominator is 0 (zero_division=0)."""
    numerator = np.asarray(numerator, dtype=np.float64)
    denominator = np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator != 0)


def _entity_f1(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> float:
    """Micro F1 over exact entity spans, pooled over sentences as conlleval does."""
    found = expected = correct = 0
    for predicted_tags, gold_tags in zip(predicted, gold):
        predicted_entities = entity_spans(predicted_tags)
        gold_entities = entity_spans(gold_tags)
        found += len(predicted_entities)
        expected += len(gold_entities)
        correct += len(predicted_entities & gold_entities)
    # 2PR / (P + R) with P = correct / found and R = correct / expected.
    return float(_ratio(2 * correct, found + expected))


def _looks_like_bio(tags: Sequence[str]) -> bool:
    return all(tag == "O" or tag.startswith(("B-", "I-")) for tag in tags)


def _split_bio_tag(tag: str) -> tuple[str, str | None]:
    """("O", None) for "O", else the prefix and the entity type: "B-PER" -> ("B", "PER")."""
    if tag == "O":
        return "O", None
    if not tag.startswith(("B-", "I-")):
        raise ValueError(f"Tag {tag!r} is not a BIO tag: expected 'O' or a tag starting with 'B-' or 'I-'.")
    return tag[0], tag[2:]


def _pearson(x: np.ndarray, y: np.ndarray) -> float:
    # Test for an exactly constant side before centring: the centred copy of [0.1, 0.1, 0.1] is
    # rounding noise, not zeros, and would give a meaningless correlation.
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return 0.0
    x_centred = x - x.mean()
    y_centred = y - y.mean()
    correlation = (x_centred @ y_centred) / np.sqrt((x_centred @ x_centred) * (y_centred @ y_centred))
    # Rounding can push a perfect correlation a hair past +-1.
    return float(np.clip(correlation, -1.0, 1.0))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    """1-based ranks; tied values share the mean of the ranks they span (scipy's rankdata default)."""
    _, group_of_value, group_sizes = np.unique(values, return_inverse=True, return_counts=True)
    last_rank_of_group = np.cumsum(group_sizes)
    mean_rank_of_group = last_rank_of_group - (group_sizes - 1) / 2
    return mean_rank_of_group[group_of_value]


def _check_labels(labels: Sequence[str]) -> None:
    if len(labels) == 0:
        raise ValueError("labels is empty: a classification task needs at least one label.")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct (per_class is keyed by label), got {list(labels)}.")


def _check_same_length(predicted: np.ndarray, true: np.ndarray) -> None:
    if len(predicted) != len(true):
        raise ValueError(f"predictions and targets differ in length: {len(predicted)} vs {len(true)}.")


def _check_sentences(predicted: Sequence[Sequence[str]], gold: Sequence[Sequence[str]]) -> None:
    if len(predicted) != len(gold):
        raise ValueError(f"predicted has {len(predicted)} sentences but gold has {len(gold)}.")
    for number, (predicted_tags, gold_tags) in enumerate(zip(predicted, gold)):
        if len(predicted_tags) != len(gold_tags):
            raise ValueError(f"Sentence {number} has {len(predicted_tags)} predicted tags but "
                             f"{len(gold_tags)} gold tags; they must align token for token.")
    if not any(len(sentence) for sentence in gold):
        raise ValueError("No tokens to score: gold holds no tags.")


def _as_label_indices(values: Sequence[int], name: str, num_labels: int) -> np.ndarray:
    indices = np.asarray(values)
    if indices.ndim != 1 or indices.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of label indices, got shape {indices.shape}.")
    if not np.issubdtype(indices.dtype, np.integer):
        raise ValueError(f"{name} must hold integer label indices, got dtype {indices.dtype}.")
    if indices.min() < 0 or indices.max() >= num_labels:
        raise ValueError(f"{name} holds label indices outside 0..{num_labels - 1} "
                         f"(min {indices.min()}, max {indices.max()}).")
    return indices


def _as_binary_matrix(values: Sequence[Sequence[int]] | np.ndarray, name: str, num_labels: int) -> np.ndarray:
    matrix = np.asarray(values)
    if matrix.ndim != 2 or matrix.shape[0] == 0 or matrix.shape[1] != num_labels:
        raise ValueError(f"{name} must be a non-empty (examples, {num_labels}) 0/1 matrix, "
                         f"got shape {matrix.shape}.")
    if not np.isin(matrix, (0, 1)).all():
        raise ValueError(f"{name} must hold only 0 and 1, got values {np.unique(matrix).tolist()}.")
    return matrix.astype(bool)


def _as_float_vector(values: Sequence[float], name: str) -> np.ndarray:
    vector = np.asarray(values, dtype=np.float64)
    if vector.ndim != 1 or vector.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers, got shape {vector.shape}.")
    return vector
