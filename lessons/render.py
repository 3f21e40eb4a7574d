"""Run the lesson notebooks and render them to HTML with their outputs, for reading (and the helpers the tests use).

    .venv/bin/python lessons/render.py                  # every lesson, as shipped (exercises unsolved)
    .venv/bin/python lessons/render.py --solutions      # exercise cells filled from lessons/solutions (teachers)
    .venv/bin/python lessons/render.py --quick 06       # the CI schedule of lesson 6 (VARLITE_CI=1), one lesson

The HTML goes to ``lessons/build/html/`` (git-ignored); the notebooks themselves are never modified, so they stay
committed without outputs. Exercise cells are code cells tagged ``exercise`` whose metadata names their solution
(``{"varlite": {"solution": "lesson01.nearest_code"}}``); ``--solutions`` replaces such a cell by an import of that
function from ``lessons/solutions/lessonNN.py``.
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import nbformat

LESSONS_DIR = Path(__file__).resolve().parent
HTML_DIR = LESSONS_DIR / "build" / "html"
CELL_TIMEOUT_S = 300


def lesson_paths(selected: list[str] | None = None) -> list[Path]:
    """The numbered lesson notebooks (``NN_*.ipynb``), optionally only those whose name starts with one of
    ``selected`` (``"06"`` or ``"06_training_a_tiny_var"``)."""
    paths = sorted(p for p in LESSONS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if selected:
        paths = [p for p in paths if any(p.name.startswith(s) for s in selected)]
    return paths


def exercise_cells(nb) -> list:
    return [c for c in nb.cells if "exercise" in c.get("metadata", {}).get("tags", [])]


def solution_source(cell) -> str:
    """The code that replaces an exercise cell: the reference solution, imported from lessons/solutions."""
    module, name = cell["metadata"]["varlite"]["solution"].rsplit(".", 1)
    return (f"import sys\nsys.path.insert(0, {str(LESSONS_DIR)!r})\n"
            f"from solutions.{module} import {name}  # reference solution (lessons/solutions/{module}.py)")


def fill_solutions(nb):
    """A copy of ``nb`` with every exercise cell replaced by the import of its reference solution."""
    nb = nbformat.from_dict(nb)
    for cell in exercise_cells(nb):
        cell.source = solution_source(cell)
    return nb


def kernel_env(quick: bool) -> dict[str, str]:
    """Environment for the kernel: one CPU thread (frugal and, on a shared machine, faster), a non-interactive
    matplotlib backend, and VARLITE_CI=1 for the short training schedule of lesson 6 when ``quick``."""
    env = {"OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1"), "MPLBACKEND": "module://matplotlib_inline.backend_inline"}
    if quick:
        env["VARLITE_CI"] = "1"
    return env


def execute(nb, timeout: int = CELL_TIMEOUT_S, env: dict[str, str] | None = None, cwd: Path = LESSONS_DIR):
    """Execute ``nb`` in place with a fresh python3 kernel started in ``cwd``; returns the wall time in seconds.

    ``env`` is added to this process's environment while the kernel starts (the kernel inherits it)."""
    from nbclient import NotebookClient
    saved = {k: os.environ.get(k) for k in (env or {})}
    os.environ.update(env or {})
    try:
        start = time.perf_counter()
        NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(cwd)}}).execute()
        return time.perf_counter() - start
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def to_html(nb, path: Path) -> Path:
    from nbconvert import HTMLExporter
    body, _ = HTMLExporter().from_notebook_node(nb)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body, encoding="utf-8")
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("lessons", nargs="*", help="lesson numbers or names (default: all)")
    parser.add_argument("--solutions", action="store_true", help="fill the exercise cells with the reference solutions")
    parser.add_argument("--quick", action="store_true", help="the short CI schedules (sets VARLITE_CI=1)")
    parser.add_argument("--out", type=Path, default=HTML_DIR, help=f"output folder (default: {HTML_DIR})")
    args = parser.parse_args(argv)
    paths = lesson_paths(args.lessons)
    if not paths:
        print(f"no lesson matches {args.lessons}", file=sys.stderr)
        return 2
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        if args.solutions:
            nb = fill_solutions(nb)
        seconds = execute(nb, env=kernel_env(args.quick))
        suffix = "_solutions" if args.solutions else ""
        out = to_html(nb, args.out / f"{path.stem}{suffix}.html")
        print(f"{path.name}: ran in {seconds:.0f} s -> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
