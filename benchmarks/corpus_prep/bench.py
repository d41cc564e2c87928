"""Token-cache throughput against the plain `encode_batch` loop, and the peak memory of a build.

    PYTHONPATH=. python benchmarks/corpus_prep/bench.py --mb 50 [--rounds 3] [--workers 1,2] [--single-line]
        [--corpus FILE] [--kill-test] [--rss-only]

Each round runs, interleaved in this process: the plain loop (the tokenizer's `encode_batch_fast`
over batches of 1024 lines, ids into numpy arrays and dropped: the ceiling) and the token cache
with each of `--workers` (each into a fresh cache directory). Then one cache build per worker
count runs in a subprocess, for its peak RSS (`--rss-only` skips the rounds). `--kill-test`
then builds the cache again in a subprocess, SIGKILLs it half-way (at half the uninterrupted
build's time), reruns it to the end and compares the token file with the uninterrupted one. The corpus is random words drawn with a
Zipf-like law from a fixed seed, so the same --mb gives the same file; the tokenizer is a
byte-level BPE of 8k tokens trained on its first 10 MB.
"""
from __future__ import annotations

import argparse
import filecmp
import itertools
import random
import shutil
import signal
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


BUILD_CODE = ("import sys; from model_foundry.data import tokenize_to_cache; "
              "from model_foundry.tokenizer import FoundryTokenizer; t = FoundryTokenizer.load(sys.argv[1]); "
              "tokenize_to_cache([sys.argv[2]], t, sys.argv[3], fmt='text', separator_id=t.eos_id, "
              "num_workers=int(sys.argv[4]))")


def build_command(tokenizer_dir: Path, path: Path, cache_dir: Path, num_workers: int) -> list[str]:
    return [sys.executable, "-c", BUILD_CODE, str(tokenizer_dir), str(path), str(cache_dir), str(num_workers)]


def peak_rss_build(tokenizer_dir: Path, path: Path, num_workers: int) -> tuple[float, float, Path]:
    """(peak RSS in MB, seconds, cache dir) of a cache build in a child process (its workers count
    separately), the RSS read by `/usr/bin/time` so each build is measured on its own."""
    cache_dir = Path(tempfile.mkdtemp(dir=WORK))
    started = time.perf_counter()
    result = subprocess.run(["/usr/bin/time", "-f", "%M", *build_command(tokenizer_dir, path, cache_dir, num_workers)],
                            check=True, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    return int(result.stderr.strip().splitlines()[-1]) / 1024, elapsed, cache_dir


def killed_and_resumed(tokenizer_dir: Path, path: Path, num_workers: int, kill_after: float) -> tuple[Path, float]:
    """(cache dir, seconds of the rerun) of a build SIGKILLed after `kill_after` seconds, then run again to the end."""
    cache_dir = Path(tempfile.mkdtemp(dir=WORK))
    child = subprocess.Popen(build_command(tokenizer_dir, path, cache_dir, num_workers), stderr=subprocess.DEVNULL)
    time.sleep(kill_after)
    if child.poll() is not None:
        raise RuntimeError(f"the build ended before it was killed at {kill_after:.0f} s")
    child.send_signal(signal.SIGKILL)
    child.wait()
    partial = sum(f.stat().st_size for f in cache_dir.glob("*.bin.partial"))
    print(f"killed at {kill_after:.0f} s with {partial / 1e6:.0f} MB of tokens journaled", flush=True)
    started = time.perf_counter()
    subprocess.run(build_command(tokenizer_dir, path, cache_dir, num_workers), check=True, stderr=subprocess.DEVNULL)
    return cache_dir, time.perf_counter() - started


def same_tokens(first: Path, second: Path) -> bool:
    """Whether two cache dirs hold byte-identical token files."""
    files = sorted(f.name for f in first.glob("*.bin"))
    return bool(files) and files == sorted(f.name for f in second.glob("*.bin")) and all(
        filecmp.cmp(first / name, second / name, shallow=False) for name in files)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--single-line", action="store_true", help="the whole corpus on one line")
    parser.add_argument("--corpus", type=Path, help="a text file to use instead of the generated one")
    parser.add_argument("--workers", default="1,2", help="the num_workers values to time, comma-separated")
    parser.add_argument("--kill-test", action="store_true", help="SIGKILL a build half-way, rerun, compare")
    parser.add_argument("--rss-only", action="store_true", help="skip the timed rounds")
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
    workers = [int(n) for n in args.workers.split(",")]
    for round_number in range(1, 0 if args.rss_only else args.rounds + 1):
        plain = megabytes / plain_loop(tokenizer, path)
        cells = [f"plain loop {plain:.2f} MB/s"]
        for num_workers in workers:
            rate = megabytes / cache_build(tokenizer, path, num_workers)
            cells.append(f"cache, {num_workers} worker(s) {rate:.2f} MB/s ({rate / plain:.0%})")
        print(f"round {round_number}: " + " | ".join(cells), flush=True)
    for num_workers in workers:
        rss, seconds, cache_dir = peak_rss_build(tokenizer_dir, path, num_workers)
        print(f"peak RSS of a cache build, {num_workers} worker(s): {rss:.0f} MB (parent process), "
              f"{megabytes / seconds:.2f} MB/s", flush=True)
        if args.kill_test:
            resumed, rerun_seconds = killed_and_resumed(tokenizer_dir, path, num_workers, seconds / 2)
            print(f"rerun after SIGKILL finished in {rerun_seconds:.0f} s (uninterrupted build {seconds:.0f} s); "
                  f"token file byte-identical to the uninterrupted build's: {same_tokens(cache_dir, resumed)}",
                  flush=True)
            shutil.rmtree(resumed)
        shutil.rmtree(cache_dir)


if __name__ == "__main__":
    main()
