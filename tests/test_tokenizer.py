"""Tokenizers: round trips, fixed special ids, save/load, errors, and transformers interop."""
from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from model_foundry.errors import UserError
from model_foundry.tokenizer import TOKENIZER_TYPES, FoundryTokenizer, train_tokenizer
from model_foundry.tokenizer.foundry_tokenizer import longest_first
from tests.conftest import says

SHAKESPEARE = Path(__file__).parents[2] / "shared" / "data" / "tinyshakespeare" / "input.txt"
VOCAB_SIZES = {"char": 100, "wordpiece": 200, "bpe": 320, "unigram": 150}
BERT_NAMES = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
SENTENCEPIECE_NAMES = ["<pad>", "<unk>", "<s>", "</s>", "<mask>"]
NAMES_BY_KIND = {"char": BERT_NAMES, "wordpiece": BERT_NAMES,
                 "bpe": SENTENCEPIECE_NAMES, "unigram": SENTENCEPIECE_NAMES}
# Words made of every letter, so any lowercase sentence below uses only characters seen in training.
WORDS = ("the quick brown fox jumps over a lazy dog while six wizards vex my big quartz sphinx and "
         "she sells sea shells by the shore every summer morning").split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    rng = random.Random(0)
    lines = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 14))) + rng.choice([" .", ",", " !"])
             for _ in range(300)]
    path = tmp_path_factory.mktemp("corpus") / "corpus.txt"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(corpus) -> dict[str, FoundryTokenizer]:
    return {kind: train_tokenizer(kind, VOCAB_SIZES[kind], files=[corpus]) for kind in TOKENIZER_TYPES}


# ----- round trips --------------------------------------------------------------------------

NORMAL_TEXT = "the lazy dog jumps over six quartz shells .\nshe sells  sea shells,\n\nby the shore !"


@pytest.mark.parametrize("kind", ["char", "bpe", "unigram"])
def test_round_trip_is_exact_for_seen_characters(trained, kind):
    tok = trained[kind]
    ids = tok.encode(NORMAL_TEXT)
    assert tok.unk_id not in ids
    assert tok.decode(ids) == NORMAL_TEXT


def test_bpe_round_trip_is_exact_for_any_text(trained):
    tok = trained["bpe"]
    text = " Ünïcode 🙂 never\tseen — ЖЯ 漢字\r\n  trailing  "
    assert tok.decode(tok.encode(text)) == text
    assert tok.unk_id not in tok.encode(text)


def test_wordpiece_round_trip_normalises_whitespace_only(trained):
    tok = trained["wordpiece"]
    assert tok.decode(tok.encode("the  lazy\ndog jumps over\tsix quartz shells")) == \
        "the lazy dog jumps over six quartz shells"
    assert tok.unk_id not in tok.encode("she sells sea shells")


def test_unknown_characters_map_to_unk(trained):
    for kind in ("char", "wordpiece"):
        tok = trained[kind]
        assert tok.encode("Ж") == [tok.unk_id]


def test_lowercase_option_folds_case_but_keeps_mask(corpus):
    tok = train_tokenizer("wordpiece", 200, files=[corpus], lowercase=True)
    assert tok.encode("The LAZY Dog") == tok.encode("the lazy dog")
    assert tok.encode("THE [MASK] dog").count(tok.mask_id) == 1


def test_encode_batch_matches_encode(trained):
    texts = ["the fox", "", "she sells sea shells by the shore"]
    for tok in trained.values():
        assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]


def test_decode_accepts_tensors_and_can_skip_specials(trained):
    torch = pytest.importorskip("torch")
    tok = trained["char"]
    ids = [tok.cls_id] + tok.encode("a fox") + [tok.sep_id]
    assert tok.decode(torch.tensor(ids)) == "[CLS]a fox[SEP]"
    assert tok.decode(ids, skip_special_tokens=True) == "a fox"


# ----- special tokens -----------------------------------------------------------------------

