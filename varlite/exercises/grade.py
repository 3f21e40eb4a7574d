"""Grade a folder of learners' lesson notebooks and write one CSV row per (student, exercise).

    python -m varlite.exercises.grade FOLDER --out grades.csv [--timeout 300]

Every ``*.ipynb`` under FOLDER is one learner's copy of a lesson. The student is the first folder below FOLDER
(``FOLDER/alice/01_images_as_tokens.ipynb`` -> ``alice``), or the file's stem for a notebook directly in FOLDER.
The exercise cells are the code cells tagged ``exercise`` whose metadata names a known exercise
(``{"varlite": {"solution": "lesson01.nearest_code"}}``, as the shipped notebooks have them); a notebook without
any (lessons 11 and 12) is skipped. Of those cells grading runs only the imports, function definitions and
constants (``sandbox.definitions_only``), plus the imports of the cells tagged ``setup``: no training, no download,
nothing else of the notebook.

One notebook cannot spoil the others' grades:

1. The supervisor (this command) reads every notebook before any learner's code runs, and makes a secret for this
   run.
2. Each notebook is graded by a judge: a new process in its own session (process group), working in a temporary
   folder that holds a copy of that notebook only. The judge first forks the learner's process
   (``sandbox.Worker``: guarded, it receives the cells' source and each call's inputs, and answers with what the
   function returned), then runs every check with the learner's function standing in
   (``sandbox.SandboxedFunction``): the cases' expected answers and the verdicts never enter the learner's process.
3. The judge writes each row, signed with the secret (HMAC-SHA256), to a pipe the learner's process does not hold;
   the supervisor keeps a row only if its signature is valid and it is for an exercise of that notebook, once.
4. When the judge ends or its time is up, the supervisor kills its process group (and so whatever the learner's
   code left running), then appends the notebook's rows to the CSV and flushes it: a grader killed halfway leaves
   the rows so far. A judge that dies (a learner's code that kills its parent kills only its judge) leaves an
   ``error`` row for each exercise it did not grade, a judge out of time a ``timeout`` row.

Columns: student, notebook, exercise (its number, e.g. 2.1), name, status (passed, wrong, error, refused,
not attempted, missing, timeout), message (the first line of the verdict), diagnosis (the known mistake the answer
is, or which earlier piece it calls that does not pass), notebook_status (the learner's own verdict: the last check
output for that exercise saved in the notebook, "not run" if none). A field that starts with = + - @, a tab or a
carriage return gets a leading ' so that a spreadsheet shows it as text (OWASP's advice on CSV injection).
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass, field
from pathlib import Path

MARK = "varlite-grade-row "          # prefix of a judge's result lines: MARK, signature, space, JSON
FIELDS = ["student", "notebook", "exercise", "name", "status", "message", "diagnosis", "notebook_status"]
STATUSES = ("passed", "wrong", "error", "refused", "not attempted", "missing", "timeout")
_VERDICT = re.compile(r"\[(\w+)\] (PASSED|WRONG|ERROR|REFUSED|NOT ATTEMPTED YET)\b")
_NOTEBOOK_STATUS = {"PASSED": "passed", "WRONG": "wrong", "ERROR": "error", "REFUSED": "refused",
                    "NOT ATTEMPTED YET": "not attempted"}
_LABEL = {"missing": "MISSING", "error": "ERROR", "refused": "REFUSED"}


# ---------------------------------------------------------------------------------------------- reading notebooks
@dataclass
class Notebook:
    """What grading needs of one learner's notebook, read before any learner's code runs."""
    path: Path
    student: str
    cells: list[tuple[str, str]]                 # (exercise name, cell source) of the exercise cells, in order
    setup: list[str] = field(default_factory=list)     # sources of the cells tagged ``setup`` (only imports run)
    verdicts: dict[str, str] = field(default_factory=dict)   # exercise name -> the learner's own last verdict

    @property
    def names(self) -> list[str]:
        return list(dict.fromkeys(name for name, _ in self.cells))


def _source(cell: dict) -> str:
    source = cell.get("source", "")
    return source if isinstance(source, str) else "".join(source)


def _tags(cell: dict) -> list:
    tags = (cell.get("metadata") or {}).get("tags") or []
    return tags if isinstance(tags, list) else []


def exercise_cells(nb: dict, known: set[str]) -> tuple[list[tuple[str, str]], int]:
    """(name, source) of every exercise cell of a notebook naming a known exercise, in order; and how many cells
    named an exercise that does not exist."""
    cells, unknown = [], 0
    for cell in nb.get("cells", []):
        meta = cell.get("metadata") or {}
        if cell.get("cell_type") != "code" or "exercise" not in _tags(cell):
            continue
        solution = (meta.get("varlite") or {}).get("solution") if isinstance(meta.get("varlite"), dict) else None
        name = solution.rsplit(".", 1)[-1] if isinstance(solution, str) else None
        if name in known:
            cells.append((name, _source(cell)))
        else:
            unknown += 1
    return cells, unknown


def notebook_verdicts(nb: dict) -> dict[str, str]:
    """Exercise name -> status of the last verdict line (``[name] PASSED: ...``) among the notebook's saved outputs:
    what the learner saw."""
    verdicts: dict[str, str] = {}
    for cell in nb.get("cells", []):
        for output in cell.get("outputs", []) or []:
            if not isinstance(output, dict):
                continue
            text = output.get("text") if output.get("output_type") == "stream" else \
                (output.get("data") or {}).get("text/plain")
            text = "".join(text) if isinstance(text, list) else text
            if isinstance(text, str):
                for line in text.splitlines():
                    if (match := _VERDICT.match(line.strip())):
                        verdicts[match.group(1)] = _NOTEBOOK_STATUS[match.group(2)]
    return verdicts


@dataclass
class Collected:
    notebooks: list[Notebook]
    unreadable: list[dict]                      # one error row per notebook that could not be read
    skipped: int = 0                            # notebooks without exercises
    unknown: int = 0                            # exercise cells naming no known exercise


def collect(folder: Path, known: set[str]) -> Collected:
    """Read every notebook under ``folder`` (not ``.ipynb_checkpoints``), sorted by student and notebook."""
    found = Collected([], [])
    root = folder.resolve()
    for path in sorted(folder.rglob("*.ipynb")):
        if ".ipynb_checkpoints" in path.parts:
            continue
        relative = path.relative_to(folder)
        student = relative.parts[0] if len(relative.parts) > 1 else path.stem
        row = {"student": student, "notebook": path.name, "exercise": "", "name": "", "status": "error",
               "diagnosis": "", "notebook_status": ""}
        if path.is_symlink() or not path.resolve().is_relative_to(root / relative.parts[0]):
            found.unreadable.append({**row, "message": "a symbolic link, not the learner's own file: not graded"})
            continue
        try:
            nb = json.loads(path.read_text(encoding="utf-8"))
            cells, unknown = exercise_cells(nb, known)
            notebook = Notebook(path, student, cells, [_source(c) for c in nb.get("cells", [])
                                                       if c.get("cell_type") == "code" and "setup" in _tags(c)],
                                notebook_verdicts(nb))
        except (OSError, ValueError, AttributeError, TypeError) as err:
            found.unreadable.append({**row, "message": f"not a readable notebook ({type(err).__name__}: {err})"})
            continue
        found.unknown += unknown
        if cells:
            found.notebooks.append(notebook)
        else:
            found.skipped += 1
    return found


# ---------------------------------------------------------------------------------------------- the judge
def _signature(secret: bytes, payload: str) -> str:
    return hmac.new(secret, payload.encode(), hashlib.sha256).hexdigest()


def _needs(name: str) -> tuple[str, ...]:
    """The learner's own pieces a capstone piece calls (lesson 10), else ()."""
    from .lesson10 import PIECE_BY_NAME
    piece = PIECE_BY_NAME.get(name)
    return piece.needs if piece is not None else ()


