"""Tagged sentences from the two CoNLL formats, which both put one word per line and separate
sentences by blank lines.

- CoNLL-U (Universal Dependencies): ten tab-separated columns per word; the tags come from any
  one of them (UPOS by default). Comment lines, multiword-token ranges ("3-4") and empty nodes
  ("5.1") are skipped, so the words are the syntactic words the tags belong to.
- CoNLL (CoNLL-2003 style, also any `token<TAB>tag` TSV): the token is the first tab-separated
  field and the tag the last, so extra columns in between (POS, chunk) are ignored.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from model_foundry.data.sources import CONLL_DOCUMENT_MARKER, iter_line_blocks
from model_foundry.errors import UserError, did_you_mean

CONLLU_COLUMNS = ("id", "form", "lemma", "upos", "xpos", "feats", "head", "deprel", "deps", "misc")
FORM_COLUMN = CONLLU_COLUMNS.index("form")
# `data.label_column` defaults to "label" for every task; for CoNLL-U that means the UPOS tags.
DEFAULT_TAG_COLUMN = "upos"

Block = list[tuple[int, str]]


@dataclass
class TokenExample:
    """One sentence for token classification: its words and, when labelled, one tag per word.
    `source` is "path:line" of the sentence's first line, for error messages."""

    words: list[str]
    tags: list[str] | None
    source: str


def read_conllu(path: str | Path, label_column: str = "label") -> list[TokenExample]:
    """Every sentence of a CoNLL-U file, tagged with the column `label_column` names."""
    path = Path(path)
    column = conllu_column_index(label_column)
    return [conllu_sentence(block, path, column) for block in iter_line_blocks(path)]


def conllu_column_index(label_column: str) -> int:
    name = label_column.lower()
    if name == "label":
        name = DEFAULT_TAG_COLUMN
    if name not in CONLLU_COLUMNS:
        raise UserError(f"data.label_column {label_column!r} is not a CoNLL-U column; "
                        f"{did_you_mean(name, CONLLU_COLUMNS)}")
    return CONLLU_COLUMNS.index(name)


def conllu_sentence(block: Block, path: Path, column: int) -> TokenExample:
    words, tags = [], []
    for line_number, line in block:
        if line.startswith("#"):
            continue
        fields = line.split("\t")
        if len(fields) != len(CONLLU_COLUMNS):
            raise UserError(f"{path}:{line_number}: a CoNLL-U word line has {len(CONLLU_COLUMNS)} tab-separated "
                            f"fields ({' '.join(c.upper() for c in CONLLU_COLUMNS)}); this one has {len(fields)}.")
        if fields[0].isdigit():  # ranges ("3-4") and empty nodes ("5.1") carry no tag of their own
            words.append(fields[FORM_COLUMN])
            tags.append(fields[column])
    if not words:
        raise UserError(f"{path}:{block[0][0]}: this sentence has no word lines (only comments, multiword "
                        "ranges or empty nodes); every sentence needs at least one numbered word line.")
    return TokenExample(words, tags, f"{path}:{block[0][0]}")


def read_conll(path: str | Path, require_labels: bool = True) -> list[TokenExample]:
    """Every sentence of a `token<TAB>tag` file. Without `require_labels`, a sentence whose lines
    are bare tokens (nothing to predict from but the words) gets `tags=None`."""
    path = Path(path)
    sentences = []
    for block in iter_line_blocks(path):
        lines = [(n, line) for n, line in block if not line.startswith(CONLL_DOCUMENT_MARKER)]
        if lines:
            sentences.append(conll_sentence(lines, path, require_labels))
    return sentences


def conll_sentence(lines: Block, path: Path, require_labels: bool) -> TokenExample:
    rows = [(line_number, line.split("\t")) for line_number, line in lines]
    words = [conll_word(fields[0], f"{path}:{line_number}") for line_number, fields in rows]
    tagged = [len(fields) > 1 for _, fields in rows]
    source = f"{path}:{lines[0][0]}"
    if not any(tagged) and not require_labels:
        return TokenExample(words, None, source)
    for (line_number, line), has_tag in zip(lines, tagged):
        if not has_tag:
            raise UserError(f"{path}:{line_number}: expected `token<TAB>tag`, found no tab in {line!r}."
                            f"{space_separated_hint(line)}")
    tags = [fields[-1].strip() for _, fields in rows]
    for (line_number, _), tag in zip(rows, tags):
        if not tag:
            raise UserError(f"{path}:{line_number}: the tag (the last tab-separated field) is empty.")
    return TokenExample(words, tags, source)


def conll_word(token: str, where: str) -> str:
    word = token.strip()
    if not word:
        raise UserError(f"{where}: the token (the first tab-separated field) is empty.")
    return word


def space_separated_hint(line: str) -> str:
    if " " not in line.strip():
        return " Every line of a tagged sentence needs its tag after a tab."
    return (" Its fields look space-separated (CoNLL-2003 style); separate the token and the tag with a tab, "
            "e.g. `sed -E 's/ +/\\t/g'`.")
