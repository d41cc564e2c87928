"""Tokenize a corpus once into a flat, memory-mapped file of token ids, cached by content hash.

The cache key is a hash of everything that decides the ids: the bytes of every input file, the
tokenizer (its full serialised form), the format, the text column and the separator. A second run
on the same inputs maps the existing file at once; a changed file or tokenizer builds a new one.

A build writes to a temporary file and renames it into place, and the metadata file (which marks
the entry as complete) is written last, so a killed build never leaves a half file that looks done.

The metadata also holds the corpus's words (whitespace-separated, `str.split`, counted while the
texts are tokenized), so a run can say how many words of text its windows stand for
(`training.save_at_words`).
"""
from __future__ import annotations

import fcntl
import hashlib
import itertools
import json
import os
import sys
import time
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, NamedTuple, Protocol, TypeVar

import numpy as np

import model_foundry.data.cache_journal as cache_journal
import model_foundry.data.sources as sources
from model_foundry.data.cache_journal import Checkpoint, read_checkpoint, write_checkpoint
from model_foundry.data.parallel_encoding import BatchEncoder
from model_foundry.data.sources import iter_texts
from model_foundry.errors import UserError
from model_foundry.tokenizer.long_lines import cut_text

# Bump when the layout of cached files or the way they are built changes: old entries then miss.
# 2: the metadata holds num_words.
CACHE_FORMAT_VERSION = 2
HASH_BLOCK_BYTES = 1 << 20
# encode_batch gets up to this many texts / characters at once: enough for the tokenizer's own
# parallelism, bounded so memory stays flat however large the corpus.
ENCODE_BATCH_TEXTS = 1024
ENCODE_BATCH_CHARS = 8 << 20

T = TypeVar("T")


class TokenizerLike(Protocol):
    """What the data pipeline needs from a tokenizer."""

    vocab_size: int
    pad_id: int | None
    mask_id: int | None
    eos_id: int | None
    special_ids: Collection[int]

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...


@dataclass(frozen=True)
class TokenFile:
    """A flat file of token ids on disk; `array()` maps it read-only without loading it. `num_words`:
    the whitespace-separated words of the texts its tokens came from."""

    path: Path
    dtype: type
    num_tokens: int
    num_words: int

    def array(self) -> np.memmap:
        return np.memmap(self.path, dtype=self.dtype, mode="r", shape=(self.num_tokens,))


def tokenize_to_cache(paths: Sequence[Path], tokenizer: TokenizerLike, cache_dir: str | Path, *, fmt: str,
                      text_column: str = "text", separator_id: int | None = None,
                      num_workers: int = 1) -> TokenFile:
    """The token file of `paths` under `tokenizer`, built on the first call and reused after.

    Documents are the rows of jsonl/csv/tsv files, the sentences of conllu files, and whole text
    files (streamed in chunks of whole lines, joined without a separator). Each document is
    followed by `separator_id` when it is not None, so files are separated too. A line or document
    longer than `sources.TEXT_CHUNK_CHARS` is tokenized in bounded pieces with no separator
    between them, cut where the ids equal those of the whole (`long_lines`).

    `num_workers` > 1 encodes in that many processes (`parallel_encoding`); the file is the same
    byte for byte. A build that was killed continues from its last checkpoint (`cache_journal`).
    """
    cache_dir = Path(cache_dir)
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    key = cache_key(paths, tokenizer, fmt, text_column, separator_id, dtype)
    bin_path, meta_path = cache_dir / f"{key}.bin", cache_dir / f"{key}.json"
    cached = read_cached(bin_path, meta_path, dtype)
    if cached is not None:
        return cached
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f"{key}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process building the same entry finishes first
        cached = read_cached(bin_path, meta_path, dtype)
        if cached is not None:
            return cached
        partial_path, journal_path = cache_dir / f"{key}.bin.partial", cache_dir / f"{key}.journal.json"
        checkpoint = read_checkpoint(journal_path, partial_path, np.dtype(dtype).itemsize, sources.TEXT_CHUNK_CHARS)
        resumed = f", continuing from {checkpoint.bytes_done / 1e6:,.0f} MB" if checkpoint.num_tokens else ""
        print(f"Tokenizing {len(paths)} file(s) into {bin_path} (cached for later runs){resumed}...", file=sys.stderr)
        separator = [] if separator_id is None else [separator_id]
        with open(partial_path, "r+b") as out, BatchEncoder(tokenizer, separator, dtype, num_workers) as encoder:
            out.seek(checkpoint.num_tokens * np.dtype(dtype).itemsize)
            progress = ProgressLine(sum(os.path.getsize(p) for p in paths), checkpoint.bytes_done)
            num_tokens, num_words = write_tokens(out, paths, encoder, fmt, text_column, checkpoint,
                                                 lambda point: save_checkpoint(out, journal_path, point), progress)
            progress.finish(num_tokens)
        if num_tokens == 0:
            for path in (partial_path, journal_path):
                path.unlink(missing_ok=True)
            raise UserError(f"Tokenizing {', '.join(map(str, paths))} gave no tokens: the data is empty "
                            f"(check data.format {fmt!r} and data.text_column {text_column!r}).")
        os.replace(partial_path, bin_path)
        journal_path.unlink(missing_ok=True)
        metadata = {"format_version": CACHE_FORMAT_VERSION, "dtype": np.dtype(dtype).name,
                    "num_tokens": num_tokens, "num_words": num_words, "files": [str(p) for p in paths],
                    "format": fmt, "text_column": text_column, "separator_id": separator_id}
        write_json_atomically(meta_path, metadata)
    return TokenFile(bin_path, dtype, num_tokens, num_words)


