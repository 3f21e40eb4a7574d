"""nbgrader source notebooks generated from the lessons (lessons/make_nbgrader.py).

Without a kernel: every lesson with exercises gets a source notebook whose answer cells hold the reference solution
between nbgrader's markers and whose test cells assert the lesson's check; the generated answers pass those checks.
With nbgrader's own commands (one lesson, the lightest): ``generate_assignment`` makes the students' version, and
``autograde`` gives a submission with the solutions full marks and one with a wrong and an untouched answer zero for
both exercises."""
from __future__ import annotations

import ast
import contextlib
import importlib.util
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("lessons_make_nbgrader", ROOT / "lessons" / "make_nbgrader.py")
make_nbgrader = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_nbgrader)

LESSONS = make_nbgrader.lesson_paths()
WITH_EXERCISES = [p for p in LESSONS if make_nbgrader.source_notebook(p) is not None]
LESSON = "01_images_as_tokens"      # the lightest lesson with exercises: autograde runs it once per submission
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"


def graded_cells(nb) -> list:
    return [c for c in nb.cells if "nbgrader" in c.metadata]


def test_every_lesson_with_exercise_cells_has_a_source():
    with_cells = [p for p in LESSONS if any("exercise" in c.metadata.get("tags", [])
                                            for c in nbformat.read(p, as_version=4).cells)]
    assert WITH_EXERCISES == with_cells and [p.name[:2] for p in with_cells][:10] == [f"{n:02d}" for n in range(1, 11)]


@pytest.mark.parametrize("path", WITH_EXERCISES, ids=lambda p: p.stem)
def test_source_cells_carry_nbgrader_metadata_and_stable_ids(path):
    """Each exercise: an autograded answer cell (grade id = the function's name) with one solution region, then a
    locked 1-point test cell (``check_<name>``) that asserts the check's verdict; ids, tags and the lesson's other
    cells unchanged."""
    lesson, source = nbformat.read(path, as_version=4), make_nbgrader.source_notebook(path)
    assert [c.id for c in source.cells] == [c.id for c in lesson.cells]
    cells = graded_cells(source)
    names = [c.metadata["varlite"]["solution"].split(".")[1] for c in cells if "exercise" in c.metadata["tags"]]
    assert [c.metadata["nbgrader"]["grade_id"] for c in cells] == [g for n in names for g in (n, f"check_{n}")]
    for answer, test in zip(cells[::2], cells[1::2]):
        assert answer.metadata["nbgrader"] == {"grade": False, "grade_id": answer.metadata["nbgrader"]["grade_id"],
                                               "locked": False, "schema_version": 3, "solution": True, "task": False}
        assert answer.source.count(BEGIN) == answer.source.count(END) == 1
        assert "NotImplementedError" not in answer.source
        assert test.metadata["nbgrader"]["points"] == 1 and test.metadata["nbgrader"]["locked"]
        assert test.source.splitlines()[-1].startswith("assert ") and ".passed" in test.source
    for old, new in zip(lesson.cells, source.cells):
        if "nbgrader" not in new.metadata:
            assert new == old


def _check_generated_answers(path):
    """Run the source notebook's answer and test cells after the setup cell's imports (no other cell), in this
    process: every test cell's assert holds."""
    namespace: dict = {}
    for cell in make_nbgrader.source_notebook(path).cells:
        if "setup" in cell.metadata.get("tags", []):
            tree = ast.parse("\n".join(line for line in cell.source.splitlines() if not line.startswith("%")))
            imports = [s for s in tree.body if isinstance(s, (ast.Import, ast.ImportFrom))]
            exec(compile(ast.Module(imports, type_ignores=[]), "setup", "exec"), namespace)
        elif "nbgrader" in cell.metadata:
            with contextlib.redirect_stdout(io.StringIO()):
                exec(compile(cell.source, f"{path.stem}:{cell.id}", "exec"), namespace)


# Lesson 6's checks train small models (about 10 s); its answer cells move nothing (the test below), so the solutions'
# own test (tests/test_exercises.py) covers what they run.
@pytest.mark.parametrize("path", [p for p in WITH_EXERCISES if not p.name.startswith("06")], ids=lambda p: p.stem)
def test_generated_answers_pass_their_checks(path):
    """The answers as generated (the lesson's signature, the solution's body, the imports and private helpers moved
    inside it: lesson 9's configs import, the capstone's _contribution and _level_position) pass the lesson's checks."""
    _check_generated_answers(path)


def test_lesson_6_answers_are_the_solution_bodies_alone():
    path = next(p for p in WITH_EXERCISES if p.name.startswith("06"))
    for cell in graded_cells(make_nbgrader.source_notebook(path))[::2]:
        region = cell.source.split(BEGIN)[1].split(END)[0]
        assert "import " not in region and "    def " not in region, cell.metadata["nbgrader"]["grade_id"]


