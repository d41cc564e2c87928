"""Where a token-cache build stands, so a killed build continues instead of starting over.

A build appends to `<key>.bin.partial` and, every CHECKPOINT_BYTES of text, flushes and fsyncs
it and then replaces `<key>.journal.json` with the point reached: the file being read, how many
of its pieces are done, the tokens written and the words counted so far. A rerun truncates the
partial file to the journalled tokens (dropping whatever was written after the checkpoint),
skips the journalled pieces without tokenizing them, and goes on: the finished file is the one
an uninterrupted build writes, byte for byte. A journal that does not match (another piece size,
a partial file shorter than it says) is ignored and the build starts afresh.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

CHECKPOINT_BYTES = 64 << 20


@dataclass(frozen=True)
class Checkpoint:
    """A point a build can continue from. `pieces_done`: pieces of file `file_index` already
    written; `inside_word`: whether the last of them ended inside a word (`WordCounter`)."""

    file_index: int = 0
    pieces_done: int = 0
    num_tokens: int = 0
    num_words: int = 0
    inside_word: bool = False
    bytes_done: int = 0
    piece_chars: int = 0


def read_checkpoint(journal_path: Path, partial_path: Path, itemsize: int, piece_chars: int) -> Checkpoint:
    """The journalled point when it can be continued from, else the start (and the partial file,
    if any, is emptied)."""
    try:
        checkpoint = Checkpoint(**json.loads(journal_path.read_text(encoding="utf-8")))
    except (OSError, json.JSONDecodeError, TypeError):
        checkpoint = None
    usable = (checkpoint is not None and checkpoint.piece_chars == piece_chars and partial_path.is_file()
              and partial_path.stat().st_size >= checkpoint.num_tokens * itemsize)
    if not usable:
        checkpoint = Checkpoint(piece_chars=piece_chars)
    with open(partial_path, "ab") as handle:
        handle.truncate(checkpoint.num_tokens * itemsize)
    return checkpoint


def write_checkpoint(journal_path: Path, checkpoint: Checkpoint) -> None:
    """Replace the journal atomically and durably; call only once the tokens it counts are fsynced."""
    tmp_path = journal_path.with_name(f"{journal_path.name}.tmp")
    with open(tmp_path, "w", encoding="utf-8") as handle:
        json.dump(asdict(checkpoint), handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp_path, journal_path)
