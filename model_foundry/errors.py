"""Errors that are the user's to fix.

Anything raised as a `UserError` is a mistake in a config, a command line, a data file or a
checkpoint. The CLI prints its message as one paragraph and exits with code 2, without a
traceback. Everything else is our bug and exits with code 1.
"""
from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(Exception):
    """A problem the user can fix; the message says where it is and what would be valid."""


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