def _grade_exercise(name: str, loaded: tuple[str, str], worker, statuses: dict[str, str]) -> dict:
    """The row of one exercise: its check run on the learner's function in the worker."""
    from .. import exercises
    from .sandbox import SandboxedFunction
    row = {"exercise": exercises.EXERCISES[name].number, "name": name}
    status, why = loaded
    if status != "ok":
        return {**row, "status": status, "message": f"[{name}] {_LABEL[status]}: {why}", "diagnosis": ""}
    result = getattr(exercises, f"check_{name}")(SandboxedFunction(worker, name), verbose=False)
    lines = [line.strip() for line in result.message.splitlines()]
    diagnosis = next((line.removeprefix("Diagnosis: ") for line in lines[1:] if line.startswith("Diagnosis:")), "")
    broken = [dep for dep in _needs(name) if statuses.get(dep, "passed") != "passed"]
    if result.status in ("wrong", "error") and broken:
        calls = f"calls {', '.join(broken)}, which {'does' if len(broken) == 1 else 'do'} not pass"
        diagnosis = f"{calls}; {diagnosis}" if diagnosis else calls
    return {**row, "status": result.status, "message": lines[0], "diagnosis": diagnosis}


def judge(folder: Path, deny: list[Path]) -> int:
    """Grade one notebook (the job on stdin: secret, job id, cells, setup) and print one signed row per exercise."""
    from .sandbox import Worker
    worker = Worker(folder, deny)            # forked before anything of the learner's is read
    try:
        job = json.loads(sys.stdin.read())
        secret = bytes.fromhex(job["secret"])
        loaded = worker.load([tuple(c) for c in job["cells"]], job["setup"])
        statuses: dict[str, str] = {}
        for name in dict.fromkeys(name for name, _ in job["cells"]):
            row = {"job": job["job"], **_grade_exercise(name, loaded[name], worker, statuses)}
            statuses[name] = row["status"]
            payload = json.dumps(row)
            print(f"{MARK}{_signature(secret, payload)} {payload}", flush=True)
    finally:
        worker.close()
    return 0


