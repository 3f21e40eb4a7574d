"""The progress of a long command on stderr (a training run's steps, evaluate's stages): done of total, rate, ETA and
the latest values.

Where stderr is a terminal, a ``tqdm`` bar redrawn in place. Anywhere else (a CI log, a file, a notebook's captured
stream) a redrawn bar would leave one line per redraw, so there it is a plain line at most every ``interval``
seconds (30 by default), and one at the end.
"""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


def format_seconds(s: float) -> str:
    s = int(max(0, s))
    return f"{s // 3600:d}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


class Progress:
    """Progress of ``total`` units from ``start`` (a resumed run starts past 0; rate and ETA count this run's units
    only): a tqdm bar on a terminal, else a plain line every ``interval`` s and one when the last unit is done."""

    def __init__(self, label: str, total: int, start: int, enabled: bool = True, stream=None, interval: float = 30.0,
                 unit: str = "step"):
        self.label, self.total, self.start, self.enabled = label, total, start, enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.interval = interval
        self.t0 = self.t_last = time.time()
        self.postfix = ""
        self.bar = tqdm(total=total, initial=start, desc=label, unit=unit, file=self.stream, dynamic_ncols=True,
                        mininterval=0.2) if enabled and self.tty else None

    def line(self, done: int, postfix: str = "") -> str:
        """The plain line: label, percent, a 20-character bar, done/total, [elapsed<ETA, rate], postfix."""
        frac = done / max(1, self.total)
        elapsed = time.time() - self.t0
        rate = (done - self.start) / elapsed if elapsed > 0 else 0.0
        eta = (self.total - done) / rate if rate > 0 else float("nan")
        bar = "#" * int(20 * frac) + "-" * (20 - int(20 * frac))
        eta_s = format_seconds(eta) if rate > 0 else "?"
        return (f"{self.label} {100 * frac:3.0f}% |{bar}| {done}/{self.total} "
                f"[{format_seconds(elapsed)}<{eta_s}, {rate:.2f} it/s] {postfix}")

    def update(self, done: int, postfix: str | None = None, force: bool = False) -> None:
        """Show ``done`` units with ``postfix`` (or the last postfix given, when None). The bar redraws itself at most
        5 times a second, or now if ``force``d; the plain line is written when ``interval`` s have passed since the
        last one, and when all units are done."""
        if postfix is not None:
            self.postfix = postfix
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.set_postfix_str(self.postfix, refresh=False)
            self.bar.update(done - self.bar.n)
            if force:
                self.bar.refresh()
            return
        if time.time() - self.t_last < self.interval and done < self.total:
            return
        self.t_last = time.time()
        self.stream.write(self.line(done, self.postfix) + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End the bar's line on a terminal (the plain lines end themselves)."""
        if self.bar is not None:
            self.bar.close()
