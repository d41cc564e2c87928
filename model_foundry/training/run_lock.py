"""The run directory's lock: one process at a time writes a run.

The process that writes the run (rank 0 under torchrun) holds an exclusive `flock` on
`<run_dir>/.lock` from before it touches anything in the directory until the run ends. A second
`foundry train` into the same directory (say `--set training.resume=true` while the first still
trains) is refused with the holder's pid instead of both writing `checkpoints/last`. The kernel
drops a flock when its process dies, so a killed run never leaves the directory locked; the file
itself stays behind, holding the last holder's pid, and means nothing without the lock.
"""
from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from model_foundry.errors import UserError

LOCK_FILE = ".lock"


class RunDirectoryLock:
    """A held lock on a run directory; `release` (or leaving the `with` block) gives it up."""

    def __init__(self, run_dir: Path, handle):
        self.run_dir, self.handle = run_dir, handle

    def release(self) -> None:
        if not self.handle.closed:
            self.handle.close()  # closing the file drops the flock

    def __enter__(self) -> RunDirectoryLock:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.release()


def lock_run_directory(run_dir: Path) -> RunDirectoryLock:
    """Create `run_dir` if needed and lock it for this process, or refuse naming the process that holds it.

    An OSError here (a read-only file system, no space, no permission) is the caller's to report.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    # "a+" creates the file without truncating it, so a refused process can still read the holder's pid.
    handle = open(run_dir / LOCK_FILE, "a+", encoding="ascii")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = holder_pid(handle)
        handle.close()
        raise UserError(f"Run directory {run_dir} is being written by another training process"
                        f"{f' (pid {holder})' if holder else ''}; two runs writing one directory would overwrite "
                        "each other's checkpoints. Wait for it to finish (or stop it), then resume with --set "
                        "training.resume=true; to train alongside it, choose another experiment.name or --out. "
                        "Nothing was changed.") from None
    except BaseException:
        handle.close()
        raise
    handle.truncate(0)
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return RunDirectoryLock(run_dir, handle)


def holder_pid(handle) -> int | None:
    """The pid the holder wrote into the lock file; None while it has not written it yet."""
    handle.seek(0)
    text = handle.read().strip()
    return int(text) if text.isdigit() else None
