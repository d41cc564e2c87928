"""Finding the first byte of a file that is not UTF-8, for an error a user can act on.

The `tokenizers` trainer reads files itself and reports bad bytes only as "stream did not contain
valid UTF-8", and Python's text reader reports an offset inside its buffer, not the file. Both
the tokenizer trainer and the corpus readers of `model_foundry.data` use this module instead, so
the message names the file and the byte offset (and line) where the problem is.
"""
from __future__ import annotations

import codecs
from pathlib import Path

from model_foundry.errors import UserError

# Files are read in blocks of this many bytes: memory stays flat however large the corpus.
SCAN_BLOCK_BYTES = 1 << 20


def check_utf8(path: Path) -> None:
    """Raise a UserError naming the first invalid byte when `path` is not UTF-8 text.

    Run before a file goes to the `tokenizers` trainer, whose own error names neither the file nor
    the place; one sequential read, cheap next to training on the same bytes.
    """
    offset = first_invalid_byte(path)
    if offset is not None:
        raise not_utf8(path, offset)


def first_invalid_byte(path: Path) -> int | None:
    """The offset of the first byte that does not decode as UTF-8, or None when the file is valid.

    An incremental decoder carries a character split across two blocks over to the next one, so
    the block size never causes a false error; a file ending inside a character is invalid at the
    start of that character.
    """
    decoder = codecs.getincrementaldecoder("utf-8")()
    consumed = 0  # bytes handed to the decoder so far
    with open(path, "rb") as handle:
        while block := handle.read(SCAN_BLOCK_BYTES):
            pending = len(decoder.getstate()[0])
            try:
                decoder.decode(block)
            except UnicodeDecodeError as error:  # error.start counts from the pending bytes
                return consumed - pending + error.start
            consumed += len(block)
    pending = len(decoder.getstate()[0])
    return consumed - pending if pending else None


def line_of_offset(path: Path, offset: int) -> int:
    """The 1-based line that holds byte `offset` (for editors, which count lines, not bytes)."""
    newlines, remaining = 0, offset
    with open(path, "rb") as handle:
        while remaining > 0 and (block := handle.read(min(SCAN_BLOCK_BYTES, remaining))):
            newlines += block.count(b"\n")
            remaining -= len(block)
    return newlines + 1


def not_utf8(path: Path, offset: int | None = None) -> UserError:
    """The error for a file that is not UTF-8, saying where and how to convert it.

    Without `offset` the file is scanned for it: callers that hit a decoding error while reading
    text only know that one happened, not where in the file.
    """
    offset = first_invalid_byte(path) if offset is None else offset
    where = ""
    if offset is not None:
        where = f" (its first invalid byte is at offset {offset}, line {line_of_offset(path, offset)})"
    return UserError(f"{path} is not UTF-8 text{where}. Text data and tokenizer training files must be UTF-8: "
                     f"convert it first, e.g. `iconv -f LATIN1 -t UTF-8 {path} > converted.txt` (with -f the "
                     "file's real encoding), or leave the file out if it is not text at all.")