def cache_key(paths: Sequence[Path], tokenizer: TokenizerLike, fmt: str, text_column: str,
              separator_id: int | None, dtype: type) -> str:
    parts = {"version": CACHE_FORMAT_VERSION, "files": [file_sha256(p) for p in paths],
             "tokenizer": hashlib.sha256(tokenizer_identity(tokenizer).encode()).hexdigest(),
             "format": fmt, "text_column": text_column, "separator_id": separator_id,
             "dtype": np.dtype(dtype).name}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:32]


def file_sha256(path: Path) -> str:
    """The hash of a file's bytes, read in blocks so any size fits in memory."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def tokenizer_identity(tokenizer: TokenizerLike) -> str:
    """A string that changes whenever the tokenizer would produce different ids.

    The serialised `tokenizers` backend covers everything (model, normaliser, pre-tokeniser,
    added tokens); without one, the vocabulary is the next best thing.
    """
    backend = getattr(tokenizer, "backend", None)
    if backend is not None and hasattr(backend, "to_str"):
        return backend.to_str()
    get_vocab = getattr(tokenizer, "get_vocab", None)
    vocab = get_vocab() if callable(get_vocab) else getattr(tokenizer, "vocab", None)
    if vocab is None:
        raise TypeError(f"{type(tokenizer).__name__} exposes neither `backend.to_str()` nor a vocabulary, "
                        "so its token cache could not tell it apart from another tokenizer.")
    return json.dumps({"class": type(tokenizer).__qualname__, "vocab": vocab}, sort_keys=True, default=str)


def read_cached(bin_path: Path, meta_path: Path, dtype: type) -> TokenFile | None:
    """The cached entry when it is complete and consistent, else None (it will be rebuilt)."""
    if not (meta_path.is_file() and bin_path.is_file()):
        return None
    try:
        metadata = json.loads(meta_path.read_text(encoding="utf-8"))
        num_tokens, num_words = int(metadata["num_tokens"]), int(metadata["num_words"])
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        return None
    expected_bytes = num_tokens * np.dtype(dtype).itemsize
    if metadata.get("dtype") != np.dtype(dtype).name or bin_path.stat().st_size != expected_bytes:
        return None
    return TokenFile(bin_path, dtype, num_tokens, num_words)


def write_tokens(out: BinaryIO, paths: Sequence[Path], encoder: BatchEncoder, fmt: str, text_column: str,
                 start: Checkpoint, save: Callable[[Checkpoint], None], progress: ProgressLine) -> tuple[int, int]:
    """Append every document's ids (and separators) to `out` from checkpoint `start` on; returns
    how many tokens the file holds and how many whitespace-separated words their texts hold (a
    word cut between two pieces of a long line counts once). `save` is called with each new
    checkpoint, every CHECKPOINT_BYTES of text, once its tokens are written."""
    written, words, done_bytes = start.num_tokens, start.num_words, start.bytes_done
    itemsize = np.dtype(encoder.dtype).itemsize
    for file_index in range(start.file_index, len(paths)):
        resuming = file_index == start.file_index
        pieces_done = start.pieces_done if resuming else 0
        counter = WordCounter(start.inside_word if resuming else False)
        pieces = document_pieces(iter_texts(paths[file_index], fmt, text_column), fmt, sources.TEXT_CHUNK_CHARS)
        batches = ((batch, [piece.text for piece in batch], [piece.ends_document for piece in batch])
                   for batch in batched_texts(itertools.islice(pieces, pieces_done, None),
                                              size=lambda piece: len(piece.text)))
        since_checkpoint = 0
        for batch, encoded in encoder.encode(batches):
            out.write(encoded)
            written += len(encoded) // itemsize
            words += sum(counter.count(piece) for piece in batch)
            pieces_done += len(batch)
            batch_bytes = sum(len(piece.text.encode("utf-8")) for piece in batch)
            done_bytes += batch_bytes
            since_checkpoint += batch_bytes
            progress.update(done_bytes)
            if since_checkpoint >= cache_journal.CHECKPOINT_BYTES:
                save(Checkpoint(file_index, pieces_done, written, words, counter.inside_word, done_bytes,
                                sources.TEXT_CHUNK_CHARS))
                since_checkpoint = 0
        if fmt == "text" and encoder.separator:
            out.write(np.asarray(encoder.separator, dtype=encoder.dtype).tobytes())
            written += len(encoder.separator)
    return written, words


def format_seconds(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes // 60}:{minutes % 60:02d}:{secs:02d}" if minutes >= 60 else f"{minutes}:{secs:02d}"


def save_checkpoint(out: BinaryIO, journal_path: Path, checkpoint: Checkpoint) -> None:
    """Make the tokens written so far durable, then journal the point they reach."""
    out.flush()
    os.fsync(out.fileno())
    write_checkpoint(journal_path, checkpoint)


class ProgressLine:
    """MB of text tokenized, MB/s and the time left, on stderr: redrawn in place on a terminal,
    else a line every LOG_SECONDS (so logs of long builds show progress and tests stay quiet)."""

    TTY_SECONDS, LOG_SECONDS = 0.5, 30.0

    def __init__(self, total_bytes: int, done_bytes: int):
        self.total, self.start_bytes = total_bytes, done_bytes
        self.started = self.shown = time.perf_counter()
        self.interactive = sys.stderr.isatty()
        self.drawn = False

    def update(self, done_bytes: int) -> None:
        now = time.perf_counter()
        if now - self.shown < (self.TTY_SECONDS if self.interactive else self.LOG_SECONDS):
            return
        self.shown = now
        rate = (done_bytes - self.start_bytes) / max(now - self.started, 1e-9)
        left = max(self.total - done_bytes, 0) / rate if rate > 0 else 0.0
        text = (f"tokenized {done_bytes / 1e6:,.0f} / {self.total / 1e6:,.0f} MB | {rate / 1e6:.1f} MB/s | "
                f"eta {format_seconds(left)}")
        print(f"\r{text}\x1b[K" if self.interactive else text, end="" if self.interactive else "\n",
              file=sys.stderr, flush=True)
        self.drawn = self.interactive

    def finish(self, num_tokens: int) -> None:
        elapsed = time.perf_counter() - self.started
        if self.drawn:
            print(file=sys.stderr)
        if elapsed >= self.LOG_SECONDS or self.drawn:
            print(f"tokenized into {num_tokens:,} tokens in {format_seconds(elapsed)}", file=sys.stderr)


class Piece(NamedTuple):
    """A text to encode and whether a document ends with it (its separator follows it)."""

    text: str
    ends_document: bool


def document_pieces(texts: Iterable[str], fmt: str, piece_chars: int) -> Iterator[Piece]:
    """The texts of one file as pieces to encode. The chunks of a text file continue each other
    (its separator follows the whole file) and are already bounded by `iter_text_chunks`; every
    other format's text is a document, one longer than `piece_chars` cut into pieces with
    `cut_text`, and only its last piece ends it."""
    for text in texts:
        if fmt == "text":
            yield Piece(text, ends_document=False)
            continue
        pieces = cut_text(text, piece_chars)
        previous = next(pieces)
        for piece in pieces:
            yield Piece(previous, ends_document=False)
            previous = piece
        yield Piece(previous, ends_document=True)


class WordCounter:
    """Counts the whitespace-separated words of consecutive pieces, a word that a cut split
    between two pieces of one document once (as `str.split` of the whole document would)."""

    def __init__(self, inside_word: bool = False) -> None:
        self.inside_word = inside_word

    def count(self, piece: Piece) -> int:
        text = piece.text
        words = len(text.split())
        if self.inside_word and text and not text[0].isspace():
            words -= 1
        if text or piece.ends_document:
            self.inside_word = not piece.ends_document and not text[-1].isspace()
        return words


def batched_texts(texts: Iterable[T], size: Callable[[T], int] = len) -> Iterator[list[T]]:
    """`texts` in lists of up to ENCODE_BATCH_TEXTS items or about ENCODE_BATCH_CHARS characters
    (`size` tells an item's characters)."""
    batch: list[T] = []
    chars = 0
    for text in texts:
        batch.append(text)
        chars += size(text)
        if len(batch) >= ENCODE_BATCH_TEXTS or chars >= ENCODE_BATCH_CHARS:
            yield batch
            batch, chars = [], 0
    if batch:
        yield batch


def split_train_val(num_tokens: int, val_fraction: float) -> tuple[range, range]:
    """The first (1 - val_fraction) of the token stream for training, the last val_fraction for val."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must lie in [0, 1), got {val_fraction}.")
    train_end = int(num_tokens * (1.0 - val_fraction))
    return range(0, train_end), range(train_end, num_tokens)


def write_json_atomically(path: Path, data: dict) -> None:
    tmp_path = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp_path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp_path, path)
