"""Sentence vectors (`foundry embed`, `model_foundry.embed`) and zero-shot similarity (`foundry eval
--similarity`): poolers per architecture, independence from batching, the correlations against hand
computations and scipy, the command line, and each bad input file's one-paragraph error."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import model_foundry
from model_foundry.cli.main import main
from model_foundry.errors import UserError
from model_foundry.inference.embedding import embed_texts, read_texts
from model_foundry.inference.similarity import (average_ranks, cosine_similarities, pearson, read_similarity_pairs,
                                                spearman)
from model_foundry.models import TaskHeadConfig, TaskModel, create_config, create_model
from model_foundry.tokenizer import train_tokenizer
from tests.conftest import says, tiny_config, train_tiny_runs

TEXTS = ["the cat sat on the mat .", "a dog .", "to be or not to be , that is the question we ask .", "hi"]
WORDS = ["the", "cat", "dog", "sat", "ran", "on", "mat", "a", "big", "red", "fox", "jumps", "over", "lazy"]
# (architecture, model settings): every kind of backbone that pools a sentence.
BACKBONES = [("gpt", {}), ("bert", {}), ("electra", {}), ("hybrid", {}), ("lstm", {}),
             ("lstm", {"bidirectional": True}), ("gpt", {"attention_type": "bidirectional"})]


# ---- correlations ---------------------------------------------------------------------------------

def test_pearson_and_spearman_match_hand_computed_values():
    # x = 1, 2, 3; y = 2, 4, 7: covariance sum 5, squared deviations 2 and 114/9.
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(5 / np.sqrt(2 * 114 / 9), abs=1e-12)
    assert average_ranks([10, 20, 20, 5]).tolist() == [2.0, 3.5, 3.5, 1.0]
    # ranks of x: 1, 2.5, 2.5, 4; of y: 1, 2, 3, 4 -> Pearson of the ranks, by hand: 4.5 / sqrt(4.5 * 5).
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / np.sqrt(4.5 * 5), abs=1e-12)
    assert spearman([1, 2, 3, 4], [1, 4, 9, 16]) == 1.0  # monotone, not linear
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)


def test_spearman_with_ties_agrees_with_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.integers(0, 5, size=30).astype(float)  # many ties
        y = x + rng.normal(size=30)
        assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y).statistic, abs=1e-12)
        assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y).statistic, abs=1e-12)


def test_a_constant_side_is_refused_not_nan():
    with pytest.raises(UserError, match="constant"):
        pearson([0.5, 0.5, 0.5], [1, 2, 3])


def test_cosine_of_rows():
    first = np.array([[1.0, 0.0], [1.0, 1.0], [0.0, 0.0]])
    second = np.array([[0.0, 2.0], [2.0, 2.0], [1.0, 0.0]])
    assert cosine_similarities(first, second).tolist() == pytest.approx([0.0, 1.0, 0.0])


# ---- vectors of models in hand --------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer("char", 64, texts=iter(TEXTS * 5))


def tiny(arch: str, tokenizer, **values):
    torch.manual_seed(0)
    sizes = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": 64}
    if arch == "lstm":
        sizes = {"n_layer": 1, "n_embd": 16, "hidden_size": 24}
    return create_model(arch, vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id, dropout=0.0,
                        **{**sizes, **values})


def classifier(tokenizer, pooler: str = "attention") -> TaskModel:
    torch.manual_seed(0)
    _, settings = create_config("bert", vocab_size=tokenizer.vocab_size, n_layer=2, n_head=2, n_embd=32,
                                block_size=64, dropout=0.0)
    return TaskModel("bert", settings, TaskHeadConfig(task="sequence_classification", num_outputs=2,
                                                      labels=["0", "1"], pooler=pooler, head_dropout=0.0))


@pytest.mark.parametrize("arch, values", BACKBONES)
def test_vectors_have_the_backbone_width_and_ignore_batching_and_padding(tokenizer, arch, values):
    model = tiny(arch, tokenizer, **values)
    together = embed_texts(model, tokenizer, TEXTS, batch_size=64)
    assert together.shape == (len(TEXTS), model.backbone.hidden_size) and together.dtype == np.float32
    assert np.isfinite(together).all()
    alone = np.stack([embed_texts(model, tokenizer, [text], batch_size=1)[0] for text in TEXTS])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    # the short text next to a long one (much padding) gets the vector it gets alone
    padded = embed_texts(model, tokenizer, [TEXTS[2] * 2, TEXTS[3]], batch_size=2)[1]
    np.testing.assert_allclose(padded, alone[3], atol=1e-5)
    assert not np.allclose(together[0], together[1], atol=1e-3)  # the vector depends on the text


@pytest.mark.parametrize("arch, values", BACKBONES)
def test_the_pooler_choice_changes_the_vectors(tokenizer, arch, values):
    model = tiny(arch, tokenizer, **values)
    mean = embed_texts(model, tokenizer, TEXTS, pooler="mean")
    last = embed_texts(model, tokenizer, TEXTS, pooler="last")
    assert np.abs(mean - last).max() > 1e-3
    natural = embed_texts(model, tokenizer, TEXTS)
    causal = arch == "lstm" and not values or arch == "gpt" and not values
    np.testing.assert_array_equal(natural, last if causal else mean)


def test_mean_pooling_is_the_average_of_the_real_tokens(tokenizer):
    model = tiny("bert", tokenizer).eval()
    ids = torch.tensor([tokenizer.encode_for_model(TEXTS[1])])
    with torch.no_grad():
        hidden, _ = model.backbone(ids, None, None, False)
    np.testing.assert_allclose(embed_texts(model, tokenizer, TEXTS[:2])[1], hidden[0].mean(0).numpy(), atol=1e-6)


def test_a_classifier_embeds_with_its_own_pooler(tokenizer):
    model = classifier(tokenizer).eval()
    fed_to_head = []
    model.head.register_forward_hook(lambda module, inputs, output: fed_to_head.append(inputs[0]))
    ids = torch.tensor([tokenizer.encode_for_model(TEXTS[0])])
    with torch.no_grad():
        model(ids)
    natural = embed_texts(model, tokenizer, TEXTS[:1])
    np.testing.assert_allclose(natural[0], fed_to_head[0][0].numpy(), atol=1e-6)
    assert np.abs(natural - embed_texts(model, tokenizer, TEXTS[:1], pooler="mean")).max() > 1e-3


def test_cls_pooling_takes_the_first_token_and_is_refused_on_a_causal_model(tokenizer):
    model = tiny("bert", tokenizer).eval()
    ids = torch.tensor([tokenizer.encode_for_model(TEXTS[0])])
    with torch.no_grad():
        hidden, _ = model.backbone(ids, None, None, False)
    np.testing.assert_allclose(embed_texts(model, tokenizer, TEXTS[:1], pooler="cls")[0], hidden[0, 0].numpy(),
                               atol=1e-6)
    with pytest.raises(UserError) as refused:
        embed_texts(tiny("gpt", tokenizer), tokenizer, TEXTS, pooler="cls")
    assert says(str(refused.value), "this model is causal") and says(str(refused.value), "--pooler last")


def test_a_text_longer_than_the_context_is_cut_with_a_warning(tokenizer, capsys):
    model = tiny("gpt", tokenizer, block_size=16)
    vectors = embed_texts(model, tokenizer, [TEXTS[2] * 3, TEXTS[1]])
    assert vectors.shape == (2, 32) and np.isfinite(vectors).all()
    assert says(capsys.readouterr().err, "1 of 2 text(s) were cut to 16 tokens")


# ---- input files ----------------------------------------------------------------------------------

def test_texts_come_from_lines_or_a_column(tmp_path):
    lines = tmp_path / "texts.txt"
    lines.write_text("one\n\nthree\n", encoding="utf-8")
    assert read_texts(lines) == ["one", "", "three"]  # row i of the vectors is line i + 1
    table = tmp_path / "texts.jsonl"
    table.write_text('{"body": "a"}\n{"body": "b"}\n', encoding="utf-8")
    assert read_texts(table, "body") == ["a", "b"]
    with pytest.raises(UserError) as missing:
        read_texts(table)
    assert says(str(missing.value), f"{table}:1: there is no 'text' column (--column names it)")
    assert says(str(missing.value), "the columns here are 'body'")


def write_table(path, rows: list[dict], delimiter: str = "\t") -> None:
    columns = list(rows[0]) if rows else ["sentence1", "sentence2", "score"]
    lines = [delimiter.join(columns)] + [delimiter.join(str(row[c]) for c in columns) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_a_jsonl_row_without_a_column_is_named_by_its_line(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_text('{"sentence1": "a", "sentence2": "b", "score": 1}\n\n{"sentence1": "c", "score": 2}\n',
                    encoding="utf-8")
    with pytest.raises(UserError) as missing:
        read_similarity_pairs(path)
    assert says(str(missing.value), f"{path}:3: there is no 'sentence2' column (--sentence2-column names it); "
                                    "the columns here are 'sentence1', 'score'")


def test_similarity_files_in_every_format_read_alike(tmp_path):
    rows = [{"sentence1": "a cat", "sentence2": "a dog", "score": 3.5}, {"sentence1": "x", "sentence2": "y",
                                                                         "score": "1"}]
    write_table(tmp_path / "pairs.tsv", rows)
    write_table(tmp_path / "pairs.csv", rows, ",")
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    for name in ("pairs.tsv", "pairs.csv", "pairs.jsonl"):
        pairs = read_similarity_pairs(tmp_path / name)
        assert (pairs.first, pairs.second, pairs.gold) == (["a cat", "x"], ["a dog", "y"], [3.5, 1.0])


# ---- trained runs ---------------------------------------------------------------------------------

def sentiment(path, rows: int) -> None:
    rng = random.Random(rows)
    good, bad = ["a good film", "great fun", "i loved it"], ["a bad film", "awful fun", "i hated it"]
    lines = ["sentence\tlabel"] + [f"{rng.choice(good)}\t1" if rng.random() < 0.5 else f"{rng.choice(bad)}\t0"
                                   for _ in range(rows)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """Tiny pretraining runs of every backbone that pools, and a classifier finetuned from the bert one."""
    root = tmp_path_factory.mktemp("embed")
    training = {"max_steps": 20, "eval_interval": 20}
    trained = train_tiny_runs(root, TEXTS, ("gpt", "bert", "electra", "hybrid", "lstm"), training=training)
    corpus = root / "corpus.txt"
    model_foundry.train(tiny_config(corpus, root / "experiments", "lstm", experiment={"name": "tiny_bilstm"},
                                    model={"bidirectional": True}, task={"type": "masked_lm"}, training=training))
    trained["bilstm"] = root / "experiments" / "pretraining" / "tiny_bilstm"
    sentiment(root / "train.tsv", 64)
    sentiment(root / "dev.tsv", 16)
    finetuning = tiny_config(corpus, root / "experiments", "bert", experiment={"name": "classifier",
                                                                                "kind": "finetuning"},
                             data={"train": str(root / "train.tsv"), "val": str(root / "dev.tsv"),
                                   "text_column": "sentence"},
                             task={"type": "sequence_classification", "pooler": "attention"},
                             transfer={"init_from_checkpoint": str(trained["bert"])}, training=training)
    del finetuning["tokenizer"], finetuning["model"], finetuning["data"]["val_fraction"]
    model_foundry.train(finetuning)
    trained["classifier"] = root / "experiments" / "finetuning" / "classifier"
    return trained


@pytest.mark.slow
@pytest.mark.parametrize("name", ["gpt", "bert", "electra", "hybrid", "lstm", "bilstm", "classifier"])
def test_every_run_embeds_alike_in_any_batch(runs, name):
    width = model_foundry.load_model(runs[name]).backbone.hidden_size
    vectors = model_foundry.embed(runs[name], TEXTS)
    assert vectors.shape == (len(TEXTS), width) and np.isfinite(vectors).all()
    np.testing.assert_allclose(model_foundry.embed(runs[name], TEXTS, batch_size=1), vectors, atol=1e-5)
    assert np.abs(model_foundry.embed(runs[name], TEXTS, pooler="mean") -
                  model_foundry.embed(runs[name], TEXTS, pooler="last")).max() > 1e-4


def sentences(count: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(2, 7))) for _ in range(count)]


def model_cosines(run, first: list[str], second: list[str]) -> np.ndarray:
    """The cosines `eval --similarity` computes: both sides embedded in one call, as it does."""
    vectors = model_foundry.embed(run, first + second)
    return cosine_similarities(vectors[:len(first)], vectors[len(first):])


def similarity_file(path, first, second, gold) -> None:
    write_table(path, [{"sentence1": a, "sentence2": b, "score": repr(float(g))}
                       for a, b, g in zip(first, second, gold)])


@pytest.mark.slow
@pytest.mark.parametrize("name", ["bert", "gpt", "classifier"])
def test_gold_equal_to_the_cosine_scores_one_and_its_negation_minus_one(runs, tmp_path, capsys, name):
    # The run itself is the "identity" embedding: gold scores are its own cosines, and the first
    # pairs are exact copies (cosine 1). Any mix-up of rows or sides would break the correlation.
    first = sentences(30, 1)
    second = first[:5] + sentences(25, 2)
    cosines = model_cosines(runs[name], first, second)
    similarity_file(tmp_path / "same.tsv", first, second, cosines)
    out = tmp_path / "report" / "similarity.json"
    assert main(["eval", str(runs[name]), "--similarity", str(tmp_path / "same.tsv"), "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert says(printed, "pearson 1.000") and says(printed, "spearman 1.000 (30 pairs)")
    report = json.loads(out.read_text())
    assert report["pearson"] == pytest.approx(1.0, abs=1e-9) and report["spearman"] == pytest.approx(1.0, abs=1e-9)
    natural = {"bert": "mean", "gpt": "last", "classifier": "attention"}[name]
    assert report["pairs"] == 30 and report["pooler"] == natural
    similarity_file(tmp_path / "opposite.tsv", first, second, -cosines)
    assert main(["eval", str(runs[name]), "--similarity", str(tmp_path / "opposite.tsv"), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["pearson"] == pytest.approx(-1.0, abs=1e-9) and report["spearman"] == pytest.approx(-1.0, abs=1e-9)


@pytest.mark.slow
def test_shuffled_gold_scores_correlate_about_zero_on_average(runs):
    first, second = sentences(40, 3), sentences(40, 4)
    cosines = model_cosines(runs["bert"], first, second)
    rng = np.random.default_rng(0)
    shuffled = [rng.permutation(cosines) for _ in range(50)]
    # one shuffle's r has a spread of about 1 / sqrt(39) = 0.16; the mean of 50 about 0.023
    assert abs(np.mean([pearson(cosines, gold) for gold in shuffled])) < 0.1
    assert abs(np.mean([spearman(cosines, gold) for gold in shuffled])) < 0.1


@pytest.mark.slow
def test_embed_command_writes_an_array_numpy_loads(runs, tmp_path, capsys):
    table = tmp_path / "texts.tsv"
    table.write_text("id\tbody\n" + "".join(f"{i}\t{text}\n" for i, text in enumerate(TEXTS)), encoding="utf-8")
    out = tmp_path / "vectors" / "texts.npy"
    assert main(["embed", str(runs["hybrid"]), "--input", str(table), "--column", "body", "--output", str(out),
                 "--pooler", "last", "--batch-size", "2", "--checkpoint", "last"]) == 0
    vectors = np.load(out)
    assert vectors.shape == (len(TEXTS), 32) and vectors.dtype == np.float32
    np.testing.assert_allclose(vectors, model_foundry.embed(runs["hybrid"], TEXTS, pooler="last", checkpoint="last"),
                               atol=1e-5)
    assert says(capsys.readouterr().out, f"Wrote 4 vectors of size 32 to {out}")


BAD_SIMILARITY_FILES = {
    "missing column": ("sentence1\ttext_b\tscore\na\tb\t1\nc\td\t2\n",
                       [":1: there is no 'sentence2' column (--sentence2-column names it)",
                        "the columns here are 'sentence1', 'text_b', 'score'"]),
    "non-numeric score": ("sentence1\tsentence2\tscore\na\tb\t1\nc\td\thigh\n",
                          [":3: the gold score 'high' in column 'score' is not a finite number"]),
    "empty file": ("", ["holds no rows"]),
    "one row": ("sentence1\tsentence2\tscore\na\tb\t1\n", ["holds one pair; a correlation needs at least 2"]),
    "constant gold": ("sentence1\tsentence2\tscore\na\tb\t2\nc\td\t2\n", ["every gold score is 2.0",
                                                                         "the scores must vary"]),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", BAD_SIMILARITY_FILES)
def test_a_bad_similarity_file_exits_2_with_one_paragraph(runs, tmp_path, capsys, case):
    content, phrases = BAD_SIMILARITY_FILES[case]
    path = tmp_path / "pairs.tsv"
    path.write_text(content, encoding="utf-8")
    out = tmp_path / "report.json"
    assert main(["eval", str(runs["bert"]), "--similarity", str(path), "--json", str(out)]) == 2
    captured = capsys.readouterr()
    assert captured.err.startswith("error:") and "Traceback" not in captured.err
    assert says(captured.err, str(path))
    for phrase in phrases:
        assert says(captured.err, phrase), captured.err
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize("arguments, phrase", [
    (["--pooler", "cls"], "this model is causal"),
    (["--output", "vectors.txt"], "give a file name ending in .npy"),
    (["--column", "body"], "texts.jsonl:1: there is no 'body' column (--column names it)")])
def test_a_bad_embed_request_exits_2_with_one_paragraph(runs, tmp_path, capsys, monkeypatch, arguments, phrase):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "texts.jsonl").write_text('{"text": "a dog ."}\n', encoding="utf-8")
    command = ["embed", str(runs["gpt"]), "--input", "texts.jsonl", "--output", "vectors.npy"]
    overridden = {flag: value for flag, value in zip(arguments[::2], arguments[1::2])}
    for flag, value in overridden.items():
        if flag in command:
            command[command.index(flag) + 1] = value
        else:
            command += [flag, value]
    assert main(command) == 2
    captured = capsys.readouterr()
    assert says(captured.err, phrase) and "Traceback" not in captured.err
    assert not (tmp_path / "vectors.npy").exists() and not (tmp_path / "vectors.txt").exists()
