"""Labelled data: reading each format, label sets, encoding texts and words, the labelled collator."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from model_foundry.data import (DATA_FORMATS, LabelledCollator, LabelSet, SequenceExample, TokenExample,
                                encode_sequence, encode_words, guess_format, iter_texts, read_sequence_examples,
                                read_token_examples)
from model_foundry.errors import UserError
from model_foundry.tokenizer import TOKENIZER_TYPES, FoundryTokenizer, train_tokenizer

VOCAB_SIZES = {"char": 60, "wordpiece": 120, "bpe": 300, "unigram": 80}
TRAINING_LINES = ["the café was naïve about zebras", "a zebra sat in the café", "naïve words are the best words"]
WORDS = ["the", "café", "was", "naïve", "about", "zebras"]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def tokenizers() -> dict[str, FoundryTokenizer]:
    return {kind: train_tokenizer(kind, VOCAB_SIZES[kind], texts=TRAINING_LINES * 20, min_frequency=1)
            for kind in TOKENIZER_TYPES}


# ----- sequence examples --------------------------------------------------------------------
def test_tsv_keeps_quotes_and_names_each_row(tmp_path):
    path = write(tmp_path / "d.tsv", 'sentence\tlabel\nhe said "great film\t1\n\n" no\t 0 \n')
    examples = read_sequence_examples(path, "tsv", text_column="sentence")
    assert examples == [SequenceExample('he said "great film', None, "1", f"{path}:2"),
                        SequenceExample('" no', None, "0", f"{path}:4")]


def test_csv_pairs_and_multiline_rows_start_on_their_first_line(tmp_path):
    path = write(tmp_path / "d.csv", 'premise,hypothesis,label\n"two\nlines",short,entail\nfirst,second,contra\n')
    examples = read_sequence_examples(path, "csv", text_column="premise", pair_column="hypothesis")
    assert [(e.text, e.pair, e.label, e.source) for e in examples] == [
        ("two\nlines", "short", "entail", f"{path}:2"), ("first", "second", "contra", f"{path}:4")]


def test_jsonl_numbers_lists_and_missing_labels(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"text": "a", "label": 3}\n\n{"text": "b", "label": 0.25}\n'
                                       '{"text": "c", "label": ["x", " y "]}\n{"text": "d"}\n')
    with pytest.raises(UserError, match=r"d.jsonl:5: the row has no 'label' label .*'text'"):
        read_sequence_examples(path, "jsonl")
    examples = read_sequence_examples(path, "jsonl", require_labels=False)
    assert [e.label for e in examples] == ["3", "0.25", ["x", "y"], None]
    assert [e.source for e in examples] == [f"{path}:{n}" for n in (1, 3, 4, 5)]


def test_unlabelled_table_without_a_label_column(tmp_path):
    path = write(tmp_path / "d.tsv", "text\nfirst\nsecond\n")
    assert [e.label for e in read_sequence_examples(path, "tsv", require_labels=False)] == [None, None]
    with pytest.raises(UserError, match=r"d.tsv:1: the header has no column 'label'.*the columns are 'text'"):
        read_sequence_examples(path, "tsv")


@pytest.mark.parametrize("content, fragment", [
    ("sentence\tlabel\nok\t1\n", r"d.tsv:1: the header has no column 'text'.*'sentence', 'label'"),
    ("text\tlabel\n  \t1\n", r"d.tsv:2: the 'text' text is empty"),
    ("text\tlabel\nok\t1\nfine\t\n", r"d.tsv:3: the 'label' label is empty"),
    ("text\tlabel\nan\textra\ttab\t1\n", r"d.tsv:2: the row has 4 fields but the header names 2 columns"),
])
def test_table_errors_name_file_and_line(tmp_path, content, fragment):
    path = write(tmp_path / "d.tsv", content)
    with pytest.raises(UserError, match=fragment):
        read_sequence_examples(path, "tsv")


def test_jsonl_errors_name_file_and_line(tmp_path):
    with pytest.raises(UserError, match=r"bad.jsonl:2: not valid JSON"):
        read_sequence_examples(write(tmp_path / "bad.jsonl", '{"text": "a", "label": 1}\n{"text": \n'), "jsonl")
    with pytest.raises(UserError, match=r"obj.jsonl:1: 'label' holds \{'a': 1\}"):
        read_sequence_examples(write(tmp_path / "obj.jsonl", '{"text": "a", "label": {"a": 1}}\n'), "jsonl")
    with pytest.raises(UserError, match=r"conllu.*sequence tasks read tsv, csv, jsonl"):
        read_sequence_examples(tmp_path / "x.conllu", "conllu")


def test_sst2_dev_reads_every_row(shared_data):
    examples = read_sequence_examples(shared_data / "sst2" / "dev.tsv", "tsv", text_column="sentence")
    data_lines = (shared_data / "sst2" / "dev.tsv").read_text(encoding="utf-8").strip().split("\n")[1:]
    assert len(examples) == len(data_lines) > 800
    assert {e.label for e in examples} == {"0", "1"}
    assert examples[0] == SequenceExample("the expressive power of the camera ", None, "1",
                                          f"{shared_data / 'sst2' / 'dev.tsv'}:2")


# ----- token examples -----------------------------------------------------------------------
CONLLU = ("# sent_id = 1\n# text = I don't go.\n"
          "1\tI\tI\tPRON\tPRP\t_\t3\tnsubj\t_\t_\n"
          "2-3\tdon't\t_\t_\t_\t_\t_\t_\t_\t_\n"
          "2\tdo\tdo\tAUX\tVBP\t_\t4\taux\t_\t_\n"
          "3\tn't\tnot\tPART\tRB\t_\t4\tadvmod\t_\t_\n"
          "3.1\tgo\tgo\tVERB\tVB\t_\t_\t_\t0:root\t_\n"
          "4\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\t_\n\n"
          "1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n")


def test_conllu_skips_comments_ranges_and_empty_nodes(tmp_path):
    path = write(tmp_path / "d.conllu", CONLLU)
    assert read_token_examples(path, "conllu") == [
        TokenExample(["I", "do", "n't", "go"], ["PRON", "AUX", "PART", "VERB"], f"{path}:1"),
        TokenExample(["Hi"], ["INTJ"], f"{path}:10")]


def test_conllu_label_column_chooses_any_column(tmp_path):
    path = write(tmp_path / "d.conllu", CONLLU)
    assert read_token_examples(path, "conllu", label_column="XPOS")[0].tags == ["PRP", "VBP", "RB", "VB"]
    assert read_token_examples(path, "conllu", label_column="deprel")[1].tags == ["root"]
    with pytest.raises(UserError, match=r"data.label_column 'upostag' is not a CoNLL-U column; did you mean 'upos'"):
        read_token_examples(path, "conllu", label_column="upostag")


@pytest.mark.parametrize("content, fragment", [
    ("1\tI\tI\tPRON\n", r"d.conllu:1: a CoNLL-U word line has 10 tab-separated fields .* this one has 4"),
    ("1\tHi\thi\tINTJ\tUH\t_\t0\troot\t_\t_\n\n# only a comment\n\n", r"d.conllu:3: this sentence has no word"),
])
def test_conllu_errors_name_the_line(tmp_path, content, fragment):
    with pytest.raises(UserError, match=fragment):
        read_token_examples(write(tmp_path / "d.conllu", content), "conllu")


def test_conll_takes_first_and_last_fields_and_skips_docstart(tmp_path):
    path = write(tmp_path / "d.conll", "-DOCSTART- -X- -X- O\n\nEU\tNNP\tB-ORG\nrejects\tVBZ\tO\n\n\n"
                                       "Peter\tB-PER \n")
    assert read_token_examples(path, "conll") == [TokenExample(["EU", "rejects"], ["B-ORG", "O"], f"{path}:3"),
                                                  TokenExample(["Peter"], ["B-PER"], f"{path}:7")]
    assert list(iter_texts(path, "conll")) == ["EU rejects", "Peter"]


def test_conll_without_tags_only_when_labels_are_optional(tmp_path):
    path = write(tmp_path / "d.tsv", "EU\nrejects\n")
    assert read_token_examples(path, "tsv", require_labels=False) == [TokenExample(["EU", "rejects"], None,
                                                                                   f"{path}:1")]
    with pytest.raises(UserError, match=r"d.tsv:1: expected `token<TAB>tag`, found no tab"):
        read_token_examples(path, "tsv")
    spaced = write(tmp_path / "spaced.conll", "EU B-ORG\n")
    with pytest.raises(UserError, match=r"spaced.conll:1: .*space-separated"):
        read_token_examples(spaced, "conll")
    mixed = write(tmp_path / "mixed.conll", "EU\tB-ORG\nrejects\n")
    with pytest.raises(UserError, match=r"mixed.conll:2: expected `token<TAB>tag`"):
        read_token_examples(mixed, "conll", require_labels=False)


def test_token_jsonl_rows_and_errors(tmp_path):
    path = write(tmp_path / "d.jsonl", '{"tokens": ["a", "b"], "label": ["X", 1]}\n\n{"tokens": ["c"]}\n')
    assert read_token_examples(path, "jsonl", require_labels=False) == [
        TokenExample(["a", "b"], ["X", "1"], f"{path}:1"), TokenExample(["c"], None, f"{path}:3")]
    with pytest.raises(UserError, match=r"d.jsonl:3: the row has no 'label' label"):
        read_token_examples(path, "jsonl")
    bad = write(tmp_path / "bad.jsonl", '{"tokens": ["a"], "label": ["X"]}\n{"tokens": ["a", "b"], "label": ["X"]}\n')
    with pytest.raises(UserError, match=r"bad.jsonl:2: 2 words in 'tokens' but 1 tags in 'label'"):
        read_token_examples(bad, "jsonl")
    empty = write(tmp_path / "empty.jsonl", '{"tokens": [], "label": []}\n')
    with pytest.raises(UserError, match=r"empty.jsonl:1: 'tokens' should be a non-empty list of words"):
        read_token_examples(empty, "jsonl")
    with pytest.raises(UserError, match=r"token classification reads conllu, conll, tsv, jsonl"):
        read_token_examples(path, "csv")


def test_ud_ewt_dev_sentences(shared_data):
    path = shared_data / "ud_ewt" / "en_ewt-ud-dev.conllu"
    sentences = read_token_examples(path, "conllu")
    assert len(sentences) == path.read_text(encoding="utf-8").count("# sent_id =")
    assert sentences[0].words == ["From", "the", "AP", "comes", "this", "story", ":"]
    assert sentences[0].tags == ["ADP", "DET", "PROPN", "VERB", "DET", "NOUN", "PUNCT"]
    assert all(len(s.words) == len(s.tags) for s in sentences)
    assert "didn't" not in {word for s in sentences for word in s.words}  # a multiword range, not a word


def test_conll_is_a_data_format():
    assert "conll" in DATA_FORMATS and guess_format("train.conll") == "conll"


# ----- label sets ---------------------------------------------------------------------------
def test_label_set_order_is_natural():
    assert LabelSet.from_values(["10", "2", "-1", "2"]).labels == ["-1", "2", "10"]
    assert LabelSet.from_values(["neg", "pos", "10", "neg"]).labels == ["10", "neg", "pos"]
    labels = LabelSet.from_json(LabelSet.from_values(["b", "a"]).to_json())
    assert labels.labels == ["a", "b"] and len(labels) == 2 and labels.index("b", "f:1", "data.val.path") == 1


def test_unknown_label_names_the_source_and_the_training_labels():
    labels = LabelSet(["negative", "positive"])
    with pytest.raises(UserError) as error:
        labels.index("Positive", "dev.tsv:7", "data.val.path")
    message = str(error.value)
    assert message.startswith("dev.tsv:7: label 'Positive' never appears in the training split (data.train.path)")
    assert "labels seen in training: negative, positive." in message
    assert "Did you mean 'positive'?" in message and "data.val.path" in message
    with pytest.raises(UserError, match="list of label strings"):
        LabelSet.from_json({"a": 0})


# ----- encoding texts -----------------------------------------------------------------------
def test_encode_sequence_pair_types_and_truncation(tokenizers):
    tok = tokenizers["char"]
    encoded, _ = encode_sequence(tok, "the", "café", max_length=32)
    assert encoded["input_ids"] == [tok.cls_id, *tok.encode("the"), tok.sep_id, *tok.encode("café"), tok.sep_id]
    assert encoded["token_type_ids"] == [0] * 5 + [1] * 5
    single, _ = encode_sequence(tok, "zebras", None, max_length=5)
    assert single["input_ids"] == [tok.cls_id, *tok.encode("zeb"), tok.sep_id] and single["token_type_ids"] == [0] * 5
    cut, _ = encode_sequence(tok, "naïve words", "a", max_length=8)
    assert cut["input_ids"] == [tok.cls_id, *tok.encode("naïv"), tok.sep_id, *tok.encode("a"), tok.sep_id]
    assert cut["token_type_ids"] == [0] * 6 + [1] * 2


def test_encode_with_offsets_indexes_the_original_text(tokenizers):
    text = "the café"
    ids, offsets = tokenizers["wordpiece"].encode_with_offsets(text)
    assert ids == tokenizers["wordpiece"].encode(text)
    assert [text[start:end] for start, end in offsets] == ["the", "café"]


def word_pieces(tok: FoundryTokenizer, ids: list[int], starts: list[int]) -> list[str]:
    """Each word's sub-tokens decoded, from its start up to the next word's start (or sep), spaces removed."""
    ends = starts[1:] + [len(ids) - 1]
    return ["".join(tok.decode(ids[start:end]).split()) for start, end in zip(starts, ends)]


@pytest.mark.parametrize("kind", TOKENIZER_TYPES)
def test_encode_words_points_at_each_words_first_token(tokenizers, kind):
    tok = tokenizers[kind]
    ids, starts, _ = encode_words(tok, WORDS, max_length=64)
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id and len(starts) == len(WORDS)
    assert starts == sorted(starts) and len(set(starts)) == len(WORDS) and starts[0] >= 1
    assert word_pieces(tok, ids, starts) == WORDS
    assert all(tok.id_to_token(ids[start]).strip("▁Ġ ") for start in starts)  # never a lone space marker


def test_char_word_starts_skip_the_space_tokens(tokenizers):
    tok = tokenizers["char"]
    ids, starts, _ = encode_words(tok, ["ab", "c", "zz"], max_length=20)
    assert starts == [1, 4, 6] and ids[3] == tok.token_to_id(" ")


def test_unigram_lone_marker_is_not_a_word_start(tokenizers):
    tok = tokenizers["unigram"]
    ids, starts, _ = encode_words(tok, ["zzq", "the"], max_length=20)  # unseen letters force a lone "▁"
    assert tok.id_to_token(ids[1]) == "▁" and starts[0] == 2


def test_bpe_non_ascii_words_split_inside_characters(tokenizers):
    tok = tokenizers["bpe"]
    words = ["東京", "é", "the", "naïveté"]
    ids, starts, _ = encode_words(tok, words, max_length=64)
    assert word_pieces(tok, ids, starts) == words
    assert starts[1] - starts[0] > 2  # unseen characters become several byte tokens, only the first a start
    assert tok.id_to_token(ids[starts[1] - 1]) == "Ġ"  # its space stands alone and belongs to no word
    assert tok.decode(ids[starts[1]:starts[2]]) == "é"


@pytest.mark.parametrize("kind", TOKENIZER_TYPES)
def test_encode_words_truncation_marks_cut_words(tokenizers, kind):
    tok = tokenizers[kind]
    full_ids, full_starts, _ = encode_words(tok, WORDS, max_length=64)
    max_length = full_starts[3] + 2  # cls ... the first token of word 3, then sep
    ids, starts, _ = encode_words(tok, WORDS, max_length=max_length)
    assert len(ids) == max_length and ids[-1] == tok.sep_id and ids[:-1] == full_ids[:max_length - 1]
    assert starts == full_starts[:4] + [-1, -1]
    with pytest.raises(UserError, match="max_length 2 leaves no room"):
        encode_words(tok, WORDS, max_length=2)


# ----- the collator -------------------------------------------------------------------------
def test_collator_pads_inputs_types_and_class_ids():
    collate = LabelledCollator(pad_id=0, pad_to_multiple_of=4)
    batch = collate([{"input_ids": [5, 6, 7], "token_type_ids": [0, 0, 1], "labels": 1},
                     {"input_ids": torch.tensor([8]), "token_type_ids": [0], "labels": 0}])
    assert batch["input_ids"].tolist() == [[5, 6, 7, 0], [8, 0, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0], [1, 0, 0, 0]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 1, 0], [0, 0, 0, 0]]
    assert batch["labels"].dtype == torch.int64 and batch["labels"].tolist() == [1, 0]


def test_collator_scores_and_multi_label_vectors_are_float():
    collate = LabelledCollator(pad_id=9)
    scores = collate([{"input_ids": [1, 2], "labels": 0.25}, {"input_ids": [3], "labels": 1.0}])
    assert scores["labels"].dtype == torch.float32 and scores["labels"].tolist() == [0.25, 1.0]
    assert "token_type_ids" not in scores and scores["input_ids"].tolist() == [[1, 2], [3, 9]]
    multi = collate([{"input_ids": [1], "labels": [1.0, 0.0, 1.0]}, {"input_ids": [2], "labels": [0.0, 0.0, 0.0]}])
    assert multi["labels"].dtype == torch.float32 and multi["labels"].shape == (2, 3)


def test_collator_per_token_and_per_word_labels():
    collate = LabelledCollator(pad_id=0, pad_to_multiple_of=4)
    tokens = collate([{"input_ids": [2, 5, 3], "labels": [-100, 4, -100]}, {"input_ids": [2, 3], "labels": [-100] * 2}])
    assert tokens["labels"].tolist() == [[-100, 4, -100, -100], [-100] * 4]
    words = collate([{"input_ids": [2, 5, 6, 3], "word_starts": [1, 2], "labels": [0, 1]},
                     {"input_ids": [2, 7, 3], "word_starts": [1], "labels": [2]}])
    assert words["word_starts"].tolist() == [[1, 2], [1, -1]]
    assert words["labels"].tolist() == [[0, 1], [2, -100]] and words["input_ids"].shape == (2, 4)
    with pytest.raises(ValueError, match="multi-label target vectors must be floats"):
        collate([{"input_ids": [2, 5, 3], "labels": [1, 0]}])