# ---------------------------------------------------------------------------------------------- the supervisor
def spreadsheet_safe(value: str) -> str:
    """``value`` with a leading ' if it starts with = + - @, a tab or a carriage return: a spreadsheet opening the
    CSV shows it as text instead of evaluating it (OWASP, CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def _judge_command(folder: Path, deny: list[Path]) -> list[str]:
    """The judge: this module's ``main --judge`` in an isolated Python (``-I``: neither its working folder, where the
    learner's code may write, nor PYTHONPATH on its path), with the folder holding the varlite package appended to
    the path for a checkout run without installing it."""
    root = str(Path(__file__).resolve().parents[2])
    start = (f"import sys; sys.path.append({root!r}); from varlite.exercises.grade import main; "
             f"raise SystemExit(main())")
    return [sys.executable, "-I", "-c", start, "--judge", str(folder),
            *[arg for path in deny for arg in ("--deny", str(path))]]


def _pump(stream, chunks: list[bytes]) -> None:
    for chunk in iter(lambda: stream.read1(65536), b""):
        chunks.append(chunk)


def _feed(stream, data: bytes) -> None:
    try:
        stream.write(data)
        stream.close()
    except (BrokenPipeError, OSError):           # the judge died before reading its job
        pass


def _run_judge(notebook: Notebook, secret: bytes, job: str, timeout_s: float, deny: list[Path]) -> tuple[
        bytes, bytes, int | None]:
    """(stdout, stderr, return code -- None if out of time) of the judge of one notebook. The judge's end, not the
    end of its output, decides: then its whole process group is killed (with whatever it left running, which might
    hold its pipes open) before this returns."""
    folder = Path(tempfile.mkdtemp(prefix="varlite-grade-"))
    try:
        shutil.copyfile(notebook.path, folder / notebook.path.name)      # the only file of the learner's there
        request = json.dumps({"secret": secret.hex(), "job": job, "cells": notebook.cells, "setup": notebook.setup})
        judge = subprocess.Popen(_judge_command(folder, deny), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, cwd=folder, start_new_session=True)
        out: list[bytes] = []
        err: list[bytes] = []
        threads = [threading.Thread(target=_feed, args=(judge.stdin, request.encode()), daemon=True),
                   threading.Thread(target=_pump, args=(judge.stdout, out), daemon=True),
                   threading.Thread(target=_pump, args=(judge.stderr, err), daemon=True)]
        for thread in threads:
            thread.start()
        try:
            code: int | None = judge.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            code = None
        finally:
            _kill_group(judge.pid)
            judge.wait()
        for thread in threads:
            thread.join(timeout=10)
        return b"".join(out), b"".join(err), code
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _accepted_rows(out: bytes, secret: bytes, job: str, names: list[str]) -> tuple[dict[str, dict], int]:
    """The judge's rows with a valid signature, for this job and an exercise of this notebook, once each; and how
    many lines were refused."""
    from . import EXERCISES
    rows: dict[str, dict] = {}
    refused = 0
    for line in out.decode("utf-8", errors="replace").splitlines():
        if not line.startswith(MARK):
            continue
        signature, _, payload = line[len(MARK):].partition(" ")
        try:
            row = json.loads(payload) if hmac.compare_digest(signature, _signature(secret, payload)) else None
        except ValueError:
            row = None
        name = row.get("name") if isinstance(row, dict) else None
        if (name not in names or name in rows or row.get("job") != job or row.get("status") not in STATUSES
                or row.get("exercise") != EXERCISES[name].number):
            refused += 1
            continue
        rows[name] = {key: str(row.get(key, "")) for key in ("exercise", "name", "status", "message", "diagnosis")}
    return rows, refused


def grade_notebook(notebook: Notebook, secret: bytes, timeout_s: float, deny: list[Path]) -> tuple[list[dict], int]:
    """The rows of one notebook (an ``error`` or ``timeout`` row for every exercise its judge did not grade) and
    how many of the judge's lines were refused."""
    from . import EXERCISES
    job = secrets.token_hex(8)
    out, err, code = _run_judge(notebook, secret, job, timeout_s, deny)
    graded, refused = _accepted_rows(out, secret, job, notebook.names)
    if code is None:
        status, why = "timeout", f"the exercises did not finish within {timeout_s:.0f} s"
    else:
        tail = (err.decode("utf-8", errors="replace").strip().splitlines() or [""])[-1][:300]
        died = f"killed by signal {-code}" if code < 0 else f"exit code {code}"
        status, why = "error", f"grading this notebook stopped ({died}){': ' + tail if tail else ''}"
    rows = []
    for name in notebook.names:
        row = graded.get(name) or {"exercise": EXERCISES[name].number, "name": name, "status": status,
                                   "message": why, "diagnosis": ""}
        rows.append({"student": notebook.student, "notebook": notebook.path.name, **row,
                     "notebook_status": notebook.verdicts.get(name, "not run")})
    return rows, refused


