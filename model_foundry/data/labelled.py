"""Labelled data for finetuning: reading examples, the label vocabulary, encoding for a model.

Sequence tasks (classification, multi-label, scoring) read one example per row of a TSV, CSV or
JSONL file; token classification reads one sentence of words and tags per example (CoNLL-U,
CoNLL or JSONL). Labels stay strings here: `LabelSet`, built from the training split, turns them
into class ids. Every example remembers its "path:line", so a bad label is reported where it is.
Encoding cuts an example to the model's length limit and returns what it cut (`Truncations`);
the caller adds those up over a split and `report_truncations` says so in one line, since a cut
example silently trains on part of its text.
"""
from __future__ import annotations

import csv
import sys
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from model_foundry.data.conll import TokenExample, read_conll, read_conllu
from model_foundry.data.sources import TABLE_DIALECTS, column_text, iter_jsonl_rows, not_utf8, open_text
from model_foundry.errors import UserError, closest
from model_foundry.tokenizer import FoundryTokenizer

SEQUENCE_FORMATS = ("tsv", "csv", "jsonl")
TOKEN_FORMATS = ("conllu", "conll", "tsv", "jsonl")
Label = str | list[str]


@dataclass
class SequenceExample:
    """One text (or text pair) with its label: a class name, a list of class names (multi-label)
    or a score written as text. `source` is "path:line" of the row."""

    text: str
    pair: str | None
    label: Label | None
    source: str


# ----- reading sequence examples ------------------------------------------------------------

def read_sequence_examples(path: str | Path, fmt: str, *, text_column: str = "text", pair_column: str | None = None,
                           label_column: str = "label", require_labels: bool = True) -> list[SequenceExample]:
    """Every row of a tsv / csv (first row = column names) or jsonl file, blank lines skipped.

    With `require_labels` every row needs a label; without it (prediction) a missing label is None.
    """
    path = Path(path)
    if fmt == "jsonl":
        rows = iter_jsonl_rows(path, text_column)
    elif fmt in TABLE_DIALECTS:
        needed = [text_column, pair_column] + ([label_column] if require_labels else [])
        rows = iter_table_rows(path, fmt, [column for column in needed if column])
    else:
        raise UserError(f"{path}: sequence tasks read {', '.join(SEQUENCE_FORMATS)} files, not {fmt!r}; "
                        "set data.format to one of them.")
    return [sequence_example(row, where, text_column, pair_column, label_column, require_labels)
            for where, row in rows]


def iter_table_rows(path: Path, fmt: str, needed: list[str]) -> Iterator[tuple[str, dict[str, str]]]:
    """Each non-blank row of a CSV/TSV file as {column: value} with the "path:line" it starts on.

    The header must name every `needed` column, and each row must have as many fields as the
    header: an extra tab inside a TSV text would otherwise shift the label into the wrong column.
    """
    with open_text(path, newline="") as handle:
        reader = csv.reader(handle, **TABLE_DIALECTS[fmt])
        try:
            header = read_header(reader, path, needed)
            last_line = reader.line_num
            for fields in reader:
                where = f"{path}:{last_line + 1}"
                last_line = reader.line_num
                if not any(field.strip() for field in fields):
                    continue
                if len(fields) != len(header):
                    raise UserError(f"{where}: the row has {len(fields)} fields but the header names "
                                    f"{len(header)} columns ({', '.join(map(repr, header))}).")
                yield where, dict(zip(header, fields))
        except csv.Error as error:
            raise UserError(f"{path}:{reader.line_num}: cannot parse the row ({error}).") from None
        except UnicodeDecodeError:
            raise not_utf8(path) from None


def read_header(reader, path: Path, needed: list[str]) -> list[str]:
    header = next(reader, [])
    if header:
        header[0] = header[0].removeprefix("\ufeff")  # spreadsheet programs start UTF-8 files with a BOM
    for column in needed:
        if column not in header:
            raise UserError(f"{path}:1: the header has no column {column!r} (check data.text_column, "
                            f"data.text_pair_column and data.label_column); the columns are "
                            f"{', '.join(map(repr, header)) or 'none'}.")
    return header


