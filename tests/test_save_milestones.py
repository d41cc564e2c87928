"""Checkpoints at amounts of text seen: `training.save_at_words` and `training.save_at_tokens`.

Each milestone checkpoint is written at the first optimizer step whose count reaches or passes
its amount; the steps asserted here are computed by hand from the batch (8 rows of 32 tokens a
step) and the corpus's words per token (read back from the token cache's metadata)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import model_foundry
from model_foundry.config import load_config
from model_foundry.data import CausalWindows, MaskedWindows
from model_foundry.errors import UserError
from model_foundry.inference.loading import load_model
from model_foundry.models.base import BaseLanguageModel
from tests.conftest import tiny_config

LINES = ["the cat sat on the mat and the dog sat on the log .",
         "a bird sang in the tree while the sun rose over the hill ."]
ROWS, BLOCK = 8, 32  # tiny_config's batch_size and block_size: every step trains 8 windows of 32 tokens
WORDS, TOKENS = [100, 300], [256, 300, 400]  # tokens: 256 reached exactly at step 1, 300 and 400 both at step 2


def milestone_config(root: Path, **training) -> dict:
    corpus = root / "corpus.txt"
    if not corpus.exists():
        corpus.write_text("\n".join(LINES * 40) + "\n", encoding="utf-8")
    config = tiny_config(corpus, root / "experiments", "gpt", model={"positional": "learned"})
    config["training"].update({"max_steps": 6, "eval_interval": 100, "save_interval": 2, "keep_last_n": 0, **training})
    return config


def corpus_counts(run_root: Path) -> tuple[int, int]:
    """(words, tokens) of the corpus, as the token cache recorded them; the words counted here by hand."""
    (metadata,) = (run_root / "experiments" / ".cache" / "tokens").glob("*.json")
    recorded = json.loads(metadata.read_text(encoding="utf-8"))
    words = len((run_root / "corpus.txt").read_text(encoding="utf-8").split())
    assert recorded["num_words"] == words
    return words, recorded["num_tokens"]


def words_after(steps: int, words: int, tokens: int) -> int:
    return steps * ROWS * BLOCK * words // tokens


def first_step_reaching(amount: int, count_after) -> int:
    return next(step for step in range(1, 1000) if count_after(step) >= amount)


def state_of(checkpoint: Path) -> dict:
    return torch.load(checkpoint / "trainer_state.pt", weights_only=True)


@pytest.fixture(scope="module")
def milestone_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("milestones")
    model_foundry.train(milestone_config(root, save_at_words=WORDS, save_at_tokens=TOKENS))
    return root


def run_dir(root: Path) -> Path:
    return root / "experiments" / "pretraining" / "tiny_gpt"


def test_word_milestones_are_kept_at_the_first_step_past_each_amount(milestone_run):
    checkpoints = run_dir(milestone_run) / "checkpoints"
    words, tokens = corpus_counts(milestone_run)
    assert sorted(p.name for p in checkpoints.glob("words_*")) == sorted(f"words_{n}" for n in WORDS)
    for amount in WORDS:
        expected = first_step_reaching(amount, lambda step: words_after(step, words, tokens))
        state = state_of(checkpoints / f"words_{amount}")
        assert state["step"] == expected and state["rows"] == expected * ROWS
        assert words_after(expected - 1, words, tokens) < amount <= words_after(expected, words, tokens)
    assert not list(checkpoints.glob("step_*"))  # keep_last_n: 0 rotates step_N away, never the milestones


def test_the_run_reports_its_words_and_how_it_counts_them(milestone_run):
    words, tokens = corpus_counts(milestone_run)
    run = json.loads((run_dir(milestone_run) / "results.json").read_text(encoding="utf-8"))["run"]
    assert run["words"] == words_after(6, words, tokens)
    assert "whitespace-separated" in run["word_counting"]


def test_token_milestones_write_one_checkpoint_per_amount_even_in_one_step(milestone_run):
    checkpoints = run_dir(milestone_run) / "checkpoints"
    assert sorted(p.name for p in checkpoints.glob("tokens_*")) == sorted(f"tokens_{n}" for n in TOKENS)
    steps = {n: state_of(checkpoints / f"tokens_{n}")["step"] for n in TOKENS}
    assert steps == {256: 1, 300: 2, 400: 2}
    assert all(state_of(checkpoints / f"tokens_{n}")["tokens"] == steps[n] * ROWS * BLOCK for n in TOKENS)
    model = load_model(run_dir(milestone_run), "tokens_300")
    assert isinstance(model, BaseLanguageModel)
    step_two = BaseLanguageModel.from_pretrained(checkpoints / "tokens_400").state_dict()
    assert all(torch.equal(value, step_two[key]) for key, value in model.state_dict().items())


@pytest.mark.slow
def test_a_word_milestone_exports_to_hugging_face(milestone_run, tmp_path):
    transformers = pytest.importorskip("transformers")
    from model_foundry.cli.main import main

    run = run_dir(milestone_run)
    assert main(["export", str(run), "--checkpoint", f"words_{WORDS[0]}", "--format", "hf",
                 "--out", str(tmp_path / "hf")]) == 0
    exported = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ours = load_model(run, f"words_{WORDS[0]}")
    ids = torch.tensor([[3, 5, 7, 9, 11]])
    with torch.no_grad():
        assert torch.allclose(exported(ids).logits, ours(ids).logits, atol=1e-4)


@pytest.mark.slow
def test_a_resumed_run_keeps_counting_and_never_rewrites_a_milestone(tmp_path):
    model_foundry.train(milestone_config(tmp_path, max_steps=3, save_at_words=WORDS))
    checkpoints = run_dir(tmp_path) / "checkpoints"
    first = checkpoints / f"words_{WORDS[0]}"
    written = (first / "trainer_state.pt").stat().st_mtime_ns
    assert not (checkpoints / f"words_{WORDS[1]}").exists()
    results = model_foundry.train(milestone_config(tmp_path, max_steps=6, save_at_words=WORDS, resume=True))
    words, tokens = corpus_counts(tmp_path)
    assert (first / "trainer_state.pt").stat().st_mtime_ns == written
    expected = first_step_reaching(WORDS[1], lambda step: words_after(step, words, tokens))
    assert state_of(checkpoints / f"words_{WORDS[1]}")["step"] == expected > 3
    assert results["run"]["words"] == words_after(6, words, tokens)


@pytest.mark.parametrize("key", ["save_at_words", "save_at_tokens"])
@pytest.mark.parametrize(("value", "problem"), [("[300, 100]", "strictly increasing"),
                                                ("[100, 100]", "strictly increasing"),
                                                ("[0, 100]", "positive"), ("[-5]", "positive")])
def test_unsorted_repeated_or_non_positive_amounts_are_refused_by_key(key, value, problem):
    with pytest.raises(UserError) as error:
        load_config({}, [f"training.{key}={value}"])
    assert f"training.{key}" in str(error.value) and problem in str(error.value)


def test_save_at_words_is_refused_for_token_ids_without_text(milestone_run, tmp_path):
    ids = torch.randint(5, 30, (40, BLOCK + 1))
    torch.save({"input_ids": ids, "attention_mask": torch.ones_like(ids)}, tmp_path / "ids.pt")
    config = milestone_config(tmp_path, save_at_words=[100])
    config["data"]["train"]["path"] = str(tmp_path / "ids.pt")
    config["tokenizer"]["path"] = str(run_dir(milestone_run) / "tokenizer")
    with pytest.raises(UserError) as error:
        model_foundry.train(config)
    assert "training.save_at_words" in str(error.value) and "training.save_at_tokens" in str(error.value)
    assert not (run_dir(tmp_path) / "checkpoints").exists()


def test_a_window_stands_for_its_corpus_tokens_not_the_cls_a_masked_window_adds():
    tokens = np.arange(1000, dtype=np.uint16)  # say the corpus was 250 words
    causal, masked = CausalWindows(tokens, range(1000), 32, 250), MaskedWindows(tokens, range(1000), 32, 2, 250)
    assert causal.words_in(10) == 10 * 32 * 250 // 1000 == 80
    assert masked.words_in(10) == 10 * 31 * 250 // 1000 == 77
    assert CausalWindows(tokens, range(1000), 32).words_in(10) is None
