"""Every tokenizer kind gives its training text back on non-Latin scripts, with and without lowercase,
and min_frequency never costs a character."""
from __future__ import annotations

import re

import pytest

from model_foundry.tokenizer import TOKENIZER_TYPES, FoundryTokenizer, train_tokenizer

TEXTS = [
    "मैं हिंदी में बात करता हूँ।",  # vowel signs, anusvara, candrabindu: combining marks
    "مرحبا بالعالم، كيف حالك؟",
    "Naïve CAFÉ à l'École, où l'on mange des crêpes.",
    "Đà Nẵng là một thành phố của Việt Nam.",
    "Straße İstanbul ÆØÅ Ωmega",
    "می‌خواهم بروم",  # Persian with a zero-width non-joiner inside the first word
]
# Large enough for every distinct character of TEXTS plus some merges, small enough to train in milliseconds.
VOCAB_SIZES = {"char": 200, "wordpiece": 400, "bpe": 400, "unigram": 300}
NEVER_MERGES = 10_000  # above any count in the corpus: no merge or piece can reach it


def without_spaces(text: str) -> str:
    return re.sub(r"\s", "", text)


def train(kind: str, lowercase: bool = False, min_frequency: int = 2) -> FoundryTokenizer:
    return train_tokenizer(kind, VOCAB_SIZES[kind], texts=TEXTS * 20, lowercase=lowercase,
                           min_frequency=min_frequency)


@pytest.mark.parametrize("min_frequency", [1, 2, NEVER_MERGES])
@pytest.mark.parametrize("lowercase", [False, True])
@pytest.mark.parametrize("kind", TOKENIZER_TYPES)
def test_training_text_decodes_back_spaces_aside(kind, lowercase, min_frequency, tmp_path):
    tok = FoundryTokenizer.load(train(kind, lowercase, min_frequency).save(tmp_path))
    for text in TEXTS:
        ids = tok.encode_for_model(text)
        assert tok.unk_id not in ids, text
        expected = text.lower() if lowercase else text
        assert without_spaces(tok.decode(ids, skip_special_tokens=True)) == without_spaces(expected)


@pytest.mark.parametrize("kind", TOKENIZER_TYPES)
def test_lowercase_changes_cased_letters_only(kind):
    normalizer = train(kind, lowercase=True).backend.normalizer
    assert normalizer.normalize_str("मैं हिंदी में") == "मैं हिंदी में"
    assert normalizer.normalize_str("Đà NẴNG, ÉCOLE NAÏVE") == "đà nẵng, école naïve"
    assert normalizer.normalize_str("ｆｕｌｌ ﬁ ²") == "ｆｕｌｌ ﬁ ²", "no compatibility (NFKC/NFKD) folding"


def test_lowercase_wordpiece_keeps_hindi_vowel_signs():
    """The case from the issue: BERT's uncased normalizer gave "म हिदी म"."""
    tok = train("wordpiece", lowercase=True)
    assert tok.decode(tok.encode("मैं हिंदी में")) == "मैं हिंदी में"


@pytest.mark.parametrize("kind", TOKENIZER_TYPES)
def test_min_frequency_never_drops_a_character(kind):
    vocab = set(train(kind, min_frequency=NEVER_MERGES).backend.get_vocab())
    characters = set("".join(TEXTS)) - {" "}
    if kind == "bpe":  # byte-level: the characters are spelled in byte tokens, all 256 of them present
        assert len(vocab) == 5 + 256
    else:
        assert {c for c in characters if c not in vocab and f"##{c}" not in vocab} == set()


@pytest.mark.parametrize("kind", ["bpe", "wordpiece"])
def test_min_frequency_limits_merges(kind):
    """Tokens longer than one symbol (a byte for bpe, a character for wordpiece) are merges."""
    def merges(tok: FoundryTokenizer) -> set[str]:
        specials = tok.specials.in_id_order()
        return {t for t in tok.backend.get_vocab() if len(t.removeprefix("##")) > 1 and t not in specials}

    assert merges(train(kind, min_frequency=2)), "text repeated 20 times gives merges"
    assert merges(train(kind, min_frequency=NEVER_MERGES)) == set()


@pytest.mark.parametrize("kind", TOKENIZER_TYPES)
def test_min_frequency_without_effect_is_reported_once(kind, capsys):
    train(kind)
    assert capsys.readouterr().err == "", "the default value is silent"
    train(kind, min_frequency=5)
    lines = capsys.readouterr().err.splitlines()
    if kind in ("char", "unigram"):
        assert len(lines) == 1 and "min_frequency (5) has no effect on a " + kind in lines[0]
    else:
        assert lines == []


def test_files_give_the_same_round_trip_as_texts(tmp_path):
    path = tmp_path / "multilingual.txt"
    path.write_text("\n".join(TEXTS * 20) + "\n", encoding="utf-8")
    tok = train_tokenizer("unigram", VOCAB_SIZES["unigram"], files=[path], lowercase=True)
    text = "\n".join(TEXTS)
    assert without_spaces(tok.decode(tok.encode(text))) == without_spaces(text.lower())