def sequence_example(row: dict, where: str, text_column: str, pair_column: str | None, label_column: str,
                     require_labels: bool) -> SequenceExample:
    text = non_empty_text(row, text_column, where, "data.text_column")
    pair = non_empty_text(row, pair_column, where, "data.text_pair_column") if pair_column else None
    label = label_value(row.get(label_column), where, label_column)
    if label is None and require_labels:
        raise missing_label(row, where, label_column)
    return SequenceExample(text, pair, label, where)


def non_empty_text(row: dict, column: str, where: str, key: str) -> str:
    text = column_text(row, column, where, key)
    if not text.strip():
        raise UserError(f"{where}: the {column!r} text is empty; every example needs some text.")
    return text


def label_value(value: object, where: str, column: str) -> Label | None:
    """A label as a stripped string (JSON numbers become their text), a list of them for
    multi-label rows, or None when the row has none."""
    if isinstance(value, list):
        return [scalar_label(item, where, column) for item in value]
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return scalar_label(value, where, column)


def scalar_label(value: object, where: str, column: str) -> str:
    if isinstance(value, (str, int, float)):
        label = str(value).strip()
        if label:
            return label
    raise UserError(f"{where}: {column!r} holds {value!r}; a label is a class name, a number, or (multi-label) "
                    "a list of class names.")


def missing_label(row: dict, where: str, column: str) -> UserError:
    if column in row:
        return UserError(f"{where}: the {column!r} label is empty; every training and evaluation row needs one.")
    return UserError(f"{where}: the row has no {column!r} label (set data.label_column); the row's columns are "
                     f"{', '.join(map(repr, row)) or 'none'}.")


# ----- reading token examples ---------------------------------------------------------------

def read_token_examples(path: str | Path, fmt: str, *, text_column: str = "tokens", label_column: str = "label",
                        require_labels: bool = True) -> list[TokenExample]:
    """Every sentence of a conllu, conll (`token<TAB>tag`; a .tsv given to a token task is read
    the same way) or jsonl file (`{text_column: [words], label_column: [tags]}` per line).

    For conllu, `label_column` names the tag column (the default "label" means UPOS) and the words
    are always the FORM column.
    """
    path = Path(path)
    if fmt == "conllu":
        return read_conllu(path, label_column)
    if fmt in ("conll", "tsv"):
        return read_conll(path, require_labels)
    if fmt == "jsonl":
        return [tagged_row(row, where, text_column, label_column, require_labels)
                for where, row in iter_jsonl_rows(path, text_column)]
    raise UserError(f"{path}: token classification reads {', '.join(TOKEN_FORMATS)} files, not {fmt!r}; "
                    "set data.format to one of them.")


def tagged_row(row: dict, where: str, text_column: str, label_column: str, require_labels: bool) -> TokenExample:
    words = row.get(text_column)
    if not isinstance(words, list) or not words or not all(isinstance(w, str) and w.strip() for w in words):
        raise UserError(f"{where}: {text_column!r} should be a non-empty list of words (set data.text_column), "
                        f"e.g. {{{text_column!r}: [\"The\", \"cat\"], {label_column!r}: [\"DET\", \"NOUN\"]}}; "
                        f"found {words!r:.80}.")
    tags = row.get(label_column)
    if tags is None:
        if require_labels:
            raise missing_label(row, where, label_column)
        return TokenExample(words, None, where)
    if not isinstance(tags, list):
        raise UserError(f"{where}: {label_column!r} should be a list with one tag per word, found {tags!r:.80}.")
    if len(tags) != len(words):
        raise UserError(f"{where}: {len(words)} words in {text_column!r} but {len(tags)} tags in "
                        f"{label_column!r}; every word needs exactly one tag.")
    return TokenExample(words, [scalar_label(tag, where, label_column) for tag in tags], where)


# ----- the label vocabulary -----------------------------------------------------------------

