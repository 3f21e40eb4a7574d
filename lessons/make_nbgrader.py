"""Write nbgrader *source* notebooks of the lessons, for teachers who grade with nbgrader (JupyterHub's grader).

    .venv/bin/python lessons/make_nbgrader.py COURSE              # every lesson with coding exercises
    .venv/bin/python lessons/make_nbgrader.py COURSE 01 04        # some of them

    cd COURSE
    nbgrader generate_assignment 01_images_as_tokens              # the students' version, in release/
    nbgrader autograde 01_images_as_tokens                        # grades submitted/<student>/01_images_as_tokens/

Each lesson becomes the assignment of the same name: ``COURSE/source/<lesson>/<lesson>.ipynb`` (nbgrader's course
layout). The notebook is the lesson with two kinds of cells changed, both generated from the repository, never
edited by hand (run this again after a lesson changes; it replaces the files it wrote):

* an exercise cell (tagged ``exercise``) becomes an *autograded answer* cell whose grade id is the exercise's function
  name (``nearest_code``): the lesson's signature and docstring, then the body of the reference solution
  (``lessons/solutions/lessonNN.py``) between ``### BEGIN SOLUTION`` and ``### END SOLUTION``, which
  ``generate_assignment`` replaces by nbgrader's stub (``# YOUR CODE HERE`` / ``raise NotImplementedError()``). An
  import of the solution module that the body needs and the cell does not make, and a private helper of the module
  that it calls (``_contribution`` in the capstone), go inside that region, as a local import and a nested function:
  the students' version shows neither;
* the check cell after it (tagged ``check``) becomes a locked *autograder test* cell worth 1 point, grade id
  ``check_<name>``: the lesson's own check (``ex.check_nearest_code(nearest_code)``, which prints the verdict and its
  hints), then an ``assert`` on its verdict, so that anything but PASSED scores 0. Every check also runs hidden
  cases whose inputs it never shows (``varlite.exercises``): these are the assignment's hidden tests, and nbgrader's
  own hidden-test markers are not needed.

Every other cell is the lesson's, and every cell keeps its id, tags and ``varlite`` metadata, so
``python -m varlite.exercises.grade`` grades the same submissions. A folder of ``lessons/data`` that the lesson's code
names (``data/reproduce`` in lesson 12) is copied beside the notebook: ``generate_assignment`` releases it with it. ``COURSE/nbgrader_config.py`` is written when there
is none: ``autograde`` runs the whole notebook, and lesson 6's training cell takes minutes where nbgrader's per-cell
limit is 30 s.

The reference solutions are in the repository, not in an installed wheel: run this from a clone.
"""
from __future__ import annotations

import argparse
import ast
import shutil
import sys
import textwrap
from pathlib import Path

import nbformat

LESSONS_DIR = Path(__file__).resolve().parent
SOLUTIONS_DIR = LESSONS_DIR / "solutions"
STUB_MARK = "# YOUR CODE HERE"
POINTS = 1                       # per exercise
CELL_TIMEOUT_S = 600             # nbgrader's per-cell limit when it runs a submission (its default: 30 s)
CONFIG = f'''c = get_config()  # noqa: F821 (nbgrader provides it)

# autograde runs each submitted notebook top to bottom; lesson 6 trains for a few minutes in one cell.
c.Execute.timeout = {CELL_TIMEOUT_S}
'''


def lesson_paths(selected: list[str] | None = None) -> list[Path]:
    """The numbered lesson notebooks (``NN_*.ipynb``), optionally only those whose name starts with one of
    ``selected`` (``"04"`` or ``"04_inside_the_transformer"``)."""
    paths = sorted(LESSONS_DIR.glob("[0-9][0-9]_*.ipynb"))
    if selected:
        paths = [p for p in paths if any(p.name.startswith(s) for s in selected)]
    return paths


def _tags(cell) -> list[str]:
    return cell.get("metadata", {}).get("tags", [])


