"""Token-cache throughput against the plain `encode_batch` loop, and the peak memory of a build.

    PYTHONPATH=. python benchmarks/corpus_prep/bench.py --mb 50 [--rounds 3] [--single-line] [--corpus FILE]

Each round runs, interleaved in this process: the plain loop (the tokenizer's `encode_batch_fast`
over batches of 1024 lines, ids into numpy arrays and dropped: the ceiling), the token cache with
num_workers=1 and with num_workers=2 (each into a fresh cache directory). Then one cache build
per worker count runs in a subprocess, for its peak RSS. The corpus is random words drawn with a
Zipf-like law from a fixed seed, so the same --mb gives the same file; the tokenizer is a
byte-level BPE of 8k tokens trained on its first 10 MB.
"""
from __future__ import annotations

import argparse
import itertools
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from model_foundry.data import tokenize_to_cache
from model_foundry.tokenizer import FoundryTokenizer, train_tokenizer

WORK = Path(tempfile.gettempdir()) / "foundry_corpus_prep_bench"


def make_corpus(megabytes: int, single_line: bool) -> Path:
    path = WORK / f"corpus_{megabytes}mb{'_one_line' if single_line else ''}.txt"
    if path.exists():
        return path
    rng = random.Random(0)
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(1, 10)))
                  for _ in range(50_000)]
    cumulative = list(itertools.accumulate(1 / (rank + 1) for rank in range(len(vocabulary))))
    with open(path, "w", encoding="utf-8") as out:
        written = 0
        while written < megabytes * 1_000_000:
            words = rng.choices(vocabulary, cum_weights=cumulative, k=rng.randint(3, 40))
            line = " ".join(words) + (". " if single_line else ".\n")
            out.write(line)
            written += len(line)
    return path


def plain_loop(tokenizer: FoundryTokenizer, path: Path) -> float:
    """Seconds for `encode_batch_fast` over the file's lines in batches of 1024, ids into arrays."""
    started = time.perf_counter()
    with open(path, encoding="utf-8") as handle:
        while lines := list(itertools.islice(handle, 1024)):
            for encoding in tokenizer.backend.encode_batch_fast(lines, add_special_tokens=False):
                np.asarray(encoding.ids, dtype=np.uint16)
    return time.perf_counter() - started


def cache_build(tokenizer: FoundryTokenizer, path: Path, num_workers: int) -> float:
    directory = Path(tempfile.mkdtemp(dir=WORK))
    started = time.perf_counter()
    tokenize_to_cache([path], tokenizer, directory, fmt="text", separator_id=tokenizer.eos_id,
                      num_workers=num_workers)
    elapsed = time.perf_counter() - started
    shutil.rmtree(directory)
    return elapsed


def peak_rss_mb(tokenizer_dir: Path, path: Path, num_workers: int) -> float:
    """The largest RSS of a cache build in a child process (its workers count separately), read
    by `/usr/bin/time` so each build is measured on its own."""
    code = ("import sys, tempfile; from model_foundry.data import tokenize_to_cache; "
            "from model_foundry.tokenizer import FoundryTokenizer; t = FoundryTokenizer.load(sys.argv[1]); "
            "tokenize_to_cache([sys.argv[2]], t, tempfile.mkdtemp(dir=sys.argv[3]), fmt='text', "
            "separator_id=t.eos_id, num_workers=int(sys.argv[4]))")
    result = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, "-c", code, str(tokenizer_dir), str(path),
                             str(WORK), str(num_workers)], check=True, stderr=subprocess.PIPE, text=True)
    return int(result.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single-line", action="store_true", help="the whole corpus on one line")
    parser.add_argument("--corpus", type=Path, help="a text file to use instead of the generated one")
    args = parser.parse_args()
    WORK.mkdir(exist_ok=True)
    path = args.corpus or make_corpus(args.mb, args.single_line)
    megabytes = path.stat().st_size / 1e6
    tokenizer_dir = WORK / "bpe8k"
    if not (tokenizer_dir / "tokenizer.json").is_file():
        sample = WORK / "sample.txt"
        with open(path, encoding="utf-8") as source:
            sample.write_text(source.read(10_000_000), encoding="utf-8")
        train_tokenizer("bpe", 8000, files=[sample]).save(tokenizer_dir)
    tokenizer = FoundryTokenizer.load(tokenizer_dir)
    print(f"corpus {path} ({megabytes:.0f} MB), bpe 8k")
    for round_number in range(1, args.rounds + 1):
        plain = megabytes / plain_loop(tokenizer, path)
        serial = megabytes / cache_build(tokenizer, path, 1)
        workers = megabytes / cache_build(tokenizer, path, 2)
        print(f"round {round_number}: plain loop {plain:.2f} MB/s | cache, 1 worker {serial:.2f} MB/s "
              f"({serial / plain:.0%}) | cache, 2 workers {workers:.2f} MB/s ({workers / plain:.0%})", flush=True)
    for num_workers in (1, 2):
        print(f"peak RSS of a cache build, {num_workers} worker(s): "
              f"{peak_rss_mb(tokenizer_dir, path, num_workers):.0f} MB (parent process)", flush=True)


if __name__ == "__main__":
    main()