class LabelSet:
    """The class names a classifier predicts, in output order. Built from the training split
    only and saved with the run, so a checkpoint always knows what its outputs mean."""

    def __init__(self, labels: Sequence[str]):
        self.labels = list(labels)
        self.ids = {label: i for i, label in enumerate(self.labels)}
        if len(self.ids) != len(self.labels):
            raise ValueError(f"A label set cannot repeat a label: {self.labels}")

    @classmethod
    def from_values(cls, values: Iterable[str]) -> LabelSet:
        """The distinct values in natural order: numerically when every label is an integer
        ("2" before "10"), else alphabetically."""
        distinct = set(values)
        if all(is_integer(label) for label in distinct):
            return cls(sorted(distinct, key=lambda label: (int(label), label)))
        return cls(sorted(distinct))

    def __len__(self) -> int:
        return len(self.labels)

    def index(self, label: str, source: str, split_key: str) -> int:
        """The class id of `label`; `source` and `split_key` say where it came from if unknown."""
        if label in self.ids:
            return self.ids[label]
        near = closest(label, self.labels, n=1)
        hint = f" Did you mean {near[0]!r}?" if near else ""
        raise UserError(f"{source}: label {label!r} never appears in the training split (data.train.path), so the "
                        f"model has no output for it; labels seen in training: {', '.join(self.labels)}.{hint} "
                        f"Correct it in {split_key} or add training examples with that label.")

    def to_json(self) -> list[str]:
        return list(self.labels)

    @classmethod
    def from_json(cls, values: list) -> LabelSet:
        if not isinstance(values, list) or not all(isinstance(label, str) for label in values):
            raise UserError(f"A saved label set is a JSON list of label strings; found {values!r:.80}. The run's "
                            "label file was edited or damaged; retrain or restore it.")
        return cls(values)

    def __repr__(self) -> str:
        return f"LabelSet({self.labels!r})"


def is_integer(label: str) -> bool:
    try:
        int(label)
    except ValueError:
        return False
    return True


# ----- truncation ---------------------------------------------------------------------------

@dataclass(frozen=True)
class Truncations:
    """What encoding cut, for one example or added up over a split: examples encoded, examples cut,
    and (tagging) words whose first sub-token fell past the cut, which then count in neither the
    loss nor the metrics."""

    examples: int = 0
    cut: int = 0
    words: int = 0

    @classmethod
    def of_one(cls, cut: bool, words: int = 0) -> Truncations:
        return cls(examples=1, cut=int(cut), words=words)

    def __add__(self, other: Truncations) -> Truncations:
        return Truncations(self.examples + other.examples, self.cut + other.cut, self.words + other.words)


def length_limit(tokenizer_max_length: int | None, block_size: int) -> tuple[int, str]:
    """The longest input a finetuning example may have, and the config key that sets it:
    `tokenizer.max_length` when it is below `model.block_size`, else `model.block_size`."""
    if tokenizer_max_length is not None and tokenizer_max_length < block_size:
        return tokenizer_max_length, "tokenizer.max_length"
    return block_size, "model.block_size"


def report_truncations(tally: Truncations, split: str, max_length: int, limit_key: str) -> None:
    """One warning line on stderr when encoding a split (e.g. "data.train.path") cut anything."""
    if tally.cut:
        print(truncation_message(tally, split, max_length, limit_key), file=sys.stderr)


def truncation_message(tally: Truncations, split: str, max_length: int, limit_key: str) -> str:
    words = (f"; {tally.words} word(s) past the cut get no label in the loss and the metrics"
             if tally.words else "")
    return (f"warning: {tally.cut} of {tally.examples} example(s) in {split} were cut to {max_length} tokens "
            f"(the limit {limit_key} sets){words}.")


# ----- encoding -----------------------------------------------------------------------------

