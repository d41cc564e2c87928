"""Errors that are the user's to fix.

Anything raised as a `UserError` is a mistake in a config, a command line, a data file or a
checkpoint. The CLI prints its message as one paragraph and exits with code 2, without a
traceback. Everything else is our bug and exits with code 1.
"""
from __future__ import annotations

import difflib
import os
import sys
from collections.abc import Iterable
from pathlib import Path

from model_foundry.ranks import is_writer, process_rank

# Set by `foundry train --nproc` for its workers: where each writes the user error it stopped on.
WORKER_ERRORS_ENV = "FOUNDRY_WORKER_ERRORS"


class UserError(Exception):
    """A problem the user can fix; the message says where it is and what would be valid."""


def report_user_error(text: str) -> None:
    """Print a user's mistake (exit 2 follows) once, not once per worker.

    Every worker reads the same config and data, so a mistake stops them all with the same message:
    under `--nproc` rank 0 prints it and the others only leave it for the launcher, which prints a
    worker's message itself when rank 0 had none. Without the launcher (one process, or a cluster's
    torchrun) every process prints its own.
    """
    directory = os.environ.get(WORKER_ERRORS_ENV)
    if directory:
        Path(directory, f"rank{process_rank()}.txt").write_text(text, encoding="utf-8")
        if not is_writer():
            return
    print(text, file=sys.stderr)


def closest(name: str, candidates: Iterable[str], n: int = 3) -> list[str]:
    """The candidates that look most like `name` (for "did you mean" hints)."""
    return difflib.get_close_matches(name, sorted(candidates), n=n, cutoff=0.5)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A short hint naming the closest valid spellings, or listing them all when none is close."""
    options = sorted(candidates)
    near = closest(name, options)
    if near:
        return "did you mean " + " or ".join(repr(c) for c in near) + "?"
    return "valid values are " + ", ".join(repr(c) for c in options) + "."
