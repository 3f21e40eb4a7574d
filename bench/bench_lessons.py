"""Time every lesson notebook as a student runs it: the notebook as shipped (exercises unsolved), its own settings
(no VARLITE_CI, no thread limit: PyTorch's default threads), one fresh python3 kernel each (nbclient), top to bottom,
kernel start included. Prints a table with the 1-minute load average before each lesson and whether it kept within
the class-period limits: 8 minutes for lesson 6 (it trains a model), 2 minutes for every other lesson.

Usage: python bench/bench_lessons.py [--lessons 01,06] [--timeout 900]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from varlite.device import cpu_features

LESSONS_DIR = Path(__file__).resolve().parents[1] / "lessons"
LIMIT_S = {"06": 480}            # the training lesson; every other lesson: DEFAULT_LIMIT_S
DEFAULT_LIMIT_S = 120


def run_lesson(path: Path, timeout: int) -> tuple[float, str]:
    """(wall seconds, "" or the error) of one top-to-bottom run of ``path`` in a fresh kernel started in lessons/."""
    nb = nbformat.read(path, as_version=4)
    env_before = os.environ.pop("VARLITE_CI", None)
    start = time.perf_counter()
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3",
                       resources={"metadata": {"path": str(LESSONS_DIR)}}).execute()
        error = ""
    except Exception as err:           # a failing cell: report it in the table, time up to the failure
        last_line = (str(err).strip().splitlines() or [""])[-1]
        error = f"{type(err).__name__}: {last_line[:120]}"
    finally:
        if env_before is not None:
            os.environ["VARLITE_CI"] = env_before
    return time.perf_counter() - start, error


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lessons", default="", help="comma-separated lesson numbers (default: all)")
    parser.add_argument("--timeout", type=int, default=900, help="per-cell timeout in seconds")
    args = parser.parse_args()
    wanted = [n for n in args.lessons.split(",") if n]
    paths = sorted(p for p in LESSONS_DIR.glob("[0-9][0-9]_*.ipynb") if not wanted or p.name[:2] in wanted)
    print(f"CPU: {os.cpu_count()} CPUs, {cpu_features()}; Python {platform.python_version()}")
    print(f"{'lesson':<44} {'seconds':>8} {'limit':>6} {'load':>5}  result")
    failures = 0
    for path in paths:
        load = os.getloadavg()[0]
        seconds, error = run_lesson(path, args.timeout)
        limit = LIMIT_S.get(path.name[:2], DEFAULT_LIMIT_S)
        ok = not error and seconds <= limit
        failures += not ok
        print(f"{path.stem:<44} {seconds:>8.0f} {limit:>6} {load:>5.1f}  "
              f"{'ok' if ok else error or 'over the limit'}", flush=True)
    print(f"lessons={len(paths)} within_limits={len(paths) - failures} load_end={os.getloadavg()[0]:.1f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
