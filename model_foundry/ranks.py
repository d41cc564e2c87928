"""Which of the processes training one model this one is, and whether it is the writer.

The one place that decides it, below everything else so that the bottom layer (`errors`, which
prints a user's mistake once) and the training loop agree: torchrun's `RANK` names the process,
and rank 0 is the writer, which alone writes files and prints what every process would print.
A process that no launcher started is rank 0, also after its process group is gone.
"""
from __future__ import annotations

import os

WRITER_RANK = 0


def process_rank() -> int:
    """This process's rank among the processes a launcher started (0 outside a launcher)."""
    return int(os.environ.get("RANK", WRITER_RANK))


def is_writer(rank: int | None = None) -> bool:
    """Whether process `rank` (default: this process) writes the run's files and prints its messages."""
    return (process_rank() if rank is None else rank) == WRITER_RANK
