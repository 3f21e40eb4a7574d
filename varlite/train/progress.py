"""The progress line of a training run: steps done, rate and ETA, and the latest logged values."""
from __future__ import annotations

import sys
import time


def format_seconds(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class Progress:
    """A one-line progress bar with rate and ETA on stderr; on a non-terminal, a plain line every ``interval`` s."""

    def __init__(self, label: str, total: int, start: int, enabled: bool = True, stream=None, interval: float = 30.0):
        self.label, self.total, self.start, self.enabled = label, total, start, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = 0.2 if self.tty else interval
        self.t0 = self.t_last = time.time()
        self.postfix = ""

    def line(self, done: int, postfix: str = "") -> str:
        frac = done / max(1, self.total)
        elapsed = time.time() - self.t0
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        bar = "#" * int(20 * frac) + "-" * (20 - int(20 * frac))
        eta_s = format_seconds(eta) if rate > 0 else "?"
        return (f"{self.label} {100 * frac:3.0f}% |{bar}| {done}/{self.total} "
                f"[{format_seconds(elapsed)}<{eta_s}, {rate:.2f} it/s] {postfix}")

    def update(self, done: int, postfix: str | None = None, force: bool = False) -> None:
        """Show ``done`` steps (at most every ``interval`` s unless ``force``d or done) with ``postfix``, or with the
        last postfix given when it is None."""
        if postfix is not None:
            self.postfix = postfix
        if not self.enabled or (not force and time.time() - self.t_last < self.interval and done < self.total):
            return
        self.t_last = time.time()
        end = "" if self.tty else "\n"
        self.stream.write(("\r" if self.tty else "") + self.line(done, self.postfix) + end)
        self.stream.flush()

    def close(self) -> None:
        if self.enabled and self.tty:
            self.stream.write("\n")
            self.stream.flush()
