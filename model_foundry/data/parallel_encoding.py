"""Encode batches of texts to token-id bytes in worker processes, results in submission order.

The `tokenizers` library already spreads one `encode_batch` call over all cores (Rust threads),
but what surrounds it runs in Python on one core: turning each encoding's ids into a list, then
into an array. Worker processes run both halves side by side; each loads the tokenizer once (it
is pickled, which for a `tokenizers` backend is its serialised JSON) and runs single-threaded, so
N workers use N cores without oversubscribing them.

At most `2 * num_workers` batches are in flight, so memory stays flat however large the corpus.
Workers are started with `spawn` (a fork after Rust or torch threads ran can deadlock) and exit
when the process that started them dies, even by SIGKILL.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any, TypeVar

import numpy as np

T = TypeVar("T")
PARENT_POLL_SECONDS = 1.0

_worker_tokenizer: Any = None


def encode_to_bytes(tokenizer: Any, texts: Sequence[str], ends_document: Sequence[bool], separator: list[int],
                    dtype: type) -> bytes:
    """The ids of `texts` back to back as `dtype` bytes, `separator` after each text that ends a
    document. Ids outside the vocabulary are a tokenizer bug, not the user's: they would wrap
    around silently, so they raise."""
    encoded = tokenizer.encode_batch(list(texts))
    parts: list[np.ndarray] = []
    for ids, ends in zip(encoded, ends_document):
        parts.append(np.asarray(ids, dtype=np.int64))
        if ends and separator:
            parts.append(np.asarray(separator, dtype=np.int64))
    if not parts:
        return b""
    array = np.concatenate(parts)
    vocab_size = tokenizer.vocab_size
    if array.size and (array.min() < 0 or array.max() >= vocab_size):
        raise ValueError(f"The tokenizer produced ids outside [0, {vocab_size}): min {array.min()}, "
                         f"max {array.max()}.")
    return array.astype(dtype).tobytes()


class BatchEncoder:
    """`encode_to_bytes` over a stream of batches, in this process (`num_workers` 1) or in worker
    processes. Use as a context manager so the workers are stopped however the caller ends."""

    def __init__(self, tokenizer: Any, separator: list[int], dtype: type, num_workers: int):
        self.tokenizer, self.separator, self.dtype = tokenizer, separator, dtype
        self.num_workers = num_workers
        self.pool: ProcessPoolExecutor | None = None
        if num_workers > 1:
            self.pool = ProcessPoolExecutor(num_workers, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=start_worker,
                                            initargs=(pickle.dumps(tokenizer), os.getpid()))

    def __enter__(self) -> BatchEncoder:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)

    def encode(self, batches: Iterable[tuple[T, Sequence[str], Sequence[bool]]]) -> Iterator[tuple[T, bytes]]:
        """For each `(tag, texts, ends_document)` batch, `(tag, bytes)` in the order given."""
        if self.pool is None:
            for tag, texts, ends in batches:
                yield tag, encode_to_bytes(self.tokenizer, texts, ends, self.separator, self.dtype)
            return
        pending: deque[tuple[T, Future]] = deque()
        for tag, texts, ends in batches:
            pending.append((tag, self.pool.submit(encode_in_worker, list(texts), list(ends), self.separator,
                                                  self.dtype)))
            if len(pending) >= 2 * self.num_workers:
                done_tag, future = pending.popleft()
                yield done_tag, future.result()
        while pending:
            done_tag, future = pending.popleft()
            yield done_tag, future.result()


def start_worker(pickled_tokenizer: bytes, parent_pid: int) -> None:
    """Load the tokenizer once, single-threaded (the other workers have the other cores), and
    watch the parent: a SIGKILLed parent cannot stop its workers, so they stop themselves."""
    global _worker_tokenizer
    os.environ["TOKENIZERS_PARALLELISM"] = "false"
    _worker_tokenizer = pickle.loads(pickled_tokenizer)
    threading.Thread(target=exit_with_parent, args=(parent_pid,), daemon=True).start()


def exit_with_parent(parent_pid: int) -> None:
    while os.getppid() == parent_pid:
        time.sleep(PARENT_POLL_SECONDS)
    os._exit(1)


def encode_in_worker(texts: list[str], ends_document: list[bool], separator: list[int], dtype: type) -> bytes:
    return encode_to_bytes(_worker_tokenizer, texts, ends_document, separator, dtype)