def _bound_by_imports(nodes) -> dict[str, ast.stmt]:
    """name -> the import statement (among ``nodes``) that binds it."""
    bound = {}
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                bound[alias.asname or alias.name.split(".")[0]] = node
    return bound


def _names_used(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}


def solution_lines(solution: str, cell_source: str) -> list[str]:
    """The lines that answer an exercise, indented for a function body: the imports the body needs that the cell
    does not make, the private helpers of the solution module it calls (nested, in the module's order), then the
    body of the reference function ``solution`` (``"lesson01.nearest_code"``) without its docstring."""
    module, name = solution.split(".")
    path = SOLUTIONS_DIR / f"{module}.py"
    if not path.is_file():
        raise FileNotFoundError(f"the reference solutions are not here ({path}): run this script from a clone of "
                                f"the varlite repository")
    text = path.read_text(encoding="utf-8")
    lines = text.splitlines()
    tree = ast.parse(text)
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    if name not in functions:
        raise ValueError(f"{path} defines no function {name!r}, which the lesson's exercise cell names")
    function = functions[name]

    helpers, pending = [], [function]            # private helpers it calls, and the helpers they call
    while pending:
        for used in sorted(_names_used(pending.pop())):
            if used.startswith("_") and used in functions and functions[used] not in helpers:
                helpers.append(functions[used])
                pending.append(functions[used])
    helpers.sort(key=lambda node: node.lineno)

    used = set().union(*(_names_used(node) for node in [function, *helpers]))
    made_by_cell = _bound_by_imports(ast.parse(cell_source).body)
    imports = []
    for bound, node in _bound_by_imports(tree.body).items():
        if bound in used and bound not in made_by_cell and node not in imports:
            imports.append(node)

    first = function.body[0]
    has_docstring = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
        and isinstance(first.value.value, str)
    start = first.end_lineno if has_docstring else first.lineno - 1     # 0-based index of the body's first line
    body = "\n".join(lines[start:function.end_lineno])
    parts = [ast.get_source_segment(text, node) for node in imports]
    parts += ["\n".join(lines[node.lineno - 1:node.end_lineno]) + "\n" for node in helpers]
    return textwrap.indent("\n".join([*parts, textwrap.dedent(body)]), "    ").splitlines()


def answer_source(cell) -> str:
    """The exercise cell with its stub (``# YOUR CODE HERE (...)`` and the ``raise`` under it) replaced by the
    reference solution between nbgrader's solution markers; the stub's size hint stays as a comment."""
    solution = cell["metadata"]["varlite"]["solution"]
    lines = cell.source.splitlines()
    marks = [i for i, line in enumerate(lines) if line.strip().startswith(STUB_MARK)]
    if len(marks) != 1 or marks[0] + 1 >= len(lines) or \
            not lines[marks[0] + 1].strip().startswith("raise NotImplementedError"):
        raise ValueError(f"the exercise cell {cell.get('id')} ({solution}) does not end its function with one "
                         f"'{STUB_MARK} (...)' line followed by 'raise NotImplementedError(...)'")
    i = marks[0]
    indent = lines[i][:len(lines[i]) - len(lines[i].lstrip())]
    hint = lines[i].strip()[len(STUB_MARK):].strip()
    region = [f"{indent}### BEGIN SOLUTION", *solution_lines(solution, cell.source), f"{indent}### END SOLUTION"]
    source = "\n".join([*lines[:i], *([f"{indent}# {hint}"] if hint else []), *region, *lines[i + 2:]])
    ast.parse(source)                             # a generated cell that does not compile is a bug here
    return source


