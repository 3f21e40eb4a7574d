"""``python -m varlite ARGS`` for a process started by torchrun, then the names of the threads the process still has
(Linux /proc) on stderr, as the interpreter is about to exit. A finished data-parallel run must leave none of gloo's
behind: one that is still running as the interpreter shuts down can abort a finished run."""
import sys
from pathlib import Path

from varlite.cli import main

code = main(sys.argv[1:])
threads = sorted(p.read_text().strip() for p in Path("/proc/self/task").glob("*/comm"))
print(f"threads at exit: {', '.join(threads)}", file=sys.stderr, flush=True)
sys.exit(code)