def test_the_data_a_lesson_names_goes_beside_its_source(tmp_path):
    """Lesson 12 reads data/reproduce next to its notebook: its assignment folder holds a copy (when it has
    exercises); a lesson that names no data folder gets none."""
    written = make_nbgrader.write_course(tmp_path)
    named = {target.parent.name: make_nbgrader.data_folders(nbformat.read(target, as_version=4)) for target in written}
    assert named["01_images_as_tokens"] == [] and not (tmp_path / "source" / "01_images_as_tokens" / "data").exists()
    for lesson, folders in named.items():
        for folder in folders:
            copied = tmp_path / "source" / lesson / "data" / folder.name
            assert sorted(p.relative_to(copied) for p in copied.rglob("*")) == \
                sorted(p.relative_to(folder) for p in folder.rglob("*"))
    reproduce = make_nbgrader.LESSONS_DIR / "data" / "reproduce"
    assert "12_reproducing_the_paper" not in named or named["12_reproducing_the_paper"] == [reproduce]


def test_a_lesson_without_exercises_gives_no_source(tmp_path):
    assert LESSONS[10].name.startswith("11") and LESSONS[10] not in WITH_EXERCISES     # reading and discussion
    assert make_nbgrader.main([str(tmp_path), "11"]) == 2
    assert not (tmp_path / "source").exists()


# ------------------------------------------------------------------------------------------ nbgrader's own commands
def _nbgrader(course: Path, *args: str, env: dict) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "nbgrader", *args], cwd=course, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"nbgrader {' '.join(args)} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
    return result


def _submit(course: Path, student: str, answers: dict[str, str]) -> None:
    """The released notebook with the exercise cells named in ``answers`` replaced, as a student hands it in."""
    nb = json.loads((course / "release" / LESSON / f"{LESSON}.ipynb").read_text())
    for cell in nb["cells"]:
        grade_id = cell["metadata"].get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell["source"] = answers[grade_id]
    folder = course / "submitted" / student / LESSON
    folder.mkdir(parents=True)
    (folder / f"{LESSON}.ipynb").write_text(json.dumps(nb))


def test_nbgrader_generate_assignment_and_autograde(tmp_path):
    course = tmp_path / "course"
    assert make_nbgrader.main([str(course), LESSON]) == 0
    home, tmp = tmp_path / "varlite_home", tmp_path / "tmp"
    home.mkdir()
    tmp.mkdir()
    # nbgrader starts `alembic` (its database migrations) from PATH: the environment's scripts folder comes first.
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
           "OMP_NUM_THREADS": "1", "MPLBACKEND": "agg", "VARLITE_HOME": str(home), "TMPDIR": str(tmp)}
    _nbgrader(course, "generate_assignment", LESSON, env=env)

    released = nbformat.read(course / "release" / LESSON / f"{LESSON}.ipynb", as_version=4)
    for cell in graded_cells(released)[::2]:
        assert BEGIN not in cell.source and "raise NotImplementedError()" in cell.source
        assert "d_NV" not in cell.source and "vectors_BlCv" not in cell.source       # no line of the solutions

    source = make_nbgrader.source_notebook(make_nbgrader.LESSONS_DIR / f"{LESSON}.ipynb")
    solved = {c.metadata["nbgrader"]["grade_id"]: "\n".join(line for line in c.source.splitlines()
                                                            if line.strip() not in (BEGIN, END))
              for c in graded_cells(source)[::2]}
    _submit(course, "alice", solved)
    wrong = solved["nearest_code"].replace("argmin", "argmax")      # the classic mistake of exercise 1.1
    assert wrong != solved["nearest_code"]
    _submit(course, "bob", {"nearest_code": wrong})                   # lookup left as released
    _nbgrader(course, "autograde", LESSON, env=env)

    from nbgrader.api import Gradebook
    with Gradebook(f"sqlite:///{course / 'gradebook.db'}") as gradebook:
        def scores(student: str) -> list[float]:
            return [gradebook.find_grade(c, LESSON, LESSON, student).score for c in ("check_nearest_code", "check_lookup")]
        assert scores("alice") == [1, 1], _errors(course, "alice")
        assert scores("bob") == [0, 0], _errors(course, "bob")
        assert gradebook.find_submission(LESSON, "alice").score == 2


def _errors(course: Path, student: str) -> str:
    """The errors in a student's autograded notebook (cell id, exception, message): what a failed score came from."""
    nb = json.loads((course / "autograded" / student / LESSON / f"{LESSON}.ipynb").read_text())
    return "; ".join(f"{cell['id']}: {out['ename']}: {out['evalue']}" for cell in nb["cells"]
                     for out in cell.get("outputs", []) if out.get("output_type") == "error") or "no error"
