"""Run one stage of a recipe and append its wall time and CPU time (user + system of the stage and every process it
started) to a timings file, one line per stage; the stage's exit status is passed on.

Usage: python recipes/timed.py TIMINGS_FILE STAGE_NAME COMMAND [ARG ...]
"""
from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    timings, stage, command = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
    t0 = time.monotonic()
    status = subprocess.call(command)
    wall = time.monotonic() - t0
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime
    line = (f"{stage:<10} wall {int(wall) // 60:3d} min {int(wall) % 60:02d} s   cpu {cpu / 60:6.1f} min"
            f"{'' if status == 0 else f'   (exit status {status})'}")
    print(line, flush=True)
    timings.parent.mkdir(parents=True, exist_ok=True)
    with timings.open("a") as f:
        f.write(line + "\n")
    return status


if __name__ == "__main__":
    sys.exit(main())
