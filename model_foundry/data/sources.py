"""Where corpora come from: resolving path specs, telling formats apart, streaming their texts.

Every reader streams, so a corpus larger than memory never has to fit in it. Mistakes in the
data (bad JSON, a missing column) are reported with the file and line, plus what would be valid.
"""
from __future__ import annotations

import csv
import glob
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO

from model_foundry.tokenizer.long_lines import read_line_pieces
from model_foundry.errors import UserError, did_you_mean
from model_foundry.tokenizer.utf8 import not_utf8

DATA_FORMATS = ("text", "jsonl", "csv", "tsv", "conllu", "conll", "pt")

# Plain text is read in chunks of whole lines about this many characters long: large enough that
# a tokenizer sees plenty of context per call, small enough that memory stays flat. A line longer
# than this is read in pieces of at most this many characters (`long_lines`), so a chunk never
# holds more than twice as many, whatever the length of the lines. 1 Mi characters is far above
# any real line of prose yet, at the few hundred bytes per character a tokenizer's encoding costs,
# keeps one chunk's encoding well under a gigabyte.
TEXT_CHUNK_CHARS = 1 << 20

FORMAT_BY_SUFFIX = {
    "": "text", ".txt": "text", ".text": "text", ".md": "text",
    ".jsonl": "jsonl", ".json": "jsonl",
    ".csv": "csv", ".tsv": "tsv", ".conllu": "conllu", ".conll": "conll", ".pt": "pt",
}
# TSV fields are never quoted: SST-2 style text holds bare quote characters that the csv module's
# default quoting would swallow, joining lines.
TABLE_DIALECTS = {"csv": {"delimiter": ","}, "tsv": {"delimiter": "\t", "quoting": csv.QUOTE_NONE}}
# CoNLL-2003 style files open each document with this line; it is not a word of any sentence.
CONLL_DOCUMENT_MARKER = "-DOCSTART-"
GLOB_CHARACTERS = set("*?[")


def resolve_paths(spec: str | Path | list[str | Path], key: str) -> list[Path]:
    """The files named by a config value: one file, a glob, or a list of files and globs.

    Each glob expands in sorted order so a run reads its files in the same order on every machine.
    `key` is the config key the spec came from, used in error messages.
    """
    entries = [spec] if isinstance(spec, (str, Path)) else list(spec)
    if not entries:
        raise UserError(f"{key} is an empty list; give a file, a glob such as 'corpus/*.txt', or a list of them.")
    paths: list[Path] = []
    for entry in entries:
        paths.extend(expand_entry(str(entry), key))
    return paths


def expand_entry(entry: str, key: str) -> list[Path]:
    pattern = str(Path(entry).expanduser())
    if GLOB_CHARACTERS & set(pattern):
        matches = sorted(Path(m) for m in glob.glob(pattern, recursive=True) if Path(m).is_file())
        if not matches:
            raise UserError(f"{key}: the glob {entry!r} matches no files (resolved against {Path.cwd()}).")
        return matches
    path = Path(pattern)
    if path.is_dir():
        raise UserError(f"{key}: {entry!r} is a directory; give its files with a glob such as '{entry}/*.txt'.")
    if not path.is_file():
        raise UserError(f"{key}: the file {entry!r} does not exist (resolved against {Path.cwd()}).")
    return [path]


def guess_format(path: str | Path) -> str:
    """The data format implied by a file's extension."""
    suffix = Path(path).suffix.lower()
    if suffix not in FORMAT_BY_SUFFIX:
        raise UserError(f"Cannot tell the format of {path} from its extension {suffix!r}; set data.format to "
                        f"one of {', '.join(DATA_FORMATS)}.")
    return FORMAT_BY_SUFFIX[suffix]


def iter_texts(path: str | Path, fmt: str, text_column: str = "text") -> Iterator[str]:
    """Stream the texts of one file.

    text: chunks of whole lines (newlines kept, so joining the chunks gives the file back);
    jsonl / csv / tsv: the `text_column` of each row; conllu: each sentence's text;
    conll: each sentence's tokens joined by spaces.
    """
    path = Path(path)
    if fmt == "text":
        yield from iter_text_chunks(path, TEXT_CHUNK_CHARS)
    elif fmt == "jsonl":
        yield from iter_jsonl_column(path, text_column)
    elif fmt in ("csv", "tsv"):
        yield from iter_table_column(path, text_column, fmt)
    elif fmt == "conllu":
        yield from iter_conllu_sentences(path)
    elif fmt == "conll":
        yield from iter_conll_sentences(path)
    elif fmt == "pt":
        raise UserError(f"{path} is a .pt file of token ids, not text; it cannot be tokenized again. Use it "
                        "as data directly with the tokenizer that made it (tokenizer.path).")
    else:
        raise UserError(f"Unknown data.format {fmt!r}; {did_you_mean(fmt, DATA_FORMATS)}")


