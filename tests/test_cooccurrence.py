"""PPMI-SVD token vectors (data.cooccurrence), the embeddings they initialise (model.init_embeddings:
ppmi) and the quickstart's `ppmi` reference."""
from __future__ import annotations

import csv
import math
import random

import numpy as np
import pytest
import torch

import model_foundry
from model_foundry.models import BaseLanguageModel
from model_foundry.config import load_config
from model_foundry.data.cooccurrence import (cooccurrence_counts, mean_vectors, ppmi, ppmi_svd_vectors,
                                             sparse_matrix, svd_vectors)
from model_foundry.errors import UserError
from model_foundry.quickstart.ppmi_reference import ppmi_reference_accuracy
from model_foundry.tokenizer import load_any_tokenizer, train_tokenizer
from model_foundry.training import run as run_module
from model_foundry.training.embedding_init import units_before_tail
from model_foundry.training.run import build_trainer, resolved_config
from tests.conftest import says, tiny_config

# [0, 1, 0]: ordered pairs of positions give [0,1] and [1,0] twice each and [0,0] twice;
# [0, 2]: [0,2] and [2,0]; [1, 2, 3]: every off-diagonal pair of 1, 2, 3 once.
UNITS = [[0, 1, 0], [0, 2], [1, 2, 3]]
COUNTS = np.array([[2, 2, 1, 0],
                   [2, 0, 1, 1],
                   [1, 1, 0, 1],
                   [0, 1, 1, 0]], dtype=np.float64)  # row totals 5, 4, 3, 2; total 14


def dense(matrix: torch.Tensor) -> np.ndarray:
    return matrix.to_dense().numpy()


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_counts_pair_every_two_positions_of_a_unit():
    assert np.array_equal(dense(cooccurrence_counts(UNITS, 4)), COUNTS)


def test_a_window_counts_only_near_positions_and_ignored_ids_drop_out():
    # Within one position, [0, 1, 0] pairs 0 with 1 twice and never 0 with the other 0.
    windowed = dense(cooccurrence_counts([[0, 1, 0]], 3, window=1))
    assert windowed[0, 1] == windowed[1, 0] == 2 and windowed[0, 0] == 0
    assert dense(cooccurrence_counts(UNITS, 4, ignore_ids=[0])).sum(axis=0)[0] == 0


@pytest.mark.parametrize("window", [None, 1, 3])
def test_counts_of_units_of_mixed_lengths_match_a_pair_by_pair_count(window):
    rng = random.Random(0)
    units = [[rng.randrange(9) for _ in range(rng.choice([0, 1, 2, 5, 11]))] for _ in range(40)]
    expected = np.zeros((9, 9))
    for unit in units:
        for i, a in enumerate(unit):
            for j, b in enumerate(unit):
                if i != j and (window is None or abs(i - j) <= window):
                    expected[a, b] += 1
    assert np.array_equal(dense(cooccurrence_counts(units, 9, window=window)), expected)


def test_ppmi_without_smoothing_is_log_of_observed_over_expected():
    expected = np.zeros((4, 4))
    # log(count x total / (row total x column total)), only where positive
    expected[0, 0] = math.log(2 * 14 / (5 * 5))
    expected[0, 1] = expected[1, 0] = math.log(2 * 14 / (5 * 4))
    expected[1, 2] = expected[2, 1] = math.log(14 / (4 * 3))
    expected[1, 3] = expected[3, 1] = math.log(14 / (4 * 2))
    expected[2, 3] = expected[3, 2] = math.log(14 / (3 * 2))
    # [0, 2]: log(14 / 15) < 0, clipped to zero
    assert np.allclose(dense(ppmi(cooccurrence_counts(UNITS, 4), alpha=1.0)), expected, rtol=0, atol=1e-12)


def test_ppmi_smooths_the_context_distribution_with_alpha():
    context = np.array([5, 4, 3, 2]) ** 0.75
    context /= context.sum()
    row = np.array([5, 4, 3, 2]) / 14
    pmi = np.log(np.where(COUNTS > 0, COUNTS, 1) / 14 / (row[:, None] * context[None, :]))
    expected = np.where((COUNTS > 0) & (pmi > 0), pmi, 0.0)
    smoothed = dense(ppmi(cooccurrence_counts(UNITS, 4)))
    assert np.allclose(smoothed, expected, rtol=0, atol=1e-12)
    # The smoothing changes which pairs count: [0, 2] is positive with it (a rare context gains mass).
    assert smoothed[2, 0] > 0 and not np.allclose(smoothed, dense(ppmi(cooccurrence_counts(UNITS, 4), alpha=1.0)))