def encode_sequence(tokenizer: FoundryTokenizer, text: str, pair: str | None,
                    max_length: int) -> tuple[dict[str, list[int]], Truncations]:
    """`cls text sep [pair sep]` cut to `max_length` (longer text first), with BERT's segment
    ids: 0 up to and including the first sep, 1 for the pair after it; and whether it was cut.

    The whole text is encoded once; only one that does not fit is encoded again, by the
    tokenizer's own truncation (which keeps its template's special tokens).
    """
    input_ids = tokenizer.encode_for_model(text, pair)
    cut = len(input_ids) > max_length
    if cut:
        input_ids = tokenizer.encode_for_model(text, pair, max_length)
    first_segment = input_ids.index(tokenizer.sep_id) + 1
    token_type_ids = [0] * first_segment + [1] * (len(input_ids) - first_segment)
    return {"input_ids": input_ids, "token_type_ids": token_type_ids}, Truncations.of_one(cut)


def encode_words(tokenizer: FoundryTokenizer, words: list[str],
                 max_length: int) -> tuple[list[int], list[int], Truncations]:
    """`cls + sub-tokens of the words joined by spaces + sep`, at most `max_length` ids; the
    position of each word's first sub-token (-1 for a word truncation cut off, or one the
    tokenizer produced no token for); and what the cut took.
    """
    budget = word_budget(max_length)
    ids, starts = word_token_starts(tokenizer, words)
    truncations = Truncations.of_one(len(ids) > budget, sum(start >= budget for start in starts))
    positions = [start + 1 if 0 <= start < budget else -1 for start in starts]
    return [tokenizer.cls_id, *ids[:budget], tokenizer.sep_id], positions, truncations


def words_within(tokenizer: FoundryTokenizer, words: list[str], max_length: int) -> int:
    """How many leading words fit whole within `max_length` (at least one, cut if it alone is
    too long), so a sentence too long for the model can be tagged in pieces that each fit."""
    budget = word_budget(max_length)
    ids, starts = word_token_starts(tokenizer, words)
    if len(ids) <= budget:
        return len(words)
    # Word k starting at or before the budget means every word before it fits whole.
    return max([1] + [index for index, start in enumerate(starts) if 0 <= start <= budget])


def word_budget(max_length: int) -> int:
    """The sub-tokens the words may take: `max_length` less cls and sep."""
    if max_length < 3:
        raise UserError(f"max_length {max_length} leaves no room for words after the two special tokens; "
                        "raise tokenizer.max_length.")
    return max_length - 2


def word_token_starts(tokenizer: FoundryTokenizer, words: list[str]) -> tuple[list[int], list[int]]:
    """The sub-token ids of the words joined by spaces (uncut), and the index of each word's first
    sub-token among them (-1 for a word the tokenizer produced no token for).

    The words are encoded as one text, so each sub-token has the context the tokenizer saw in
    pretraining; character offsets then tell which word each sub-token came from.
    """
    text, word_of_char = join_words(words)
    ids, offsets = tokenizer.encode_with_offsets(text)
    starts = [-1] * len(words)
    for position, (token_id, span) in enumerate(zip(ids, offsets)):
        word = token_word(tokenizer.id_to_token(token_id), span, text, word_of_char)
        if word >= 0 and starts[word] < 0:
            starts[word] = position
    return ids, starts


def join_words(words: list[str]) -> tuple[str, list[int]]:
    """The words joined by single spaces, and for each character the index of its word (-1 for
    the joining spaces)."""
    word_of_char: list[int] = []
    for index, word in enumerate(words):
        if index:
            word_of_char.append(-1)
        word_of_char.extend([index] * len(word))
    return " ".join(words), word_of_char


def token_word(token: str | None, span: tuple[int, int], text: str, word_of_char: list[int]) -> int:
    """The word a sub-token belongs to: that of the first non-space character it covers. Tokens
    of spaces alone belong to none; unigram's lone `▁` is one of them although `tokenizers` gives
    it the span of the character after it."""
    if token is not None and not token.replace("▁", "").strip():
        return -1
    start, end = span
    for char in range(start, end):
        if not text[char].isspace():
            return word_of_char[char]
    return -1