def check_special_ids(tok: FoundryTokenizer, kind: str) -> None:
    names = NAMES_BY_KIND[kind]
    assert [tok.id_to_token(i) for i in range(5)] == names
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    assert (tok.pad_token, tok.unk_token, tok.cls_token, tok.sep_token, tok.mask_token) == tuple(names)
    assert (tok.bos_id, tok.eos_id, tok.bos_token, tok.eos_token) == (2, 3, names[2], names[3])
    assert tok.special_ids == frozenset(range(5))


@pytest.mark.parametrize("kind", TOKENIZER_TYPES)
def test_special_ids_are_fixed_and_survive_save_load(trained, kind, tmp_path):
    tok = trained[kind]
    check_special_ids(tok, kind)
    loaded = FoundryTokenizer.load(tok.save(tmp_path / "tok"))
    assert loaded.kind == kind and loaded.vocab_size == tok.vocab_size == len(loaded)
    check_special_ids(loaded, kind)
    assert loaded.encode(NORMAL_TEXT) == tok.encode(NORMAL_TEXT)


@pytest.mark.parametrize("kind", TOKENIZER_TYPES)
def test_mask_token_is_never_split(trained, kind):
    tok = trained[kind]
    ids = tok.encode(f"a {tok.mask_token} b{tok.mask_token}c")
    assert ids.count(tok.mask_id) == 2
    assert tok.decode(tok.encode(f"the {tok.mask_token} fox")).count(tok.mask_token) == 1


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_added_special_token_keeps_its_id_after_save_load(corpus, kind, tmp_path):
    tok = train_tokenizer(kind, VOCAB_SIZES[kind], files=[corpus])
    before = tok.vocab_size
    assert tok.add_special_tokens(["<|sep2|>", tok.mask_token]) == 1
    new_id = tok.token_to_id("<|sep2|>")
    assert new_id == before and tok.vocab_size == before + 1
    loaded = FoundryTokenizer.load(tok.save(tmp_path))
    assert loaded.token_to_id("<|sep2|>") == new_id
    assert new_id in loaded.special_ids and loaded.mask_id == 4
    assert loaded.encode("fox<|sep2|>dog").count(new_id) == 1


# ----- training sources ---------------------------------------------------------------------

def corpus_lines(corpus: Path):
    with corpus.open(encoding="utf-8") as handle:
        yield from handle


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_files_and_generator_give_the_same_vocabulary(trained, corpus, kind):
    streamed = train_tokenizer(kind, VOCAB_SIZES[kind], texts=corpus_lines(corpus))
    assert streamed.backend.get_vocab() == trained[kind].backend.get_vocab()


@pytest.mark.parametrize("kind", ["wordpiece", "unigram"])
def test_files_and_generator_give_nearly_the_same_vocabulary(trained, corpus, kind):
    """These trainers break ties in hash-map order (huggingface/tokenizers#1794), so two trainings
    on the same text may differ in a few rare pieces; the alphabet and the bulk must agree."""
    streamed = set(train_tokenizer(kind, VOCAB_SIZES[kind], texts=corpus_lines(corpus)).backend.get_vocab())
    from_files = set(trained[kind].backend.get_vocab())
    assert {t for t in streamed if len(t) == 1} == {t for t in from_files if len(t) == 1}
    assert len(streamed & from_files) / len(streamed | from_files) > 0.85


def test_char_vocab_keeps_the_most_frequent_characters():
    text = "aaaa bbb cc d\n"
    tok = train_tokenizer("char", 5 + 3, texts=[text] * 3)
    assert tok.vocab_size == 8
    assert {tok.id_to_token(i) for i in range(5, 8)} == {"a", "b", " "}
    assert tok.encode("d") == [tok.unk_id]


def test_bpe_learns_merges_up_to_the_vocab_size(trained):
    tok = trained["bpe"]
    assert tok.vocab_size == VOCAB_SIZES["bpe"]
    assert len(tok.encode("she sells sea shells")) < len("she sells sea shells")


