"""`foundry train CONFIG --nproc N`: N local worker processes through torchrun's own launcher."""
from __future__ import annotations

import logging
import os
import sys
import tempfile
from pathlib import Path

from model_foundry.errors import WORKER_ERRORS_ENV, UserError
from model_foundry.training.distributed import world_size_from_environment


def launch_workers(nproc: int, worker_args: list[str]) -> int:
    """Run `python -m model_foundry WORKER_ARGS` in `nproc` local processes through torchrun's launcher
    (so its restarts, environment and signal handling apply); returns the exit code to report.

    A worker's own exit code is passed on (2 for a user's mistake, 128 + N after signal N); a
    signal to this launcher reaches every worker, which saves `checkpoints/last` before exiting.
    Each worker gets an equal share of the CPU cores unless OMP_NUM_THREADS says otherwise
    (torchrun alone would give each a single thread).
    """
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import parse_args, run

    if world_size_from_environment() > 1:
        raise UserError("--nproc starts its own worker processes; inside torchrun, leave it out.")
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    # Our own line below says which worker failed; torch's would repeat it with a timestamp.
    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    with tempfile.TemporaryDirectory(prefix="foundry-workers-") as errors:
        os.environ[WORKER_ERRORS_ENV] = errors
        try:
            run(parse_args(["--standalone", f"--nproc-per-node={nproc}", "--module", "model_foundry", *worker_args]))
        except ChildFailedError as failed:
            rank, failure = failed.get_first_failure()
            code = failure.exitcode if failure.exitcode >= 0 else 128 - failure.exitcode
            unseen = unprinted_worker_error(Path(errors), rank)
            if unseen:
                print(unseen, file=sys.stderr)
            print(f"Worker {rank} exited with code {code}; every worker has stopped.", file=sys.stderr)
            return code
        except SignalException as stop:
            return 128 + int(stop.sigval)
        finally:
            del os.environ[WORKER_ERRORS_ENV]
    return 0


def unprinted_worker_error(directory: Path, failed_rank: int) -> str | None:
    """The failed worker's message when no worker printed one (rank 0 prints its own)."""
    if (directory / "rank0.txt").is_file():
        return None
    path = directory / f"rank{failed_rank}.txt"
    return path.read_text(encoding="utf-8") if path.is_file() else None
