"""Zero-shot scoring: causal log-likelihoods and pseudo-log-likelihoods against hand computations,
invariance to padding and batch size, long texts, minimal pairs and their command line."""
from __future__ import annotations

import json

import pytest
import torch

from model_foundry.cli.main import main
from model_foundry.errors import UserError
from model_foundry.inference.scoring import minimal_pair_accuracy, score_texts, window_start
from model_foundry.models import create_model
from model_foundry.tokenizer import train_tokenizer
from tests.conftest import says

TEXTS = ["the cat sat on the mat .", "a dog .", "to be or not to be , that is the question we ask ."]


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer("char", 64, texts=iter(TEXTS * 5), min_frequency=1)


def tiny(arch: str, tokenizer, block_size: int = 64, **values):
    torch.manual_seed(0)
    sizes = {"n_layer": 2, "n_head": 2, "n_embd": 32, "block_size": block_size}
    if arch in ("lstm", "gru", "rnn"):
        sizes = {"n_layer": 1, "n_embd": 16, "hidden_size": 24}
    return create_model(arch, vocab_size=tokenizer.vocab_size, pad_token_id=tokenizer.pad_id, dropout=0.0,
                        **sizes, **values).eval()


def causal_by_hand(model, tokenizer, text: str) -> list[float]:
    ids = tokenizer.encode(text)
    logits = model(torch.tensor([[tokenizer.eos_id, *ids]])).logits[0, :-1]
    return logits.log_softmax(-1).gather(-1, torch.tensor(ids)[:, None])[:, 0].tolist()


def pll_by_hand(model, tokenizer, text: str, width: int | None = None) -> list[float]:
    ids = tokenizer.encode(text)
    values = []
    for i, token in enumerate(ids):
        start = window_start(i, len(ids), width)
        window = list(ids[start:start + width] if width else ids)
        window[i - start] = tokenizer.mask_id
        row = torch.tensor([[tokenizer.cls_id, *window, tokenizer.sep_id]])
        values.append(model(row).logits[0, i - start + 1].log_softmax(-1)[token].item())
    return values


@torch.no_grad()
def test_causal_log_likelihood_matches_a_hand_computation(tokenizer):
    model = tiny("gpt", tokenizer)
    [score] = score_texts(model, tokenizer, [TEXTS[0]], precision="fp32")
    expected = causal_by_hand(model, tokenizer, TEXTS[0])
    assert score.num_tokens == len(tokenizer.encode(TEXTS[0])) == len(score.token_logprobs)
    assert score.token_logprobs == pytest.approx(expected, abs=1e-5)
    assert score.log_likelihood == pytest.approx(sum(expected), abs=1e-4)


