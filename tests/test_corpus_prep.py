"""Corpus preparation: worker processes give the serial file byte for byte, and a killed build
continues from its journal to the file an uninterrupted build writes."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from model_foundry.data import cache_journal, sources, token_cache, tokenize_to_cache
from model_foundry.data.cache_journal import Checkpoint, read_checkpoint
from model_foundry.tokenizer.training import train_tokenizer

WORDS = "the quick brown fox jumps over a lazy dog while seven wizards quietly hex jolly zebras".split()
REPO = Path(__file__).resolve().parents[1]


def write_corpus(directory: Path) -> list[Path]:
    """Two text files (one with a long line) and a jsonl file, deterministic."""
    lines = [" ".join(WORDS[(i * 7 + j) % len(WORDS)] for j in range(i % 23 + 1)) for i in range(400)]
    first, second, third = directory / "a.txt", directory / "b.txt", directory / "c.jsonl"
    first.write_text("\n".join(lines[:200]) + "\n" + " ".join(lines) + "\n", encoding="utf-8")
    second.write_text("\n\n".join(lines[200:]), encoding="utf-8")
    third.write_text("".join(json.dumps({"text": line}) + "\n" for line in lines[::3]), encoding="utf-8")
    return [first, second, third]


@pytest.fixture()
def small_pieces(monkeypatch):
    """Pieces and batches small enough that a tiny corpus makes many batches and checkpoints."""
    monkeypatch.setattr(sources, "TEXT_CHUNK_CHARS", 300)
    monkeypatch.setattr(token_cache, "ENCODE_BATCH_TEXTS", 4)
    monkeypatch.setattr(cache_journal, "CHECKPOINT_BYTES", 1000)


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer("bpe", 400, texts=[" ".join(WORDS)] * 20)


def build(paths, tokenizer, cache_dir, **kwargs):
    fmt = "jsonl" if paths[0].suffix == ".jsonl" else "text"
    return tokenize_to_cache(paths, tokenizer, cache_dir, fmt=fmt, separator_id=tokenizer.eos_id, **kwargs)


def test_a_checkpoint_is_ignored_unless_the_partial_file_holds_its_tokens(tmp_path):
    journal, partial = tmp_path / "k.journal.json", tmp_path / "k.bin.partial"
    assert read_checkpoint(journal, partial, 2, 300) == Checkpoint(piece_chars=300)  # nothing yet
    cache_journal.write_checkpoint(journal, Checkpoint(1, 5, num_tokens=10, num_words=3, piece_chars=300))
    partial.write_bytes(b"x" * 25)  # 12 tokens written, 10 of them journalled
    assert read_checkpoint(journal, partial, 2, 300).pieces_done == 5
    assert partial.stat().st_size == 20  # cut back to the journalled tokens
    assert read_checkpoint(journal, partial, 2, 999) == Checkpoint(piece_chars=999)  # other pieces: start over
    assert partial.stat().st_size == 0
    cache_journal.write_checkpoint(journal, Checkpoint(num_tokens=10, piece_chars=300))
    assert read_checkpoint(journal, partial, 2, 300).num_tokens == 0  # the partial file is shorter than it says
    journal.write_text("{not json", encoding="utf-8")
    assert read_checkpoint(journal, partial, 2, 300).num_tokens == 0


def test_an_interrupted_build_continues_where_it_stopped(tmp_path, tokenizer, small_pieces, monkeypatch):
    paths = write_corpus(tmp_path)[:2]
    encode_batch, seen = tokenizer.encode_batch, []
    monkeypatch.setattr(tokenizer, "encode_batch", lambda texts: seen.append(texts) or encode_batch(texts))
    reference = build(paths, tokenizer, tmp_path / "reference")
    total, seen = len(seen), []

    def failing(texts):
        if len(seen) == total // 2:
            raise KeyboardInterrupt
        seen.append(texts)
        return encode_batch(texts)

    monkeypatch.setattr(tokenizer, "encode_batch", failing)
    with pytest.raises(KeyboardInterrupt):
        build(paths, tokenizer, tmp_path / "cache")
    journal = json.loads(next((tmp_path / "cache").glob("*.journal.json")).read_text())
    assert journal["num_tokens"] > 0
    seen.clear()
    monkeypatch.setattr(tokenizer, "encode_batch", lambda texts: seen.append(texts) or encode_batch(texts))
    resumed = build(paths, tokenizer, tmp_path / "cache")
    assert resumed.path.read_bytes() == reference.path.read_bytes()
    assert (resumed.num_tokens, resumed.num_words) == (reference.num_tokens, reference.num_words)
    assert 0 < len(seen) < total // 2 + 4  # it went on from the last checkpoint rather than from the start
    assert sorted(p.name.split(".", 1)[1] for p in (tmp_path / "cache").iterdir()) == ["bin", "json", "lock"]


@pytest.mark.slow  # starts worker processes
@pytest.mark.parametrize("num_workers", [2, 3])
def test_workers_write_the_serial_file_byte_for_byte(tmp_path, tokenizer, small_pieces, num_workers):
    paths = write_corpus(tmp_path)
    for group in (paths[:2], paths[2:]):
        serial = build(group, tokenizer, tmp_path / "serial")
        parallel = build(group, tokenizer, tmp_path / f"workers{num_workers}", num_workers=num_workers)
        assert parallel.path.read_bytes() == serial.path.read_bytes()
        assert (parallel.num_tokens, parallel.num_words) == (serial.num_tokens, serial.num_words)


KILLED_BUILD = """
import os, signal, sys
from pathlib import Path
from model_foundry.data import cache_journal, parallel_encoding, sources, token_cache
from model_foundry.tokenizer import FoundryTokenizer
sources.TEXT_CHUNK_CHARS, token_cache.ENCODE_BATCH_TEXTS, cache_journal.CHECKPOINT_BYTES = 300, 4, 1000
encode, done = parallel_encoding.BatchEncoder.encode, [0]