@pytest.mark.slow
def test_tinyshakespeare_char_vocabulary_and_round_trip():
    if not SHAKESPEARE.is_file():
        pytest.skip(f"tinyshakespeare not found at {SHAKESPEARE}")
    tok = train_tokenizer("char", 1000, files=[SHAKESPEARE])
    assert tok.vocab_size == 70
    text = SHAKESPEARE.read_text(encoding="utf-8")[10_000:15_000]
    ids = tok.encode(text)
    assert len(ids) == len(text) and tok.unk_id not in ids
    assert tok.decode(ids) == text


# ----- model inputs -------------------------------------------------------------------------

@pytest.mark.parametrize("kind", TOKENIZER_TYPES)
def test_encode_for_model_wraps_texts_in_cls_and_sep(trained, kind):
    tok = trained[kind]
    a, b = tok.encode("the fox"), tok.encode("a dog")
    assert tok.encode_for_model("the fox") == [tok.cls_id, *a, tok.sep_id]
    assert tok.encode_for_model("the fox", "a dog") == [tok.cls_id, *a, tok.sep_id, *b, tok.sep_id]
    assert tok.encode_for_model("the fox", "a dog", add_special_tokens=False) == a + b


def test_encode_for_model_truncates_longest_first_keeping_specials(trained):
    tok = trained["char"]
    single = tok.encode_for_model("the quick brown fox", max_length=6)
    assert single == [tok.cls_id, *tok.encode("the "), tok.sep_id]
    pair = tok.encode_for_model("the quick brown fox", "dog", max_length=10)
    assert pair == [tok.cls_id, *tok.encode("the "), tok.sep_id, *tok.encode("dog"), tok.sep_id]
    even = tok.encode_for_model("the quick", "brown fox", max_length=8)
    assert even == [tok.cls_id, *tok.encode("th"), tok.sep_id, *tok.encode("bro"), tok.sep_id]
    assert tok.encode_for_model("fox", "dog", max_length=100) == tok.encode_for_model("fox", "dog")
    with pytest.raises(UserError, match="max_length"):
        tok.encode_for_model("fox", "dog", max_length=4)


def test_longest_first_shortens_the_longer_text_first():
    assert longest_first(2, 10, 5) == (2, 3)
    assert longest_first(10, 2, 5) == (3, 2)
    assert longest_first(10, 9, 5) == (2, 3)
    assert longest_first(3, 4, 7) == (3, 4)


# ----- files --------------------------------------------------------------------------------

def test_save_is_atomic_and_overwrites(trained, tmp_path):
    path = trained["char"].save(tmp_path / "a" / "b")
    assert path == tmp_path / "a" / "b" / "tokenizer.json"
    trained["bpe"].save(tmp_path / "a" / "b")
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]
    assert FoundryTokenizer.load(path).kind == "bpe"
    assert json.loads(path.read_text())["model"]["type"] == "BPE"


@pytest.mark.parametrize("kind", TOKENIZER_TYPES)
def test_transformers_loads_the_file_and_encodes_identically(trained, kind, tmp_path):
    transformers = pytest.importorskip("transformers")
    tok = trained[kind]
    path = tok.save(tmp_path)
    hf = transformers.PreTrainedTokenizerFast(tokenizer_file=str(path), **tok.special_tokens_map)
    text = f"the lazy dog {tok.mask_token} jumps ,\nover six quartz shells"
    assert hf.encode(text, add_special_tokens=False) == tok.encode(text)
    assert hf(text, "she sells")["input_ids"] == tok.encode_for_model(text, "she sells")
    assert (hf.pad_token_id, hf.mask_token_id, len(hf)) == (tok.pad_id, tok.mask_id, tok.vocab_size)
    assert hf.decode(tok.encode(NORMAL_TEXT)) == tok.decode(tok.encode(NORMAL_TEXT))