def test_svd_vectors_reproduce_the_dense_rank_k_factorisation():
    # rank 5 with well separated singular values, plus a little noise
    generator = torch.Generator().manual_seed(0)
    basis = torch.linalg.qr(torch.randn(30, 5, generator=generator)).Q
    values = basis @ torch.diag(torch.tensor([10.0, 8.0, 6.0, 4.0, 2.0])) @ basis.t()
    values = values + 0.01 * torch.rand(30, 30, generator=generator)
    rows, cols = values.nonzero(as_tuple=True)
    vectors = svd_vectors(sparse_matrix(rows, cols, values[rows, cols], (30, 30)), dim=5).double()
    u, s, _ = torch.linalg.svd(values.double())
    # U S U^T is the same whatever the singular vectors' signs
    assert torch.allclose(vectors @ vectors.t(), (u[:, :5] * s[:5]) @ u[:, :5].t(), atol=1e-3)


def test_a_token_that_never_co_occurs_gets_zeros_and_dim_beyond_rank_is_zero():
    vectors = ppmi_svd_vectors([[1, 2], [2, 3]], vocab_size=6, dim=5)
    assert vectors.shape == (6, 5)
    assert vectors[[0, 4, 5]].abs().sum() == 0 and vectors[:, 3:].abs().sum() == 0
    assert vectors[[1, 2, 3]].abs().sum(dim=1).min() > 0


def group_units(groups: list[list[int]], count: int, length: int, seed: int = 0) -> list[list[int]]:
    """Units that each draw their tokens from one group only."""
    rng = random.Random(seed)
    return [rng.choices(groups[i % len(groups)], k=length) for i in range(count)]


def test_tokens_sharing_sentences_get_closer_vectors_than_tokens_that_never_do():
    a, b = list(range(1, 6)), list(range(6, 11))
    vectors = ppmi_svd_vectors(group_units([a, b], 200, 4), vocab_size=11, dim=4)
    within = [cosine(vectors[i], vectors[j]) for g in (a, b) for i in g for j in g if i < j]
    across = [cosine(vectors[i], vectors[j]) for i in a for j in b]
    # the two groups' PPMI blocks are disjoint, so across-group vectors are orthogonal (0.36 > 0.0)
    assert min(within) > max(across) + 0.25 and max(map(abs, across)) < 1e-4, (min(within), across)


def test_the_same_units_give_the_same_vectors():
    units = group_units([[1, 2, 3], [4, 5, 6]], 50, 3)
    assert torch.equal(ppmi_svd_vectors(units, 7, dim=3), ppmi_svd_vectors(units, 7, dim=3))


def test_mean_vectors_average_only_tokens_that_have_a_vector():
    vectors = torch.tensor([[0.0, 0.0], [1.0, 3.0], [3.0, 1.0]])
    assert torch.equal(mean_vectors([[0, 1, 2], [0]], vectors), torch.tensor([[2.0, 2.0], [0.0, 0.0]]))


def test_the_validation_tail_is_left_out():
    units = [[1] * 4, [2] * 4, [3] * 2]  # 10 tokens: a val_fraction of 0.2 holds out the last 2 and more
    assert units_before_tail(units, 0.2) == [[1] * 4, [2] * 4]
    assert units_before_tail(units, 0.3) == [[1] * 4]


# ---- model.init_embeddings: ppmi ------------------------------------------------------------------

GROUP_LINES = ["abcde " * 3, "edcba " * 3, "vwxyz " * 3, "zyxwv " * 3]


@pytest.fixture
def group_corpus(tmp_path):
    """Lines that use either the letters a-e or v-z, never both (a char tokenizer's tokens)."""
    rng = random.Random(0)
    lines = [" ".join("".join(rng.choices("abcde" if i % 2 else "vwxyz", k=5)) for _ in range(3))
             for i in range(200)]
    path = tmp_path / "groups.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def ppmi_config(corpus, tmp_path, **training):
    return tiny_config(corpus, tmp_path / "experiments", "bert", model={"init_embeddings": "ppmi"},
                       training={"max_steps": 30, "eval_interval": 30, "log_interval": 1, **training})