def iter_text_chunks(path: Path, chunk_chars: int) -> Iterator[str]:
    """Whole lines grouped into chunks of at least `chunk_chars` characters (the last may be shorter).

    Chunks end on line boundaries, so a tokenizer that does not merge across newlines produces the
    same ids for the chunks as for the whole file. A line longer than `chunk_chars` comes in pieces
    of at most that many characters, cut before a space where every tokenizer kind gives the ids
    of the whole line (`long_lines`), so no chunk is longer than twice `chunk_chars`.
    """
    lines: list[str] = []
    size = 0
    with open_text(path) as handle:
        for line in read_lines(handle, path, chunk_chars):
            lines.append(line)
            size += len(line)
            if size >= chunk_chars:
                yield "".join(lines)
                lines, size = [], 0
    if lines:
        yield "".join(lines)


def iter_jsonl_column(path: Path, column: str) -> Iterator[str]:
    for where, row in iter_jsonl_rows(path, column):
        yield column_text(row, column, where, "data.text_column")


def iter_jsonl_rows(path: Path, column: str) -> Iterator[tuple[str, dict]]:
    """Each non-blank line's JSON object with its "path:line"; `column` names a field the caller
    needs, for the message when a line holds some other JSON value."""
    with open_text(path) as handle:
        for line_number, line in enumerate(read_lines(handle, path), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as error:
                raise UserError(f"{path}:{line_number}: not valid JSON ({error.msg}); the jsonl format expects "
                                "one JSON object per line.") from None
            if not isinstance(row, dict):
                raise UserError(f"{path}:{line_number}: expected a JSON object with a {column!r} field, "
                                f"found a {type(row).__name__}.")
            yield f"{path}:{line_number}", row


def iter_table_column(path: Path, column: str, fmt: str) -> Iterator[str]:
    """The `column` of each row of a CSV/TSV file whose first row names the columns."""
    with open_text(path, newline="") as handle:
        reader = csv.DictReader(handle, **TABLE_DIALECTS[fmt])
        try:
            header = reader.fieldnames or []
            if column not in header:
                raise UserError(f"{path}:1: the header has no column {column!r} (set data.text_column); the "
                                f"columns are {', '.join(map(repr, header)) or 'none'}.")
            for row in reader:
                yield column_text(row, column, f"{path}:{reader.line_num}", "data.text_column")
        except csv.Error as error:
            raise UserError(f"{path}:{reader.line_num}: cannot parse the row ({error}).") from None
        except UnicodeDecodeError:
            raise not_utf8(path) from None


def iter_conllu_sentences(path: Path) -> Iterator[str]:
    """Each sentence's `# text =` comment, or its word forms joined by spaces when there is none."""
    text, forms = None, []
    with open_text(path) as handle:
        for line in read_lines(handle, path):
            line = line.rstrip("\n")
            if line.startswith("# text ="):
                text = line.split("=", 1)[1].strip()
            elif line and not line.startswith("#"):
                fields = line.split("\t")
                if len(fields) > 1 and fields[0].isdigit():  # skip multiword ranges (1-2) and empty nodes (1.1)
                    forms.append(fields[1])
            elif not line and (text or forms):
                yield text if text is not None else " ".join(forms)
                text, forms = None, []
    if text or forms:
        yield text if text is not None else " ".join(forms)


def iter_conll_sentences(path: Path) -> Iterator[str]:
    """Each sentence's tokens (the first tab-separated field of its lines) joined by spaces."""
    for block in iter_line_blocks(path):
        tokens = [line.split("\t", 1)[0].strip() for _, line in block if not line.startswith(CONLL_DOCUMENT_MARKER)]
        if tokens:
            yield " ".join(tokens)


def iter_line_blocks(path: Path) -> Iterator[list[tuple[int, str]]]:
    """Runs of non-blank lines (newline stripped) with their 1-based line numbers: the sentences of
    the CoNLL formats, which separate sentences by blank lines."""
    block: list[tuple[int, str]] = []
    with open_text(path) as handle:
        for line_number, line in enumerate(read_lines(handle, path), start=1):
            line = line.rstrip("\r\n")
            if line.strip():
                block.append((line_number, line))
            elif block:
                yield block
                block = []
    if block:
        yield block


def column_text(row: dict, column: str, where: str, key: str) -> str:
    if column not in row or row[column] is None:
        raise UserError(f"{where}: the row has no {column!r} value (set {key}); the row's columns are "
                        f"{', '.join(map(repr, row)) or 'none'}.")
    value = row[column]
    if not isinstance(value, str):
        raise UserError(f"{where}: {column!r} should hold text, found a {type(value).__name__}.")
    return value


def open_text(path: Path, newline: str | None = None):
    return open(path, encoding="utf-8", newline=newline)


def read_lines(handle: TextIO, path: Path, max_chars: int | None = None) -> Iterator[str]:
    """The lines of an open text file, turning a decoding failure into a UserError naming the file.
    With `max_chars`, a longer line comes as pieces of at most that many characters (`read_line_pieces`)."""
    try:
        yield from handle if max_chars is None else read_line_pieces(handle, max_chars)
    except UnicodeDecodeError:
        raise not_utf8(path) from None