# ----- user mistakes ------------------------------------------------------------------------

def test_unknown_kind_lists_the_kinds(corpus):
    with pytest.raises(UserError) as error:
        train_tokenizer("bep", 100, files=[corpus])
    assert "'bep'" in str(error.value) and "Did you mean 'bpe'" in str(error.value)
    assert all(kind in str(error.value) for kind in TOKENIZER_TYPES)


def test_missing_or_empty_training_files_are_named(tmp_path):
    missing = tmp_path / "missing.txt"
    with pytest.raises(UserError, match="missing.txt.*does not exist"):
        train_tokenizer("bpe", 300, files=[missing])
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    with pytest.raises(UserError, match="empty.txt"):
        train_tokenizer("char", 100, files=[empty])
    with pytest.raises(UserError, match="all empty"):
        train_tokenizer("char", 100, texts=iter(["", ""]))


def test_exactly_one_text_source(corpus):
    with pytest.raises(UserError, match="exactly one"):
        train_tokenizer("char", 100)
    with pytest.raises(UserError, match="exactly one"):
        train_tokenizer("char", 100, files=[corpus], texts=["abc"])


def test_too_small_vocabularies_are_explained(corpus):
    with pytest.raises(UserError, match="at least 261"):
        train_tokenizer("bpe", 100, files=[corpus])
    with pytest.raises(UserError, match="every distinct character"):
        train_tokenizer("unigram", 12, files=[corpus])


def test_loading_bad_files_names_them(tmp_path, trained):
    with pytest.raises(UserError, match="No tokenizer found at .*nowhere"):
        FoundryTokenizer.load(tmp_path / "nowhere")
    corrupt = tmp_path / "corrupt" / "tokenizer.json"
    corrupt.parent.mkdir()
    corrupt.write_text('{"model": {"type": "BPE", ')
    with pytest.raises(UserError, match="corrupt.*not a valid tokenizer file"):
        FoundryTokenizer.load(corrupt.parent)
    corrupt.write_text('{"model": {"type": "BPE"}}')
    with pytest.raises(UserError, match="not a valid tokenizer file"):
        FoundryTokenizer.load(corrupt)
    corrupt.write_bytes(b"\xff\xfe\x00 not text")
    with pytest.raises(UserError, match="not a valid tokenizer file"):
        FoundryTokenizer.load(corrupt)
    foreign = json.loads(trained["bpe"].backend.to_str())
    foreign["model"]["type"] = "Mystery"
    corrupt.write_text(json.dumps(foreign))
    with pytest.raises(UserError, match="'Mystery' tokenizer"):
        FoundryTokenizer.load(corrupt)
    foreign["model"]["type"] = "BPE"
    foreign["added_tokens"] = [t for t in foreign["added_tokens"] if t["content"] != "<mask>"]
    del foreign["model"]["vocab"]["<mask>"]
    corrupt.write_text(json.dumps(foreign))
    with pytest.raises(UserError, match="without the special tokens <mask>"):
        FoundryTokenizer.load(corrupt)


def test_repr_names_kind_size_and_specials(trained):
    tok = trained["unigram"]
    assert repr(tok) == (f"FoundryTokenizer(kind='unigram', vocab_size={tok.vocab_size}, "
                         "specials='<pad> <unk> <s> </s> <mask>')")


# ----- files that are not UTF-8 -------------------------------------------------------------

BINARY = b"\xff\xfe\x00bad"


def write_bytes(directory: Path, name: str, data: bytes) -> Path:
    path = directory / name
    path.write_bytes(data)
    return path