def fresh_trainer(config: dict, tmp_path):
    loaded = resolved_config(load_config(config).config)
    return build_trainer(loaded, tmp_path / "run")


def test_ppmi_init_puts_letters_that_share_lines_closer_in_the_embedding(group_corpus, tmp_path, capsys):
    trainer = fresh_trainer(ppmi_config(group_corpus, tmp_path), tmp_path)
    # 200 lines, val_fraction 0.1: the last 20 are the validation tail
    assert says(capsys.readouterr().err, "co-occurrence in 180 units")
    tokenizer = trainer.task.tokenizer
    weight = trainer.model.get_input_embeddings().weight.detach()
    rows = {letter: weight[tokenizer.token_to_id(letter)] for letter in "abcdevwxyz"}
    within = [cosine(rows[x], rows[y]) for group in ("abcde", "vwxyz") for x in group for y in group if x < y]
    across = [cosine(rows[x], rows[y]) for x in "abcde" for y in "vwxyz"]
    assert min(within) > max(across) + 0.5, (min(within), max(across))
    # one scale for the whole matrix: the random init's std (bert: 0.02)
    letters = torch.stack(list(rows.values()))
    assert 0.005 < float(letters.std()) < 0.08


@pytest.mark.parametrize("arch", ["gpt", "lstm", "hybrid", "electra"])
def test_every_architecture_gets_the_vectors(group_corpus, tmp_path, arch):
    config = ppmi_config(group_corpus, tmp_path)
    config["model"]["architecture"] = arch
    if arch == "lstm":
        del config["model"]["n_head"]
    model = fresh_trainer(config, tmp_path).model
    tokenizer = load_any_tokenizer(tmp_path / "run" / "tokenizer")
    weight = model.get_input_embeddings().weight.detach()
    a, b, v = (weight[tokenizer.token_to_id(x)] for x in "abv")
    assert cosine(a, b) > cosine(a, v) + 0.3, (cosine(a, b), cosine(a, v))


def test_a_finetuning_run_from_scratch_counts_every_training_row(group_corpus, tmp_path, capsys):
    lines = group_corpus.read_text(encoding="utf-8").splitlines()
    table = tmp_path / "train.tsv"
    table.write_text("text\tlabel\n" + "".join(f"{line}\t{i % 2}\n" for i, line in enumerate(lines)), encoding="utf-8")
    config = ppmi_config(table, tmp_path)
    config["experiment"]["kind"] = "finetuning"
    config["task"] = {"type": "sequence_classification"}
    trainer = fresh_trainer(config, tmp_path)
    tokenizer = trainer.task.tokenizer
    weight = trainer.model.get_input_embeddings().weight.detach()
    a, b, v = (weight[tokenizer.token_to_id(x)] for x in "abv")
    assert cosine(a, b) > cosine(a, v) + 0.3, (cosine(a, b), cosine(a, v))
    assert says(capsys.readouterr().err, "co-occurrence in 200 units")  # no validation tail held out


def test_without_the_key_the_embedding_stays_random(group_corpus, tmp_path):
    config = ppmi_config(group_corpus, tmp_path)
    config["model"]["init_embeddings"] = "random"
    trainer = fresh_trainer(config, tmp_path)
    tokenizer = trainer.task.tokenizer
    weight = trainer.model.get_input_embeddings().weight.detach()
    a, v = (weight[tokenizer.token_to_id(x)] for x in "av")
    b = weight[tokenizer.token_to_id("b")]
    assert abs(cosine(a, b)) < 0.6 and abs(cosine(a, v)) < 0.6  # 32 random dimensions


@pytest.mark.parametrize("clash, values", [
    ("transfer.init_from_checkpoint", {"transfer": {"init_from_checkpoint": "some_run"}}),
    ("training.resume_from", {"training": {"resume_from": "some_run"}}),
])
def test_loading_pretrained_weights_over_the_ppmi_init_is_refused(group_corpus, tmp_path, clash, values):
    config = ppmi_config(group_corpus, tmp_path)
    for section, keys in values.items():
        config.setdefault(section, {}).update(keys)
    with pytest.raises(UserError) as error:
        load_config(config)
    assert "model.init_embeddings" in str(error.value) and clash in str(error.value)