@torch.no_grad()
def test_pseudo_log_likelihood_matches_a_hand_computation(tokenizer):
    model = tiny("bert", tokenizer)
    [score] = score_texts(model, tokenizer, [TEXTS[1]], precision="fp32")
    assert score.token_logprobs == pytest.approx(pll_by_hand(model, tokenizer, TEXTS[1]), abs=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("arch, values, objective", [
    ("gpt", {}, None), ("bert", {}, None), ("lstm", {}, None), ("lstm", {"bidirectional": True}, None),
    ("hybrid", {}, "clm"), ("hybrid", {}, "mlm"), ("gpt", {"attention_type": "bidirectional"}, None)])
@torch.no_grad()
def test_padding_and_batch_size_change_no_score(tokenizer, arch, values, objective):
    model = tiny(arch, tokenizer, **values)
    alone = [score_texts(model, tokenizer, [text], objective, batch_size=1, precision="fp32")[0] for text in TEXTS]
    together = score_texts(model, tokenizer, TEXTS, objective, batch_size=64, precision="fp32")
    for one, batched in zip(alone, together):
        assert batched.token_logprobs == pytest.approx(one.token_logprobs, abs=1e-5)


@pytest.mark.slow
@torch.no_grad()
def test_a_text_longer_than_the_context_is_scored_whole_with_a_sliding_window(tokenizer):
    model = tiny("gpt", tokenizer, block_size=8)
    text = TEXTS[2]  # 50 characters: 7 windows of 8 tokens
    ids = tokenizer.encode(text)
    [score] = score_texts(model, tokenizer, [text], precision="fp32")
    assert score.num_tokens == len(ids)
    stream = [tokenizer.eos_id, *ids]
    expected = []
    for i, token in enumerate(ids):  # windows start every 4 tokens; token i is read in the first one that
        start = 0 if i < 8 else (i - 8) // 4 * 4 + 4  # holds it after the part an earlier window scored
        logits = model(torch.tensor([stream[start:i + 1]])).logits[0, -1]
        expected.append(logits.log_softmax(-1)[token].item())
    assert score.token_logprobs == pytest.approx(expected, abs=1e-5)
    masked = tiny("bert", tokenizer, block_size=8)
    [pll] = score_texts(masked, tokenizer, [text], precision="fp32")
    assert pll.token_logprobs == pytest.approx(pll_by_hand(masked, tokenizer, text, width=6), abs=1e-5)


def test_ties_count_as_wrong(tokenizer):
    model = tiny("gpt", tokenizer)
    assert minimal_pair_accuracy(model, tokenizer, [(TEXTS[0], TEXTS[0])], precision="fp32") == 0.0
    pairs = [(TEXTS[0], TEXTS[0] + " ."), (TEXTS[0] + " .", TEXTS[0])]
    assert minimal_pair_accuracy(model, tokenizer, pairs, precision="fp32") == 0.5  # one of them must win


def test_a_model_without_a_language_model_head_is_refused(tokenizer):
    from model_foundry.models import TaskHeadConfig, TaskModel, create_config

    _, settings = create_config("gpt", vocab_size=tokenizer.vocab_size, n_layer=1, n_head=1, n_embd=8, block_size=8)
    classifier = TaskModel("gpt", settings, TaskHeadConfig(task="sequence_classification", num_outputs=2,
                                                           labels=["0", "1"], pooler="last"))
    with pytest.raises(UserError, match="no language-model head"):
        score_texts(classifier, tokenizer, ["a dog ."])
    with pytest.raises(UserError, match="--objective mlm"):
        score_texts(tiny("gpt", tokenizer), tokenizer, ["a dog ."], objective="mlm")


# ---- the command line on trained runs ---------------------------------------------------------------

AGREEMENT = [("the cat sat on the mat .", "the cat sat on the mat mat ."),
             ("to be or not to be .", "to be or not to to be .")]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from tests.conftest import train_tiny_runs

    root = tmp_path_factory.mktemp("scoring")
    trained = train_tiny_runs(root, TEXTS, ("gpt", "bert", "hybrid", "lstm"),
                              training={"max_steps": 30, "eval_interval": 30})
    pairs = root / "pairs"
    pairs.mkdir()
    for name in ("agreement", "repetition"):
        (pairs / f"{name}.jsonl").write_text("\n".join(json.dumps({"sentence_good": g, "sentence_bad": b})
                                                       for g, b in AGREEMENT) + "\n", encoding="utf-8")
    return trained, pairs


@pytest.mark.slow
@pytest.mark.parametrize("arch, objective", [("gpt", None), ("bert", None), ("hybrid", "clm"), ("hybrid", "mlm"),
                                             ("lstm", None)])
def test_eval_minimal_pairs_prints_and_writes_accuracies(runs, tmp_path, capsys, arch, objective):
    trained, pairs = runs
    out = tmp_path / "out.json"
    extra = ["--objective", objective] if objective else []
    assert main(["eval", str(trained[arch]), "--minimal-pairs", str(pairs), "--json", str(out), *extra]) == 0
    report = json.loads(out.read_text())
    assert set(report) == {"overall", "files", "pairs", "model"}
    assert set(report["files"]) == {"agreement", "repetition"} and report["pairs"] == 4
    assert report["overall"] == pytest.approx(sum(report["files"].values()) / 2)
    printed = capsys.readouterr().out
    assert "agreement" in printed and "overall" in printed


@pytest.mark.slow
def test_a_pair_file_with_a_missing_field_exits_2_naming_it(runs, tmp_path, capsys):
    trained, _ = runs
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"sentence_good": "a dog ."}\n{"good": "x", "bad": "y"}\n', encoding="utf-8")
    assert main(["eval", str(trained["gpt"]), "--minimal-pairs", str(bad)]) == 2
    err = capsys.readouterr().err
    assert says(err, f"{bad}:1") and "'sentence_bad'" in err and "Traceback" not in err
    assert main(["eval", str(trained["gpt"]), "--minimal-pairs", str(bad), "--good-field", "good",
                 "--bad-field", "bad"]) == 2  # line 1 lacks the renamed fields
    assert says(capsys.readouterr().err, f"{bad}:1")


@pytest.mark.slow
def test_score_writes_one_row_per_text(runs, tmp_path, capsys):
    trained, _ = runs
    texts = tmp_path / "texts.txt"
    texts.write_text("a dog .\n\nthe cat sat on the mat .\n", encoding="utf-8")
    out = tmp_path / "scores.jsonl"
    assert main(["score", str(trained["gpt"]), "--input", str(texts), "--output", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["text"] for row in rows] == ["a dog .", "the cat sat on the mat ."]
    assert all(set(row) == {"text", "log_likelihood", "num_tokens", "token_logprobs"} for row in rows)
    assert all(row["num_tokens"] == len(row["token_logprobs"]) and row["log_likelihood"] < 0 for row in rows)
    assert main(["score", str(trained["bert"]), "--text", "a dog ."]) == 0
    assert json.loads(capsys.readouterr().out)["num_tokens"] == 7


def test_the_builtin_pairs_are_fourteen_files_of_one_word_swaps():
    from model_foundry.inference.pair_evaluation import QUICKSTART_SUBSET, pair_files

    files = pair_files(["builtin"])
    assert len(files) == 14 and all(len(file.pairs) == 100 for file in files)
    for file in files:
        for good, bad in file.pairs:
            different = [(g, b) for g, b in zip(good.split(), bad.split()) if g != b]
            assert len(good.split()) == len(bad.split()) and len(different) == 1, (file.name, good, bad)
    [quickstart] = pair_files([str(QUICKSTART_SUBSET)])
    assert len(quickstart.pairs) == 100
