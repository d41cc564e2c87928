"""Progress display: a tqdm bar with loss, tokens/s, MFU (where the device's peak is known) and ETA
on a terminal, plain log lines elsewhere; nothing at all on the processes other than rank 0."""
from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, total_steps: int, start_step: int, label: str, enabled: bool = True):
        self.total, self.enabled = total_steps, enabled
        self.interactive = enabled and sys.stderr.isatty()
        self.started = time.perf_counter()
        self.start_step = start_step
        self.bar = None
        if self.interactive:
            from tqdm import tqdm

            self.bar = tqdm(total=total_steps, initial=start_step, desc=label, unit="step",
                            dynamic_ncols=True, file=sys.stderr)

    def update(self, step: int, loss: float, tokens_per_sec: float, lr: float, mfu: float | None) -> None:
        """Called at each log interval with the current step and the latest numbers (MFU where known)."""
        if not self.enabled:
            return
        if self.bar is not None:
            extra = {"mfu": f"{mfu:.1%}"} if mfu is not None else {}
            self.bar.n = step
            self.bar.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_sec:,.0f}", **extra, lr=f"{lr:.2e}")
            return
        done = step - self.start_step
        elapsed = time.perf_counter() - self.started
        eta = elapsed / done * (self.total - step) if done else 0.0
        mfu_text = f" | mfu {mfu:.1%}" if mfu is not None else ""
        print(f"step {step}/{self.total} | loss {loss:.4f} | lr {lr:.2e} | {tokens_per_sec:,.0f} tok/s{mfu_text} | "
              f"eta {format_seconds(eta)}", file=sys.stderr, flush=True)

    def message(self, text: str) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.write(text, file=sys.stderr)
        else:
            print(text, file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def format_seconds(seconds: float) -> str:
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