def test_a_checkpoint_s_architecture_with_random_weights_may_take_the_vectors(group_corpus, tmp_path):
    """transfer.load_weights: false loads no weights: the scratch control with counted embeddings."""
    config = ppmi_config(group_corpus, tmp_path)
    config["transfer"] = {"init_from_checkpoint": "some_run", "load_weights": False}
    assert load_config(config).config.model.init_embeddings == "ppmi"


def test_a_pt_corpus_is_refused_with_the_file_named(tmp_path):
    from model_foundry.config import FoundryConfig
    from model_foundry.training.embedding_init import training_units

    path = tmp_path / "ids.pt"
    path.write_bytes(b"")
    config = FoundryConfig.model_validate({"data": {"train": {"path": str(path)}}})
    with pytest.raises(UserError) as error:
        training_units(config, tokenizer=None, hold_out_tail=True)
    assert "ids.pt" in str(error.value) and "model.init_embeddings" in str(error.value)


@pytest.mark.slow
def test_a_ppmi_initialised_run_trains_and_resuming_keeps_its_embedding(group_corpus, tmp_path, monkeypatch):
    config = ppmi_config(group_corpus, tmp_path)
    model_foundry.train(config)
    run = tmp_path / "experiments" / "pretraining" / "tiny_bert"
    with open(run / "metrics" / "train.csv", newline="") as handle:
        losses = [float(row["loss"]) for row in csv.DictReader(handle)]
    assert losses[-1] < losses[0] - 0.25, losses  # fp32: 2.89 -> 2.48 (random letters: little to learn)
    calls = []
    monkeypatch.setattr(run_module, "init_embeddings_from_corpus", lambda *args: calls.append(args))
    resumed = build_trainer(resolved_config(load_config(config, ["training.resume=true"]).config), run)
    trained = BaseLanguageModel.from_pretrained(run / "checkpoints" / "last")
    assert calls == [] and resumed.counters.step == 30
    assert torch.equal(resumed.model.get_input_embeddings().weight, trained.get_input_embeddings().weight)
    build_trainer(resolved_config(load_config(config).config), tmp_path / "another")
    assert len(calls) == 1  # the spy does see a fresh start


# ---- the quickstart's ppmi reference -----------------------------------------------------------

POSITIVE = ["good", "great", "fine", "lovely", "superb", "nice"]
NEGATIVE = ["bad", "awful", "poor", "dull", "boring", "weak"]
NEUTRAL = ["the", "film", "was", "plot", "and", "acting"]


def sentiment_sentences(count: int, seed: int) -> tuple[list[str], list[str]]:
    """Sentences of neutral words and words of one polarity group; the group is the label."""
    rng = random.Random(seed)
    texts, labels = [], []
    for _ in range(count):
        label = rng.choice(["pos", "neg"])
        words = rng.choices(POSITIVE if label == "pos" else NEGATIVE, k=2) + rng.choices(NEUTRAL, k=4)
        rng.shuffle(words)
        texts.append(" ".join(words))
        labels.append(label)
    return texts, labels


def test_the_ppmi_reference_beats_the_majority_class_on_word_groups():
    unlabelled, _ = sentiment_sentences(400, seed=0)
    train_texts, train_labels = sentiment_sentences(100, seed=1)
    test_texts, test_labels = sentiment_sentences(200, seed=2)
    tokenizer = train_tokenizer("wordpiece", 100, texts=unlabelled)
    majority = max(test_labels.count(label) for label in set(test_labels)) / len(test_labels)
    accuracy = ppmi_reference_accuracy(train_texts, train_labels, unlabelled, test_texts, test_labels, tokenizer,
                                       dim=16)
    assert accuracy > majority + 0.3, (accuracy, majority)  # 0.985 against 0.51
    assert accuracy == ppmi_reference_accuracy(train_texts, train_labels, unlabelled, test_texts, test_labels,
                                               tokenizer, dim=16)
