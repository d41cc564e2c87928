"""Metrics against numbers worked out by hand and against scipy / scikit-learn (both in the dev extra)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from model_foundry.tasks.metrics import (classification_metrics, entity_spans, multilabel_metrics,
                                         scoring_metrics, token_metrics)


def assert_plain_json(value) -> None:
    """Every leaf is a builtin int/float/str (numpy scalars would break results.json elsewhere)."""
    if isinstance(value, dict):
        for key, item in value.items():
            assert type(key) is str
            assert_plain_json(item)
    elif isinstance(value, list):
        for item in value:
            assert_plain_json(item)
    else:
        assert type(value) in (int, float, str), f"{value!r} is {type(value)}"
        assert not (type(value) is float and math.isnan(value))


# ---- classification ---------------------------------------------------------------------------

def test_classification_hand_computed():
    # (true, predicted): (cat,cat) (cat,cat) (cat,dog) (dog,dog) (dog,bird) (bird,bird)
    result = classification_metrics([0, 0, 1, 1, 2, 2], [0, 0, 0, 1, 1, 2], ["cat", "dog", "bird"])
    assert result["accuracy"] == pytest.approx(4 / 6)
    assert result["per_class"]["cat"] == pytest.approx({"precision": 1.0, "recall": 2 / 3, "f1": 0.8, "support": 3})
    assert result["per_class"]["dog"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert result["per_class"]["bird"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert result["f1_macro"] == pytest.approx((0.8 + 0.5 + 2 / 3) / 3)
    assert result["f1_micro"] == pytest.approx(4 / 6)
    assert result["confusion_matrix"] == {"labels": ["cat", "dog", "bird"],
                                          "matrix": [[2, 1, 0], [0, 1, 1], [0, 0, 1]]}
    assert_plain_json(result)
    json.dumps(result)


def test_confusion_matrix_rows_are_true_labels():
    # Three true "pos", two of them predicted "neg": the 2 sits in row pos, column neg.
    result = classification_metrics([0, 0, 1], [1, 1, 1], ["neg", "pos"])
    assert result["confusion_matrix"]["matrix"] == [[0, 0], [2, 1]]


def test_zero_division_gives_zero_and_macro_averages_all_labels():
    # "b" is never predicted (precision 0/0), "c" appears nowhere: both score 0 and still count.
    result = classification_metrics([0, 0], [0, 1], ["a", "b", "c"])
    assert result["per_class"]["a"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert result["per_class"]["b"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert result["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert result["f1_macro"] == pytest.approx((2 / 3) / 3)
    assert_plain_json(result)


@pytest.mark.slow
def test_classification_matches_sklearn():
    # scikit-learn is in the dev extra, so this runs wherever the tests do (no importorskip: a missing
    # install must fail, not skip the only independent check of these formulas).
    from sklearn import metrics

    rng = np.random.default_rng(0)
    targets, predictions = rng.integers(0, 4, 50), rng.integers(0, 4, 50)
    result = classification_metrics(predictions.tolist(), targets.tolist(), ["a", "b", "c", "d", "e"])
    labels = [0, 1, 2, 3, 4]
    assert result["accuracy"] == pytest.approx(metrics.accuracy_score(targets, predictions))
    assert result["f1_macro"] == pytest.approx(metrics.f1_score(targets, predictions, labels=labels,
                                                                average="macro", zero_division=0))
    assert result["f1_micro"] == pytest.approx(metrics.f1_score(targets, predictions, average="micro"))
    assert result["confusion_matrix"]["matrix"] == metrics.confusion_matrix(targets, predictions, labels=labels).tolist()
    precision, recall, f1, support = metrics.precision_recall_fscore_support(targets, predictions, labels=labels,
                                                                             zero_division=0)
    for i, name in enumerate("abcde"):
        assert result["per_class"][name] == pytest.approx({"precision": precision[i], "recall": recall[i],
                                                           "f1": f1[i], "support": support[i]}), name


@pytest.mark.parametrize("predictions, targets, labels, message", [
    ([], [], ["a"], "non-empty"),
    ([0, 1], [0], ["a", "b"], "differ in length"),
    ([0, 2], [0, 1], ["a", "b"], "outside 0..1"),
    ([0, 1], [0, 1], ["a", "a"], "distinct"),
    ([0.0, 1.0], [0, 1], ["a", "b"], "integer"),
])
def test_classification_rejects_bad_input(predictions, targets, labels, message):
    with pytest.raises(ValueError, match=message):
        classification_metrics(predictions, targets, labels)


# ---- multi-label -------------------------------------------------------------------------------

def test_multilabel_hand_computed():
    targets = [[1, 0, 1], [0, 1, 0], [1, 1, 0]]
    predictions = [[1, 0, 1], [0, 1, 1], [1, 0, 0]]  # row 0 exact; row 1 adds z; row 2 misses y
    result = multilabel_metrics(np.array(predictions), np.array(targets), ["x", "y", "z"])
    assert result["accuracy"] == pytest.approx(1 / 3)
    assert result["per_class"]["x"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert result["per_class"]["y"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert result["per_class"]["z"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert result["f1_macro"] == pytest.approx(7 / 9)
    assert result["f1_micro"] == pytest.approx(0.8)  # tp 4, fp 1, fn 1
    assert set(result) == {"accuracy", "f1_macro", "f1_micro", "per_class"}
    assert_plain_json(result)


def test_multilabel_subset_accuracy_is_strict():
    # 5 of 6 cells right (Hamming accuracy 0.83), but only one of the two rows is exactly right.
    result = multilabel_metrics([[1, 0, 0], [0, 0, 0]], [[1, 0, 1], [0, 0, 0]], ["a", "b", "c"])
    assert result["accuracy"] == pytest.approx(0.5)
    result = multilabel_metrics([[1, 0, 0], [0, 0, 1]], [[1, 0, 1], [0, 0, 0]], ["a", "b", "c"])
    assert result["accuracy"] == 0.0


@pytest.mark.parametrize("predictions, targets, message", [
    ([[1, 2, 0]], [[1, 0, 0]], "only 0 and 1"),
    ([[1, 0]], [[1, 0, 0]], "shape"),
    ([[1, 0, 0]], [[1, 0, 0], [0, 0, 0]], "differ in length"),
    (np.zeros((0, 3)), np.zeros((0, 3)), "non-empty"),
])
def test_multilabel_rejects_bad_input(predictions, targets, message):
    with pytest.raises(ValueError, match=message):
        multilabel_metrics(predictions, targets, ["a", "b", "c"])


# ---- entity spans ------------------------------------------------------------------------------

@pytest.mark.parametrize("tags, spans", [
    (["B-PER", "I-PER", "O", "B-LOC"], {("PER", 0, 2), ("LOC", 3, 4)}),
    (["O", "I-PER", "I-PER", "O"], {("PER", 1, 3)}),                    # I- after O starts an entity
    (["B-PER", "I-LOC"], {("PER", 0, 1), ("LOC", 1, 2)}),                # I- of another type starts one
    (["B-PER", "B-LOC", "I-LOC"], {("PER", 0, 1), ("LOC", 1, 3)}),       # adjacent, different types
    (["B-PER", "B-PER"], {("PER", 0, 1), ("PER", 1, 2)}),                # B- always starts a new one
    (["I-PER", "I-PER", "B-PER"], {("PER", 0, 2), ("PER", 2, 3)}),       # IOB1
    (["O", "O"], set()),
    ([], set()),
])
def test_entity_spans(tags, spans):
    assert entity_spans(tags) == spans


def test_entity_spans_rejects_non_bio_tag():
    with pytest.raises(ValueError, match="'NOUN' is not a BIO tag"):
        entity_spans(["B-PER", "NOUN"])


# ---- token tagging -----------------------------------------------------------------------------

def test_token_metrics_bio_hand_computed():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"],  # PER right, LOC predicted as ORG
                 ["B-ORG", "I-ORG"]]                 # ORG with the wrong end
    result = token_metrics(predicted, gold)
    assert result["token_accuracy"] == pytest.approx(4 / 6)
    assert result["entity_f1"] == pytest.approx(1 / 3)  # 3 found, 3 expected, 1 correct
    # Tag level: B-ORG tp 1 fp 1; I-ORG fp 1; B-LOC fn 1; O tp 1 fn 1; B-PER, I-PER perfect.
    assert result["per_class"]["B-ORG"] == pytest.approx({"precision": 0.5, "recall": 1.0, "f1": 2 / 3, "support": 1})
    assert result["per_class"]["I-ORG"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert result["per_class"]["O"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert result["f1_macro"] == pytest.approx((1 + 1 + 2 / 3 + 0 + 0 + 2 / 3) / 6)
    assert_plain_json(result)


def test_entities_match_only_within_their_sentence():
    result = token_metrics([["O"], ["B-PER"]], [["B-PER"], ["O"]])
    assert result["entity_f1"] == 0.0


def test_entity_f1_accepts_conlleval_style_i_after_o():
    result = token_metrics([["O", "I-PER", "I-PER"]], [["O", "B-PER", "I-PER"]])
    assert result["entity_f1"] == 1.0
    assert result["token_accuracy"] == pytest.approx(2 / 3)


def test_non_bio_tag_set_has_no_entity_f1():
    gold = [["DET", "NOUN", "VERB"], ["NOUN"]]
    predicted = [["DET", "VERB", "VERB"], ["NOUN"]]
    result = token_metrics(predicted, gold)
    assert set(result) == {"token_accuracy", "f1_macro", "per_class"}
    assert result["token_accuracy"] == pytest.approx(3 / 4)
    assert result["per_class"]["NOUN"] == pytest.approx({"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2})
    assert result["f1_macro"] == pytest.approx((1 + 2 / 3 + 2 / 3) / 3)


@pytest.mark.parametrize("predicted, gold, message", [
    ([], [], "No tokens"),
    ([[]], [[]], "No tokens"),
    ([["O"]], [["O"], ["O"]], "1 sentences"),
    ([["O", "O"]], [["O"]], "Sentence 0 has 2 predicted tags but 1 gold"),
])
def test_token_metrics_rejects_bad_input(predicted, gold, message):
    with pytest.raises(ValueError, match=message):
        token_metrics(predicted, gold)


# ---- scoring -----------------------------------------------------------------------------------

def test_scoring_hand_computed_with_ties():
    # errors -1, 0, -1, 2; targets hold a tie (2, 2) whose ranks are both 1.5.
    result = scoring_metrics([1, 2, 3, 5], [2, 2, 4, 3])
    assert result["mse"] == pytest.approx(6 / 4)
    assert result["mae"] == pytest.approx(4 / 4)
    assert result["pearson"] == pytest.approx(2.75 / math.sqrt(8.75 * 2.75))
    # ranks [1, 2, 3, 4] vs [1.5, 1.5, 4, 3]
    assert result["spearman"] == pytest.approx(3.5 / math.sqrt(5 * 4.5))
    assert_plain_json(result)


def test_spearman_is_one_for_any_increasing_relation():
    result = scoring_metrics([1, 2, 3, 4], [1, 4, 9, 100])
    assert result["spearman"] == pytest.approx(1.0)
    assert result["pearson"] < 0.9
    assert scoring_metrics([1, 2, 3], [3, 2, 1])["pearson"] == pytest.approx(-1.0)


def test_constant_input_gives_zero_correlation_not_nan():
    # 0.1 is not exact in binary: centring it leaves rounding noise that must not become a correlation.
    result = scoring_metrics([0.1, 0.1, 0.1], [1.0, 2.0, 3.0])
    assert result["pearson"] == 0.0 and result["spearman"] == 0.0
    assert result["mse"] == pytest.approx(((0.9 ** 2) + (1.9 ** 2) + (2.9 ** 2)) / 3)
    assert scoring_metrics([5.0], [3.0]) == {"mse": 4.0, "mae": 2.0, "pearson": 0.0, "spearman": 0.0}


def test_scoring_matches_scipy_with_ties():
    from scipy import stats  # in the dev extra: a missing install fails instead of skipping

    rng = np.random.default_rng(1)
    predictions, targets = rng.integers(0, 5, 40).astype(float), rng.normal(size=40).round(1)
    result = scoring_metrics(predictions, targets)
    assert result["pearson"] == pytest.approx(stats.pearsonr(predictions, targets)[0])
    assert result["spearman"] == pytest.approx(stats.spearmanr(predictions, targets)[0])


def test_pearson_matches_numpy_corrcoef():
    rng = np.random.default_rng(2)
    predictions, targets = rng.normal(size=30), rng.normal(size=30)
    expected = np.corrcoef(predictions, targets)[0, 1]
    assert scoring_metrics(predictions, targets)["pearson"] == pytest.approx(expected)


@pytest.mark.parametrize("predictions, targets, message", [
    ([], [], "non-empty"),
    ([1.0, 2.0], [1.0], "differ in length"),
])
def test_scoring_rejects_bad_input(predictions, targets, message):
    with pytest.raises(ValueError, match=message):
        scoring_metrics(predictions, targets)
