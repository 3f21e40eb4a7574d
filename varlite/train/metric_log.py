"""A run's metrics file: ``metrics.jsonl`` in the run dir, one JSON object per line.

Every row is ``{"split": "train" | "val", "step": <steps done>, <name>: <value>, ...}``: a "train" row holds the
means of the logged values over one logging window, a "val" row one held-out evaluation. ``read_metrics`` is the
reader every consumer (recipes, the app, the tests) shares.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path

METRICS_NAME = "metrics.jsonl"


def read_metrics(run_dir: str | Path, split: str | None = None) -> list[dict]:
    """The rows of ``run_dir/metrics.jsonl`` in order (only those of ``split`` when given); [] if there is no file.

    A torn last line (a write cut short, e.g. by a power loss) is dropped with a warning; a line that is not JSON
    anywhere else is an error (the file is damaged in the middle)."""
    path = Path(run_dir) / METRICS_NAME
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.strip()]
    rows = []
    for i, line in enumerate(lines):
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            if i < len(lines) - 1:
                raise ValueError(f"{path} line {i + 1} of {len(lines)} is not JSON: the file is damaged in the "
                                 f"middle. Delete the file (the checkpoint does not need it) or repair that line, "
                                 f"then resume") from None
            warnings.warn(f"{path}: dropped a torn last line (a write cut short, e.g. by a power loss)", stacklevel=2)
    return [r for r in rows if split is None or r["split"] == split]


class MetricLog:
    """Writes a run's ``metrics.jsonl`` and keeps its open logging window.

    A training row holds the means over one logging window (the steps since the last row): ``add`` sums a step's
    values, ``take_window`` returns their means and opens a new window. The open window (sums and count, per
    process) goes into the checkpoint (``window_state`` / ``load_window``), so a run stopped in mid-window writes,
    once resumed, the very row an uninterrupted run writes.

    On resume from step s (``keep_until(s)``), rows logged after s (by the interrupted process) are dropped, so the
    file reads as if the run had never stopped; a torn last line is dropped with a warning.
    """

    def __init__(self, run_dir: str | Path, resume_step: int | None = None, enabled: bool = True):
        """``resume_step``: drop the rows after it at once (None: leave the file; ``keep_until`` does it later).
        ``enabled=False`` (every process but the main one) writes nothing."""
        self.dir, self.enabled = Path(run_dir), enabled
        self.path = self.dir / METRICS_NAME
        self.sums: dict[str, float] = {}
        self.count = 0
        if enabled:
            self.dir.mkdir(parents=True, exist_ok=True)
        if resume_step is not None:
            self.keep_until(resume_step)

    # the logging window ---------------------------------------------------------------------------
    def add(self, values: dict[str, float]) -> None:
        """Add one step's values to the open window."""
        for k, v in values.items():
            self.sums[k] = self.sums.get(k, 0.0) + v
        self.count += 1

    def take_window(self) -> dict[str, float]:
        """{name: sum / count} of the open window, names sorted; the window is then empty."""
        means = {k: self.sums[k] / self.count for k in sorted(self.sums)}
        self.sums, self.count = {}, 0
        return means

    def window_state(self) -> dict:
        """The open window as plain types, for the checkpoint."""
        return {"sums": dict(self.sums), "count": self.count}

    def load_window(self, state: dict | None) -> None:
        """Reopen a saved window (None: a checkpoint from before windows were saved; start empty)."""
        self.sums, self.count = (dict(state["sums"]), int(state["count"])) if state else ({}, 0)

    # the file -------------------------------------------------------------------------------------
    def keep_until(self, step: int) -> None:
        """Drop every row logged after ``step`` (and a torn last line) from the file."""
        if not self.enabled or not self.path.exists():
            return
        rows = read_metrics(self.dir)
        self.path.write_text("".join(json.dumps(r) + "\n" for r in rows if r["step"] <= step))

    def write(self, split: str, step: int, values: dict) -> None:
        """Append the row ``{"split": split, "step": step, **values}`` (floats rounded to 6 decimals)."""
        if not self.enabled:
            return
        row = {"split": split, "step": step, **{k: (round(v, 6) if isinstance(v, float) else v)
                                                for k, v in values.items()}}
        with open(self.path, "a") as f:
            f.write(json.dumps(row) + "\n")
