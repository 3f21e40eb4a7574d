"""The lesson notebooks: committed without outputs, exercise cells are stubs that match the reference solutions, every
notebook runs top to bottom as shipped (unsolved exercises are reported "not attempted" and the lesson goes on) within
its time budget, and with the reference solutions filled in every check passes.

Each notebook runs in a fresh kernel with OMP_NUM_THREADS=1, VARLITE_CI=1 (lesson 6's short training schedule),
VARLITE_HOME in a temporary folder (lesson 9 then uses synthetic weights of the official shape, never a developer's
downloaded checkpoint) and TMPDIR in a temporary folder (lesson 6's run directories). Budget per notebook: 90 s of
wall time including the kernel start (``VARLITE_LESSON_BUDGET_S`` overrides it on a slow machine)."""
from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import os
import sys
import time
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
LESSONS = ROOT / "lessons"
BUDGET_S = float(os.environ.get("VARLITE_LESSON_BUDGET_S", "90"))

_spec = importlib.util.spec_from_file_location("lessons_render", LESSONS / "render.py")
render = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(render)

NOTEBOOKS = render.lesson_paths()
TIMINGS: dict[str, float] = {}


def tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def read(path: Path):
    return nbformat.read(path, as_version=4)


def outputs_text(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out.get("text", ""))
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


@pytest.fixture
def kernel_env(tmp_path):
    home, tmp = tmp_path / "varlite_home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    return {**render.kernel_env(quick=True), "VARLITE_HOME": str(home), "TMPDIR": str(tmp)}


# ------------------------------------------------------------------------------------------ structure (no kernel)
def test_twelve_numbered_lessons():
    assert [p.name[:2] for p in NOTEBOOKS] == [f"{n:02d}" for n in range(1, 13)]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_without_outputs(path):
    nb = read(path)
    nbformat.validate(nb)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name} cell {i} has outputs"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_structure(path):
    """Goals first, one setup cell, 1-4 coding exercises each followed by its check (lesson 6: six; the capstone: its
    12 pieces; the lesson on limitations: none, its work is the written exercises), written exercises at the end."""
    nb = read(path)
    assert nb.cells[0].cell_type == "markdown" and "Learning goals" in nb.cells[0].source
    assert sum("setup" in tags(c) for c in nb.cells) == 1
    exercises = render.exercise_cells(nb)
    expected = {"06": range(1, 7), "10": range(12, 13), "11": range(0, 1)}.get(path.name[:2], range(1, 5))
    assert len(exercises) in expected
    assert "Exercises (written)" in nb.cells[-1].source


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_lesson_opens_with_its_picture(path):
    """Right after the setup cell: "The lesson in one picture", a conceptual figure drawn by
    ``varlite.concept_figures`` before any of the lesson's own code."""
    cells = read(path).cells
    setup = next(i for i, c in enumerate(cells) if "setup" in tags(c))
    assert cells[setup + 1].cell_type == "markdown"
    assert cells[setup + 1].source.startswith("### The lesson in one picture")
    first_code = next(c for c in cells[setup + 2:] if c.cell_type == "code")
    assert "concept_figures." in first_code.source


def solution_function(spec: str):
    module, name = spec.rsplit(".", 1)
    sys.path.insert(0, str(LESSONS))
    try:
        return getattr(importlib.import_module(f"solutions.{module}"), name)
    finally:
        sys.path.remove(str(LESSONS))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_exercise_cells_are_stubs_matching_the_solutions(path):
    nb = read(path)
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    for cell in render.exercise_cells(nb):
        spec = cell.metadata["varlite"]["solution"]
        name = spec.rsplit(".", 1)[1]
        assert spec.startswith(f"lesson{path.name[:2]}."), spec
        tree = ast.parse(cell.source)
        defs = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
        assert [d.name for d in defs] == [name], f"{path.name}: the exercise cell must define {name} only"
        stub_args = [a.arg for a in defs[0].args.args]
        solution = solution_function(spec)
        assert stub_args == list(inspect.signature(solution).parameters), f"{name}: stub and solution signatures differ"
        body = defs[0].body
        assert isinstance(body[-1], ast.Raise) and "NotImplementedError" in ast.unparse(body[-1]), \
            f"{name}: the stub must end with raise NotImplementedError"
        assert len([n for n in body if not isinstance(n, ast.Expr)]) == 1, f"{name}: the stub must not hold a solution"
        following = code_cells[code_cells.index(cell) + 1]
        assert "check" in tags(following) and f"ex.check_{name}({name})" in following.source


def test_every_solution_has_an_exercise_cell():
    in_notebooks = {c.metadata["varlite"]["solution"] for p in NOTEBOOKS for c in render.exercise_cells(read(p))}
    sys.path.insert(0, str(LESSONS))
    try:
        in_solutions = {f"{m.stem}.{name}" for m in sorted((LESSONS / "solutions").glob("lesson*.py"))
                        for name, fn in inspect.getmembers(importlib.import_module(f"solutions.{m.stem}"),
                                                           inspect.isfunction)
                        if fn.__module__ == f"solutions.{m.stem}" and not name.startswith("_")}
    finally:
        sys.path.remove(str(LESSONS))
    assert in_notebooks == in_solutions


def test_fill_solutions_replaces_only_exercise_cells():
    nb = read(NOTEBOOKS[0])
    filled = render.fill_solutions(nb)
    for before, after in zip(nb.cells, filled.cells):
        if "exercise" in tags(before):
            assert "from solutions.lesson01 import" in after.source and "NotImplementedError" not in after.source
        else:
            assert before.source == after.source
    assert "NotImplementedError" in render.exercise_cells(nb)[0].source      # the original is untouched


# ------------------------------------------------------------------------------------------ execution
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_runs_as_shipped(path, kernel_env):
    nb = read(path)
    seconds = render.execute(nb, timeout=int(BUDGET_S), env=kernel_env)
    TIMINGS[path.stem] = seconds
    print(f"{path.name}: {seconds:.1f} s")
    for cell in nb.cells:
        if "check" in tags(cell):
            assert "NOT ATTEMPTED YET" in outputs_text(cell), outputs_text(cell)
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error"
    assert any("image/png" in out.get("data", {}) for c in nb.cells for out in c.get("outputs", [])), "no figure"
    assert seconds <= BUDGET_S, f"{path.name} took {seconds:.0f} s (budget {BUDGET_S:.0f} s)"


def test_reference_solutions_pass_inside_the_notebooks(kernel_env):
    """Every notebook's setup, exercise and check cells, exercise cells filled from lessons/solutions, in one kernel:
    every check must print PASSED (this is what a learner who solved everything sees)."""
    cells = []
    for path in NOTEBOOKS:
        nb = render.fill_solutions(read(path))
        for cell in nb.cells:
            if {"setup", "exercise", "check"} & set(tags(cell)):
                cell["id"] = f"l{path.name[:2]}-{cell['id']}"        # cell ids must stay unique in one notebook
                cells.append(cell)
    nb = nbformat.v4.new_notebook(cells=cells, metadata=read(NOTEBOOKS[0]).metadata)
    start = time.perf_counter()
    render.execute(nb, timeout=int(BUDGET_S), env=kernel_env)
    checks = [c for c in nb.cells if "check" in tags(c)]
    assert len(checks) == sum(len(render.exercise_cells(read(path))) for path in NOTEBOOKS)
    for cell in checks:
        assert "PASSED" in outputs_text(cell), f"{cell.source}: {outputs_text(cell)}"
    print(f"{len(checks)} checks passed in {time.perf_counter() - start:.1f} s")
