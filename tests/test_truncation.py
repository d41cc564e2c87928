"""Inputs longer than the model's limit: finetuning encoders count what they cut and say so once
per split, and `predict` tags every word of a sentence too long for the model."""
from __future__ import annotations

import pytest

import model_foundry
from model_foundry.data.labelled import (Truncations, encode_sequence, encode_words, length_limit,
                                         report_truncations, words_within)
from model_foundry.inference.predict import predict_run
from model_foundry.tokenizer import train_tokenizer
from tests.conftest import tiny_config

LETTERS = ["abcdefghijklmnopqrstuvwxyz the dog runs a cat sleeps"]
CONLLU = "".join(f"{n}\t{word}\t{word}\t{tag}\t_\t_\t0\tdep\t_\t_\n" + ("\n" if n == 3 else "")
                 for sentence in (["the", "dog", "runs"], ["a", "cat", "sleeps"])
                 for n, (word, tag) in enumerate(zip(sentence, ["DET", "NOUN", "VERB"]), start=1))


@pytest.fixture(scope="module")
def char_tokenizer():
    return train_tokenizer("char", 64, texts=LETTERS)


def test_one_warning_per_split_counts_cut_examples_and_words(char_tokenizer, capsys):
    # max_length 10 leaves 8 characters: "ab cd" fits, "abc def ghi" loses "ghi", "abcdefgh x" loses "x".
    sentences = [["ab", "cd"], ["abc", "def", "ghi"], ["abcdefgh", "x"]]
    each = [encode_words(char_tokenizer, words, 10)[2] for words in sentences]
    assert each == [Truncations(1, 0, 0), Truncations(1, 1, 1), Truncations(1, 1, 1)]
    tally = sum(each, Truncations())
    assert (tally.examples, tally.cut, tally.words) == (3, 2, 2)
    report_truncations(tally, "data.train.path", 10, "model.block_size")
    assert capsys.readouterr().err == ("warning: 2 of 3 example(s) in data.train.path were cut to 10 tokens (the "
                                       "limit model.block_size sets); 2 word(s) past the cut get no label in the "
                                       "loss and the metrics.\n")


def test_no_warning_when_nothing_is_cut(char_tokenizer, capsys):
    tally = (encode_words(char_tokenizer, ["ab", "cd"], 10)[2]
             + encode_sequence(char_tokenizer, "abcdefgh", None, 10)[1])  # cls + 8 + sep: exactly full, not cut
    report_truncations(tally, "data.val.path", 10, "model.block_size")
    assert (tally.examples, tally.cut) == (2, 0) and capsys.readouterr().err == ""


def test_sequence_examples_cut_are_counted_without_words(char_tokenizer, capsys):
    encoded = [encode_sequence(char_tokenizer, "abcdefgh", None, 10),
               encode_sequence(char_tokenizer, "abcdefghi", None, 10),
               encode_sequence(char_tokenizer, "abc", "defgh", 10)]  # cls abc sep defgh sep: 11 tokens, cut
    assert [len(item["input_ids"]) for item, _ in encoded] == [10, 10, 10]
    report_truncations(sum((cut for _, cut in encoded), Truncations()), "data.test.path", 10, "tokenizer.max_length")
    err = capsys.readouterr().err
    assert err == "warning: 2 of 3 example(s) in data.test.path were cut to 10 tokens (the limit " \
                  "tokenizer.max_length sets).\n"


def test_the_length_limit_names_the_key_that_sets_it():
    assert length_limit(None, 32) == (32, "model.block_size")
    assert length_limit(64, 32) == (32, "model.block_size")
    assert length_limit(16, 32) == (16, "tokenizer.max_length")


def test_words_within_takes_the_words_that_fit_whole(char_tokenizer):
    assert words_within(char_tokenizer, ["ab", "cd"], 10) == 2
    assert words_within(char_tokenizer, ["abc", "def", "ghi"], 10) == 2  # "abc def" is 7 of 8
    assert words_within(char_tokenizer, ["abc", "defgh", "i"], 10) == 1  # "defgh" would end at 9
    assert words_within(char_tokenizer, ["abcdefghijk", "x"], 10) == 1  # a word too long alone goes alone


@pytest.fixture(scope="module")
def tagger(tmp_path_factory):
    """A tiny bert (32-token blocks, one character a token) finetuned to tag DET NOUN VERB."""
    root = tmp_path_factory.mktemp("truncation")
    corpus = root / "corpus.txt"
    corpus.write_text("the dog runs\na cat sleeps\n" * 100, encoding="utf-8")
    model_foundry.train(tiny_config(corpus, root / "experiments", "bert", training={"max_steps": 10}))
    (root / "train.conllu").write_text(CONLLU * 30, encoding="utf-8")
    model_foundry.train({
        "experiment": {"name": "tagger", "kind": "finetuning", "seed": 3, "output_dir": str(root / "experiments")},
        "data": {"train": str(root / "train.conllu")},
        "task": {"type": "token_classification"},
        "transfer": {"init_from_checkpoint": str(root / "experiments" / "pretraining" / "tiny_bert")},
        "training": {"max_steps": 30, "batch_size": 16, "learning_rate": 3e-3, "warmup_steps": 0,
                     "eval_interval": 30, "log_interval": 10, "device": "cpu", "precision": "fp32"},
    })
    return root / "experiments" / "finetuning" / "tagger"


@pytest.mark.slow
def test_predict_tags_every_word_of_a_sentence_longer_than_the_model(tagger, capsys):
    words = "the dog runs a cat sleeps".split() * 4  # 100 characters for 30 in a 32-token block
    capsys.readouterr()
    [row] = predict_run(tagger, text=" ".join(words))
    assert row["tokens"] == words and len(row["tags"]) == len(words)
    assert None not in row["tags"] and set(row["tags"]) <= {"DET", "NOUN", "VERB"}
    [first] = predict_run(tagger, text="the dog runs a cat sleeps the")  # the first piece, 29 characters
    assert row["tags"][:7] == first["tags"]
    assert "warning" not in capsys.readouterr().err, "every piece fits, so nothing is cut"