def killed_after_some_batches(self, batches):
    if self.pool is not None:
        self.pool.submit(int).result()  # the workers have started
        print(" ".join(map(str, self.pool._processes)), flush=True)
    for result in encode(self, batches):
        done[0] += 1
        if done[0] == 30:  # of the 40-odd batches, in the second file
            os.kill(os.getpid(), signal.SIGKILL)
        yield result

parallel_encoding.BatchEncoder.encode = killed_after_some_batches
tokenizer = FoundryTokenizer.load(sys.argv[1])
paths = [Path(p) for p in sys.argv[4:]]
token_cache.tokenize_to_cache(paths, tokenizer, sys.argv[2], fmt="text", separator_id=tokenizer.eos_id,
                              num_workers=int(sys.argv[3]))
"""


@pytest.mark.slow  # starts processes
@pytest.mark.parametrize("num_workers", [1, 2])
def test_a_sigkilled_build_is_finished_by_the_next_run(tmp_path, tokenizer, small_pieces, num_workers):
    paths = write_corpus(tmp_path)[:2]
    tokenizer.save(tmp_path / "tok")
    child = subprocess.run([sys.executable, "-c", textwrap.dedent(KILLED_BUILD), str(tmp_path / "tok"),
                            str(tmp_path / "cache"), str(num_workers), *map(str, paths)],
                           capture_output=True, text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert child.returncode == -signal.SIGKILL, child.stderr
    workers = set(map(int, child.stdout.split()))
    assert (len(workers) > 0) == (num_workers > 1)
    for pid in workers:  # the workers go with their parent
        deadline = time.monotonic() + 30
        while pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not pid_alive(pid)
    journal = json.loads(next((tmp_path / "cache").glob("*.journal.json")).read_text())
    assert journal["num_tokens"] > 0
    resumed = build(paths, tokenizer, tmp_path / "cache", num_workers=num_workers)
    reference = build(paths, tokenizer, tmp_path / "reference")
    assert resumed.path.read_bytes() == reference.path.read_bytes()
    assert resumed.num_words == reference.num_words


def pid_alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie, dead but not yet reaped by init, counts as gone)."""
    try:
        status = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return status.rsplit(")", 1)[1].split()[0] != "Z"
