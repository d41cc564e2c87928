"""Long lines in bounded pieces, cut where every tokenizer kind gives the ids of the whole line.

A line (or document) longer than a limit is read and tokenized in pieces of at most that many
characters, so memory does not grow with line length. A piece ends just before a space (U+0020)
that is followed by a non-whitespace character, and that space starts the next piece. Encoding
the pieces one by one then gives exactly the ids of encoding the line whole, for each kind:

- char: one token per character, so any cut is exact.
- wordpiece: BERT's pre-tokenizer drops every whitespace character, so any cut at one is exact.
- bpe (byte-level, GPT-2's split pattern): a space belongs to the word after it (` ?\\p{L}+`) and
  a run of whitespace leaves its last character to the next word, so a cut is exact only before
  the last whitespace character of a run; keeping the space on the left piece changes the ids.
- unigram (Metaspace): only spaces become the `▁` word-start mark that splits words (a tab or a
  newline does not), and a piece that starts with a space gets no second mark, so a cut before a
  space is exact and a cut at a tab is not.

When the last half of the limit holds no such space (a "word" of half a million characters), the
piece is cut at the limit: still exact for char, except for the spelling of a special token that
straddles the cut; for the other kinds such a word would tokenize differently whole.
"""
from __future__ import annotations

from collections.abc import Iterator
from typing import TextIO


def piece_end(text: str, limit: int) -> int:
    """Where the first piece of `text` (longer than `limit`) ends: before the last space in
    `text[limit // 2:limit]` that a non-whitespace character follows, else at `limit`."""
    position = text.rfind(" ", limit // 2, limit)
    while position >= 1 and text[position + 1].isspace():
        position = text.rfind(" ", limit // 2, position)
    return position if position >= 1 else limit


def cut_text(text: str, limit: int) -> Iterator[str]:
    """`text` as consecutive pieces of at most `limit` characters, cut by `piece_end` (one piece,
    possibly empty, when it fits)."""
    start = 0
    while len(text) - start > limit:
        end = start + piece_end(text[start:start + limit + 1], limit)
        yield text[start:end]
        start = end
    yield text[start:]


def read_line_pieces(handle: TextIO, limit: int) -> Iterator[str]:
    """The lines of an open text file (newlines kept), a line longer than `limit` characters as
    consecutive pieces cut by `piece_end`; joined, they give the file back. At most `limit` + 1
    characters of a line are held at once."""
    rest = ""
    while True:
        block = rest if rest.endswith("\n") else rest + handle.readline(limit + 1 - len(rest))
        if not block:
            return
        if len(block) <= limit:
            yield block
            rest = ""
        else:
            end = piece_end(block, limit)
            yield block[:end]
            rest = block[end:]
