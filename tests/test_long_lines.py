"""Long lines are read and tokenized in bounded pieces with the ids, separators and words of the whole."""
from __future__ import annotations

import io
import json

import pytest

from model_foundry.data import sources, token_cache, tokenize_to_cache
from model_foundry.tokenizer.long_lines import cut_text, piece_end, read_line_pieces
from model_foundry.tokenizer import training
from model_foundry.tokenizer.training import BUILDERS, special_added_tokens, train_tokenizer
from model_foundry.tokenizer.kinds import SPECIALS_BY_KIND

TEXT = ("The quick  brown fox,\tjumps over   the lazy dog's back; Ünïcode 東京 tokyo  \t  42 numbers!! "
        "[MASK] a well-hyphenated word ") * 4  # no word longer than half the limit: every cut is at a space
LIMIT = 24
KINDS = ("char", "wordpiece", "bpe", "unigram")


@pytest.fixture(scope="module", params=[(kind, lowercase) for kind in KINDS for lowercase in (False, True)],
                ids=lambda p: f"{p[0]}{'-lower' if p[1] else ''}")
def tokenizer(request):
    kind, lowercase = request.param
    return train_tokenizer(kind, 400, texts=[TEXT] * 3, lowercase=lowercase)


def test_pieces_rebuild_the_text_and_are_bounded():
    pieces = list(cut_text(TEXT, LIMIT))
    assert "".join(pieces) == TEXT and len(pieces) > len(TEXT) // LIMIT
    assert all(len(piece) <= LIMIT for piece in pieces)
    assert all(piece[0] == " " and not piece[1].isspace() for piece in pieces[1:])  # before a space that starts a word


def test_a_text_without_space_is_cut_at_the_limit():
    assert list(cut_text("x" * 10, 4)) == ["xxxx", "xxxx", "xx"]
    assert piece_end("abcd ef\tgh ij", 10) == 10  # a tab is no place to cut, and the space at 4 is too early
    assert piece_end("abcdef g \tgh", 9) == 6  # the space at 8 is followed by whitespace
    assert list(cut_text("", 4)) == [""]


def test_cut_ids_equal_the_whole_text(tokenizer):
    pieces = list(cut_text(TEXT, LIMIT))
    assert [token for piece in pieces for token in tokenizer.encode(piece)] == tokenizer.encode(TEXT)


def test_line_pieces_keep_lines_whole_and_cut_long_ones():
    text = "short line\n" + TEXT + "\nanother short line\n" + TEXT
    pieces = list(read_line_pieces(io.StringIO(text), LIMIT))
    assert "".join(pieces) == text
    assert pieces[0] == "short line\n" and "another short line\n" in pieces
    assert all(len(piece) <= LIMIT for piece in pieces)
    assert "".join(pieces[1:pieces.index("another short line\n")]) == TEXT + "\n"


def test_a_single_line_file_is_prepared_in_bounded_pieces(tmp_path, monkeypatch, tokenizer):
    corpus = tmp_path / "one_line.txt"
    corpus.write_text(TEXT, encoding="utf-8")
    longest = record_longest_text(monkeypatch, tokenizer)
    monkeypatch.setattr(sources, "TEXT_CHUNK_CHARS", LIMIT)
    tokens = tokenize_to_cache([corpus], tokenizer, tmp_path / "cache", fmt="text", separator_id=tokenizer.eos_id)
    assert tokens.array().tolist() == tokenizer.encode(TEXT) + [tokenizer.eos_id]
    assert tokens.num_words == len(TEXT.split())
    assert 0 < max(longest) <= 2 * LIMIT  # a chunk is at most two pieces of a line


def test_lines_and_documents_keep_their_separators(tmp_path, monkeypatch):
    tokenizer = train_tokenizer("bpe", 400, texts=[TEXT])
    monkeypatch.setattr(sources, "TEXT_CHUNK_CHARS", LIMIT)
    documents = [TEXT, "a short one", TEXT[:LIMIT * 3 + 5]]
    corpus = tmp_path / "d.jsonl"
    corpus.write_text("".join(json.dumps({"text": doc}) + "\n" for doc in documents), encoding="utf-8")
    longest = record_longest_text(monkeypatch, tokenizer)
    tokens = tokenize_to_cache([corpus], tokenizer, tmp_path / "cache", fmt="jsonl", separator_id=tokenizer.eos_id)
    expected = [token for doc in documents for token in (*tokenizer.encode(doc), tokenizer.eos_id)]
    assert tokens.array().tolist() == expected and max(longest) <= LIMIT
    assert tokens.num_words == sum(len(doc.split()) for doc in documents)


def test_a_word_cut_at_the_limit_counts_once(tmp_path, monkeypatch):
    tokenizer = train_tokenizer("char", 100, texts=["ab cd\n"])
    monkeypatch.setattr(sources, "TEXT_CHUNK_CHARS", 4)
    corpus = tmp_path / "words.txt"
    corpus.write_text("a" * 30 + " " + "b" * 9 + "\n" + "c" * 11, encoding="utf-8")
    tokens = tokenize_to_cache([corpus], tokenizer, tmp_path / "cache", fmt="text")
    assert tokens.num_words == 3
    assert tokenizer.decode(tokens.array().tolist()) == corpus.read_text(encoding="utf-8")


@pytest.mark.parametrize("kind", ["char", "bpe"])  # the deterministic trainers: equal runs give equal files
def test_a_tokenizer_trains_on_long_lines_in_pieces_as_on_whole_lines(tmp_path, monkeypatch, kind):
    corpus = tmp_path / "one_line.txt"
    corpus.write_text(TEXT + "\nshort\n" + TEXT, encoding="utf-8")
    backend, trainer = BUILDERS[kind](400, 2, False, special_added_tokens(SPECIALS_BY_KIND[kind]))
    backend.train([str(corpus)], trainer)  # the trainer's own reader: whole lines
    pieces = list(training.file_pieces([corpus], LIMIT))
    assert "".join(pieces) == corpus.read_text(encoding="utf-8") and max(map(len, pieces)) <= LIMIT
    monkeypatch.setattr(training, "TRAIN_PIECE_CHARS", LIMIT)
    assert train_tokenizer(kind, 400, files=[corpus]).backend.get_vocab() == backend.get_vocab()


def record_longest_text(monkeypatch, tokenizer) -> list[int]:
    """Make `tokenizer.encode_batch` note the length of each text it is given; returns that list."""
    lengths: list[int] = []
    encode_batch = tokenizer.encode_batch

    def recording(texts):
        lengths.extend(len(text) for text in texts)
        return encode_batch(texts)

    monkeypatch.setattr(tokenizer, "encode_batch", recording)
    monkeypatch.setattr(token_cache, "ENCODE_BATCH_TEXTS", 2)
    return lengths