def autograder_test_source(cell) -> str:
    """The check cell followed by an assert on its verdict (a ``CheckResult``; the check itself never raises)."""
    tree = ast.parse(cell.source)
    statement = tree.body[0] if len(tree.body) == 1 else None
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
        verdict, source = "verdict", f"verdict = {cell.source.strip()}"
    elif isinstance(statement, ast.Assign) and len(statement.targets) == 1 and \
            isinstance(statement.targets[0], ast.Name):
        verdict, source = statement.targets[0].id, cell.source.strip()
    else:
        raise ValueError(f"the check cell {cell.get('id')} is not one call of a check (optionally assigned to a "
                         f"name): {cell.source!r}")
    return f"{source}\nassert {verdict}.passed, f\"the check's verdict: {{{verdict}.status}}\""


def nbgrader_metadata(grade_id: str, *, solution: bool, grade: bool) -> dict:
    """nbgrader's cell metadata (schema 3): an autograded answer is solution-only, an autograder test is graded
    and locked."""
    meta = {"grade": grade, "grade_id": grade_id, "locked": not solution, "schema_version": 3,
            "solution": solution, "task": False}
    if grade:
        meta["points"] = POINTS
    return meta


def source_notebook(path: Path):
    """The nbgrader source version of one lesson (see the module's docstring); None for a lesson without exercises."""
    nb = nbformat.read(path, as_version=4)
    cells = nb.cells
    exercises = [i for i, cell in enumerate(cells) if cell.cell_type == "code" and "exercise" in _tags(cell)]
    if not exercises:
        return None
    for i in exercises:
        cell = cells[i]
        name = cell["metadata"]["varlite"]["solution"].split(".")[1]
        check = cells[i + 1] if i + 1 < len(cells) else None
        if check is None or check.cell_type != "code" or "check" not in _tags(check):
            raise ValueError(f"{path.name}: the exercise cell {cell.get('id')} ({name}) is not followed by its check "
                             f"cell (a code cell tagged 'check')")
        cell.source = answer_source(cell)
        cell.metadata["nbgrader"] = nbgrader_metadata(name, solution=True, grade=False)
        check.source = autograder_test_source(check)
        check.metadata["nbgrader"] = nbgrader_metadata(f"check_{name}", solution=False, grade=True)
    nbformat.validate(nb)
    return nb


def data_folders(nb) -> list[Path]:
    """The folders of ``lessons/data`` whose path (``data/<name>``) the notebook's code cells name."""
    code = "\n".join(cell.source for cell in nb.cells if cell.cell_type == "code")
    folders = sorted(p for p in (LESSONS_DIR / "data").iterdir() if p.is_dir()) if (LESSONS_DIR / "data").is_dir() \
        else []
    return [folder for folder in folders if f"data/{folder.name}" in code]


def write_course(course: Path, selected: list[str] | None = None) -> list[Path]:
    """Write the source notebook of every selected lesson that has exercises into ``course/source/<lesson>/``, with
    the data folders it names, and ``course/nbgrader_config.py`` when missing; returns the notebooks written."""
    written = []
    for path in lesson_paths(selected):
        nb = source_notebook(path)
        if nb is None:
            continue
        target = course / "source" / path.stem / path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, target)
        for folder in data_folders(nb):
            shutil.copytree(folder, target.parent / "data" / folder.name, dirs_exist_ok=True)
        written.append(target)
    config = course / "nbgrader_config.py"
    if written and not config.exists():
        config.write_text(CONFIG, encoding="utf-8")
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("course", type=Path, help="the nbgrader course folder (created if missing)")
    parser.add_argument("lessons", nargs="*", help="lesson numbers or names (default: every lesson with exercises)")
    args = parser.parse_args(argv)
    if not lesson_paths(args.lessons):
        print(f"no lesson matches {args.lessons}", file=sys.stderr)
        return 2
    written = write_course(args.course.expanduser(), args.lessons)
    if not written:
        print(f"no coding exercise in {args.lessons}: nothing written", file=sys.stderr)
        return 2
    for target in written:
        print(target)
    print(f"then, in {args.course}: nbgrader generate_assignment {written[0].parent.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