@dataclass
class Report:
    rows: list[dict]
    skipped: int                                # notebooks without exercises
    unknown: int                                # exercise cells naming no known exercise
    refused: int                                # judges' lines refused (bad signature, unknown exercise, repeated)


def grade_folder(folder: Path, out: Path, timeout_s: float = 300.0) -> Report:
    """Grade every notebook under ``folder``, each by its own judge, appending its rows to the CSV ``out`` as soon
    as they are known."""
    from . import EXERCISES
    found = collect(folder, set(EXERCISES))
    secret = secrets.token_bytes(32)
    lessons = Path(__file__).resolve().parents[2] / "lessons"
    deny = [folder.resolve(), out.resolve(), lessons]
    report = Report([], found.skipped, found.unknown, 0)
    pending = sorted([(n.student, n.path.name, n) for n in found.notebooks] +
                     [(r["student"], r["notebook"], r) for r in found.unreadable], key=lambda item: item[:2])
    with out.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for _, _, item in pending:
            if isinstance(item, Notebook):
                rows, refused = grade_notebook(item, secret, timeout_s, deny)
                report.refused += refused
            else:
                rows = [item]
            writer.writerows({key: spreadsheet_safe(str(row.get(key, ""))) for key in FIELDS} for row in rows)
            handle.flush()
            os.fsync(handle.fileno())
            report.rows.extend(rows)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m varlite.exercises.grade", description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", nargs="?", type=Path, help="folder of learners' notebooks (one subfolder each)")
    parser.add_argument("--out", type=Path, default=Path("grades.csv"), help="CSV to write (default grades.csv)")
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds allowed per notebook (default 300)")
    parser.add_argument("--judge", type=Path, help=argparse.SUPPRESS)      # internal: grade one notebook's job
    parser.add_argument("--deny", type=Path, action="append", default=[], help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.judge:
        return judge(args.judge, args.deny)
    if args.folder is None or not args.folder.is_dir():
        parser.error(f"FOLDER must be a folder of notebooks; got {args.folder}")
    report = grade_folder(args.folder, args.out, args.timeout)
    rows = report.rows
    passed = sum(row["status"] == "passed" for row in rows)
    print(f"{len(rows)} rows ({passed} passed) from {len({r['student'] for r in rows})} students -> {args.out}")
    if report.skipped:
        print(f"skipped {report.skipped} notebooks without exercises")
    if report.unknown:
        print(f"ignored {report.unknown} exercise cells naming no known exercise")
    if report.refused:
        print(f"refused {report.refused} result lines (bad signature, unknown exercise or repeated)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
