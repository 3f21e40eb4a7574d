"""Grade a folder of learners' lesson notebooks and write one CSV row per (student, exercise).

    python -m varlite.exercises.grade FOLDER --out grades.csv [--timeout 300]

Every ``*.ipynb`` under FOLDER is one learner's copy of a lesson. The student is the first folder below FOLDER
(``FOLDER/alice/01_images_as_tokens.ipynb`` -> ``alice``), or the file's stem for a notebook directly in FOLDER.
Only the exercise cells are graded (code cells tagged ``exercise`` whose metadata names the solution, as the
shipped notebooks have them): they are executed in order in one fresh namespace (so a later piece may call an
earlier one), then every exercise's check runs on the learner's function -- never the rest of the notebook, so no
training and no download happens. Each notebook runs in its own subprocess with a time limit.

Columns: student, notebook, exercise (its number, e.g. 2.1), name, status (passed, wrong, error, refused, not
attempted, missing, timeout), message (the first line of the check's verdict).

This runs the learners' code with your permissions: run it in a sandbox (a container or a throwaway account).
"""
from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

PRELUDE = "import math\nimport numpy as np\nimport torch\nimport torch.nn.functional as F\n"
MARK = "varlite-grade-row "          # prefix of the result lines (a learner's own prints are ignored)
FIELDS = ["student", "notebook", "exercise", "name", "status", "message"]


def exercise_specs(nb: dict) -> list[tuple[str, str]]:
    """(function name, cell source) of every exercise cell of a notebook (as read by ``json``), in order."""
    specs = []
    for cell in nb.get("cells", []):
        meta = cell.get("metadata", {})
        if cell.get("cell_type") == "code" and "exercise" in meta.get("tags", []) and "varlite" in meta:
            source = cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])
            specs.append((meta["varlite"]["solution"].rsplit(".", 1)[1], source))
    return specs


def _python_only(source: str) -> str:
    """The cell without IPython magics and shell escapes (lines starting with % or !)."""
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))


def grade_notebook(path: Path) -> list[dict]:
    """Run the exercise cells of one notebook and the checks of its exercises (in this process)."""
    from varlite import exercises

    nb = json.loads(path.read_text())
    specs = exercise_specs(nb)
    namespace: dict = {"__name__": "__learner__"}
    exec(PRELUDE, namespace)
    failed_cells: dict[str, str] = {}
    for name, source in specs:
        try:
            exec(compile(_python_only(source), f"<{path.name}: {name}>", "exec"), namespace)
        except Exception as err:        # a cell that does not even run: its exercise is an error
            failed_cells[name] = f"the cell raised {type(err).__name__}: {err}"
    rows = []
    for name, _ in specs:
        number = exercises.EXERCISES[name].number if name in exercises.EXERCISES else ""
        row = {"notebook": path.name, "exercise": number, "name": name}
        if name in failed_cells:
            rows.append({**row, "status": "error", "message": failed_cells[name]})
        elif name not in namespace:
            rows.append({**row, "status": "missing", "message": f"the notebook defines no function {name!r}"})
        else:
            result = getattr(exercises, f"check_{name}")(namespace[name], verbose=False)
            rows.append({**row, "status": result.status, "message": result.message.splitlines()[0]})
    return rows


def grade_folder(folder: Path, timeout_s: float = 300.0) -> list[dict]:
    """Grade every notebook under ``folder``, each in its own subprocess; rows sorted by student and notebook."""
    rows = []
    for path in sorted(folder.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        relative = path.relative_to(folder)
        student = relative.parts[0] if len(relative.parts) > 1 else path.stem
        try:
            done = subprocess.run([sys.executable, "-m", "varlite.exercises.grade", "--one", str(path)],
                                  capture_output=True, text=True, timeout=timeout_s)
            lines = [line[len(MARK):] for line in done.stdout.splitlines() if line.startswith(MARK)]
            if done.returncode != 0 or not lines:
                tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
                found = [{"notebook": path.name, "exercise": "", "name": "", "status": "error",
                          "message": f"grading this notebook failed: {tail}"}]
            else:
                found = [json.loads(line) for line in lines]
        except subprocess.TimeoutExpired:
            found = [{"notebook": path.name, "exercise": "", "name": "", "status": "timeout",
                      "message": f"the exercises did not finish within {timeout_s:.0f} s"}]
        rows.extend({"student": student, **row} for row in found)
    return rows


def write_csv(rows: list[dict], out: Path) -> None:
    with out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m varlite.exercises.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="folder of learners' notebooks (one subfolder each)")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"), help="CSV to write (default grades.csv)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per notebook (default 300)")
    parser.add_argument("--one", type=Path, help=argparse.SUPPRESS)      # internal: grade one notebook, JSON lines
    args = parser.parse_args(argv)
    if args.one:
        for row in grade_notebook(args.one):
            print(MARK + json.dumps(row))
        return 0
    if args.folder is None or not args.folder.is_dir():
        parser.error(f"FOLDER must be a folder of notebooks; got {args.folder}")
    rows = grade_folder(args.folder, args.timeout)
    write_csv(rows, args.out)
    passed = sum(row["status"] == "passed" for row in rows)
    print(f"{len(rows)} rows ({passed} passed) from {len({r['student'] for r in rows})} students -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