def reference_offset(data: bytes) -> int | None:
    """Where Python's one-shot decoder first fails: what the block-wise scan must agree with."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        return error.start
    return None


@pytest.mark.parametrize("block_bytes", [1, 2, 3, 5, 1 << 20])
def test_first_invalid_byte_is_exact_whatever_the_block_size(tmp_path, monkeypatch, block_bytes):
    from model_foundry.tokenizer import utf8

    monkeypatch.setattr(utf8, "SCAN_BLOCK_BYTES", block_bytes)
    valid = "naïve café\nमैं हिंदी में\nمرحبا 漢字 🙂\n".encode()
    cases = [valid, BINARY, valid + b"\xe9t\xe9\n", valid + "€".encode()[:2], valid[:-3] + b"\xc0\xaf" + valid,
             b"ok\xed\xa0\x80"]  # latin-1, a cut character at the end, an overlong form, a surrogate
    for number, data in enumerate(cases):
        path = write_bytes(tmp_path, f"case{number}.txt", data)
        assert utf8.first_invalid_byte(path) == reference_offset(data), data


def test_training_on_a_non_utf8_file_names_the_file_and_offset(tmp_path, corpus):
    bad = write_bytes(tmp_path, "bin.txt", BINARY)
    with pytest.raises(UserError) as error:
        train_tokenizer("bpe", 300, files=[corpus, bad])
    message = str(error.value)
    assert str(bad) in message and "offset 0, line 1" in message and "iconv" in message
    latin1 = write_bytes(tmp_path, "latin1.txt", "line one\ncaf\xe9 au lait\n".encode("latin-1"))
    for kind in TOKENIZER_TYPES:
        with pytest.raises(UserError, match=r"latin1\.txt is not UTF-8 text .*offset 12, line 2"):
            train_tokenizer(kind, VOCAB_SIZES[kind], files=[latin1])


@pytest.mark.parametrize("fmt, name, data", [
    ("text", "bad.txt", b"fine\nalso fine\n" + BINARY),
    ("jsonl", "bad.jsonl", b'{"text": "fine"}\n{"text": "caf\xe9"}\n'),
    ("csv", "bad.csv", b"text\nfine\ncaf\xe9\n"),
])
def test_corpus_readers_name_the_offset_of_bad_bytes(tmp_path, fmt, name, data):
    from model_foundry.data import iter_texts

    path = write_bytes(tmp_path, name, data)
    offset = reference_offset(data)
    with pytest.raises(UserError, match=rf"{name} is not UTF-8 text \(its first invalid byte is at offset {offset}, "):
        list(iter_texts(path, fmt))


def test_token_cache_of_a_non_utf8_file_is_a_user_error(tmp_path, trained):
    from model_foundry.data import tokenize_to_cache

    bad = write_bytes(tmp_path, "bin.txt", BINARY)
    with pytest.raises(UserError, match=r"bin\.txt is not UTF-8 text \(its first invalid byte is at offset 0"):
        tokenize_to_cache([bad], trained["char"], tmp_path / "cache", fmt="text")


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """Exit code and stderr of `foundry argv...`."""
    from model_foundry.cli.main import main

    code = main(list(argv))
    return code, capsys.readouterr().err


def test_cli_exits_2_naming_a_non_utf8_training_file(tmp_path, monkeypatch, capsys, make_config):
    yaml = pytest.importorskip("yaml")
    monkeypatch.chdir(tmp_path)
    write_bytes(tmp_path, "bin.txt", BINARY)
    code, err = run_cli(capsys, "tokenizer", "train", "--type", "wordpiece", "--vocab-size", "100",
                        "--input", "bin.txt", "--out", "tok")
    assert code == 2 and says(err, "bin.txt is not UTF-8 text") and says(err, "offset 0") and "Traceback" not in err
    for name in ("bin.txt", "bin.jsonl"):  # the tokenizer trainer's file reader, then the corpus reader
        write_bytes(tmp_path, name, BINARY)
        config = tmp_path / f"{name}.yaml"
        config.write_text(yaml.safe_dump(make_config(data={"train": {"path": name}})))
        code, err = run_cli(capsys, "train", str(config))
        assert code == 2, err
        assert says(err, f"{name} is not UTF-8 text (its first invalid byte is at offset 0, line 1)"), err
