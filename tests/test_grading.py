"""Grading (varlite.exercises.grade and .sandbox): the shortcut table -- every way of passing a check without writing
the exercise that a review found, refused by the check in the notebook or by grading (or, where the notebook cannot
refuse it, the behaviour lessons/TEACHER.md documents) -- and the attacks by which one learner's notebook could
spoil the grading of the others, each defeated.

Tiny notebooks made here (plus one real lesson as a smoke test); one grading run of six learners is shared by the
tests that read its CSV (``graded``); the supervisor's own defences are tested with a stand-in judge that needs no
torch (``fake_judge``)."""
from __future__ import annotations

import csv
import hashlib
import hmac
import inspect
import json
import sys
import time
from pathlib import Path

import nbformat
import pytest
import torch

from varlite import exercises as ex
from varlite.exercises import grade, sandbox
from varlite.exercises._check import reaches_outside

LESSONS = Path(__file__).resolve().parents[1] / "lessons"
sys.path.insert(0, str(LESSONS))                 # lessons/solutions: the reference answers, written into notebooks
try:
    from solutions import lesson01, lesson06, lesson10
finally:
    sys.path.remove(str(LESSONS))


def source(fn) -> str:
    return inspect.getsource(fn)


def check(name, fn):
    return getattr(ex, f"check_{name}")(fn, verbose=False)


def learner(code: str, **names) -> dict:
    """The namespace of a notebook after running ``code`` (a learner's exercise cell)."""
    namespace = {"__name__": "__main__", "torch": torch, **names}
    exec(code, namespace)
    return namespace


# ------------------------------------------------------------------------------------------ notebooks
def exercise_cell(name: str, code: str, lesson: str = "lesson01", output: str | None = None):
    cell = nbformat.v4.new_code_cell(code)
    cell.metadata.update(tags=["exercise"], varlite={"solution": f"{lesson}.{name}"})
    if output is not None:          # what the check printed when the learner ran the notebook
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=output)]
    return cell


def write_notebook(path: Path, *cells, setup: str = "import torch") -> Path:
    nb = nbformat.v4.new_notebook()
    setup_cell = nbformat.v4.new_code_cell(setup)
    setup_cell.metadata["tags"] = ["setup"]
    nb.cells = [setup_cell, *cells]
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, path)
    return path


def read_csv(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def rows_of(rows: list[dict], student: str) -> dict[str, dict]:
    return {row["name"]: row for row in rows if row["student"] == student}


# ------------------------------------------------------------------------------------------ the shortcut table
# Each shortcut: its exercise, the learner's cell, and what happens in the notebook (the check's own verdict) and in
# grading. "passed" in the notebook column is the documented limit of a check that runs in the learner's own
# process (lessons/TEACHER.md, "What grading protects").
MQ = "from varlite.core.quantizer import MultiScaleQuantizer\n"
SHORTCUT_TABLE = {      # shortcut: (exercise, the learner's cell, verdict in the notebook, verdict in grading)
    "a function captured in a default argument": (
        "nearest_code",
        MQ + "def nearest_code(z, e, _f=MultiScaleQuantizer.nearest_code):\n"
             "    from varlite.core.configs import VQVAEConfig\n"
             "    q = MultiScaleQuantizer(VQVAEConfig(vocab_size=e.shape[0], z_channels=e.shape[1], ch=32))\n"
             "    q.embedding.weight.data.copy_(e)\n"
             "    return _f(q, z)\n",
        "refused", "refused"),
    "the expected value read from the caller's frame (sys._getframe)": (
        "l2_attention_weights",
        "import sys\n"
        "def l2_attention_weights(q, k, scale, bias):\n"
        "    frame = sys._getframe(1)\n"
        "    while frame is not None:\n"
        "        case = frame.f_locals.get('case')\n"
        "        if case is not None and case.expected is not None:\n"
        "            return case.expected\n"
        "        frame = frame.f_back\n",
        "refused", "refused"),
    "the same, every name built at run time": (
        "adaln",
        "import sys\n"
        "def adaln(x, cond, ada_lin):\n"
        "    frame = getattr(sys, ''.join(['_get', 'frame']))(1)\n"
        "    while frame is not None:\n"
        "        case = getattr(frame, ''.join(['f_', 'locals'])).get('case')\n"
        "        if case is not None and case.expected is not None:\n"
        "            return case.expected\n"
        "        frame = getattr(frame, ''.join(['f_', 'back']))\n",
        "passed", "refused"),
    "the reference solution imported in the function": (
        "block_causal_mask",
        "def block_causal_mask(patch_nums):\n"
        "    from solutions.lesson03 import block_causal_mask as solved\n"
        "    return solved(patch_nums)\n",
        "refused", "refused"),
    "the reference solution imported by the cell (how render.py fills solution notebooks)": (
        "top_k_top_p",
        "from solutions.lesson05 import top_k_top_p\n",
        "passed", "refused"),
    "the library function prepared outside the checked function": (
        "scale_keep_masks",
        "import functools\nfrom varlite import editing\n"
        "_masks = functools.partial(editing.scale_keep_masks)\n"
        "def scale_keep_masks(keep_HW, patch_nums):\n"
        "    return [m[0] for m in _masks(keep_HW, patch_nums)]\n",
        "passed", "error"),
    "the checker monkeypatched by the function": (
        "attention_pairs",
        "def attention_pairs(patch_nums, kv_cache):\n"
        "    import varlite.exercises.lesson08 as checker\n"
        "    checker._compare_int = lambda *args, **kwargs: None\n"
        "    return 0\n",
        "refused", "refused"),
    "the checker monkeypatched, its name built at run time": (
        "var_param_count",
        "import importlib\n"
        "def var_param_count(depth):\n"
        "    checker = importlib.import_module(''.join(['varlite.exer', 'cises.lesson09']))\n"
        "    setattr(checker, '_compare' + '_int', lambda *args, **kwargs: None)\n"
        "    return 0\n",
        "passed", "refused"),
    "the checker monkeypatched by the cell": (
        "kv_cache_bytes",
        "import varlite.exercises.lesson09 as checker\n"
        "checker._compare_int = lambda *args, **kwargs: None\n"
        "def kv_cache_bytes(patch_nums, depth, embed_dim, batch, bytes_per_value=4):\n"
        "    return 0\n",
        "passed", "wrong"),
}


def _notebook_verdict(name: str, code: str) -> str:
    checker = {module: dict(vars(module)) for key, module in sys.modules.items() if key.startswith("varlite.exercises")}
    sys.path.insert(0, str(LESSONS))
    try:
        return check(name, learner(code)[name]).status
    finally:
        sys.path.remove(str(LESSONS))
        for module, saved in checker.items():     # undo a cell that monkeypatched the checker in this process
            vars(module).update(saved)


@pytest.mark.parametrize("shortcut", sorted(SHORTCUT_TABLE))
def test_shortcut_in_the_notebook(shortcut):
    """What the check in the learner's notebook says: refused, or -- the documented limit -- passed (or wrong)."""
    name, code, in_notebook, _ = SHORTCUT_TABLE[shortcut]
    assert _notebook_verdict(name, code) == in_notebook


def test_the_shortcut_table_is_in_teacher_md():
    teacher = (LESSONS / "TEACHER.md").read_text()
    for shortcut, (_, _, in_notebook, in_grading) in SHORTCUT_TABLE.items():
        assert f"| {shortcut} | {in_notebook} | {in_grading} |" in teacher, shortcut


def test_reaches_outside_names_what_it_found():
    assert "default argument" in reaches_outside(learner("import math\ndef f(x, g=math.sqrt):\n    return g(x)\n")["f"])
    assert "running program" in reaches_outside(learner("import inspect\ndef f():\n    return inspect.stack()\n")["f"])
    helper = learner("import sys\ndef _helper():\n    return sys._getframe(2)\ndef f():\n    return _helper()\n")
    assert "_getframe" in reaches_outside(helper["f"])                 # a helper of the same notebook is read too
    assert "checker" in reaches_outside(learner("def f():\n    return ex.rel_error(1, 2)\n", ex=ex)["f"])
    assert "varlite's own" in reaches_outside(ex.rel_error)
    assert reaches_outside(lesson01.nearest_code) is None and reaches_outside(lesson10.generate) is None


def test_a_shortcut_under_another_module_path_is_refused():
    """np.polyfit is also numpy.lib._polynomial_impl.polyfit: both names are disabled."""
    code = ("import numpy as np\nimport numpy.lib._polynomial_impl as impl\n"
            "def fit_power_law(x, y):\n"
            "    a, b = impl.polyfit(np.log(x), np.log(y), 1)\n"
            "    return a, float(np.exp(b)), float(np.corrcoef(np.log(x), np.log(y))[0, 1])\n")
    result = check("fit_power_law", learner(code)["fit_power_law"])
    assert result.status == "refused" and "numpy.polyfit" in result.message
    import numpy as np
    assert np.polyfit.__name__ == "polyfit" and np.lib._polynomial_impl.polyfit is np.polyfit   # restored


# ------------------------------------------------------------------------------------------ what grading keeps
def test_definitions_only_keeps_imports_definitions_and_constants():
    kept = sandbox.definitions_only(
        "%matplotlib inline\nimport torch\nEPS = 1e-6\nSHAPE = (2, -3)\nprint('hello')\nmodel = torch.nn.Linear(2, 2)\n"
        "for i in range(3):\n    pass\n@torch.no_grad()\ndef f(x, eps=EPS, dim=-1):\n    return x\n"
        "def g(x, table=make_table()):\n    return table[x]\nclass Helper:\n    pass\n")
    assert [type(s).__name__ for s in kept.module.body] == ["Import", "Assign", "Assign", "FunctionDef"]
    assert kept.module.body[-1].decorator_list == []
    assert kept.dropped == {"model", "i", "Helper"} and "make_table()" in kept.refused["g"]


def test_spreadsheet_safe_quotes_every_formula_prefix():
    for text in ("=SUM(1+1)", "+1", "-1", "@A1", "\tx", "\rx"):
        assert grade.spreadsheet_safe(text) == "'" + text
    assert grade.spreadsheet_safe("alice") == "alice" and grade.spreadsheet_safe("") == ""


def test_notebook_verdicts_are_the_last_check_output():
    nb = {"cells": [{"cell_type": "code", "outputs": [
        {"output_type": "stream", "text": "[lookup] WRONG in case 1 of 4: ...\n"},
        {"output_type": "stream", "text": ["[lookup] PASSED: all 4 cases\n", "[nearest_code] ERROR in case 2\n"]}]}]}
    assert grade.notebook_verdicts(nb) == {"lookup": "passed", "nearest_code": "error"}


def test_rows_need_the_runs_secret_this_job_and_a_known_exercise():
    secret, job = b"s" * 32, "job1"

    def line(row, key=secret):
        payload = json.dumps({"job": job, "diagnosis": "", "message": "m", **row})
        return f"{grade.MARK}{hmac.new(key, payload.encode(), hashlib.sha256).hexdigest()} {payload}"
    good = {"exercise": "1.1", "name": "nearest_code", "status": "passed"}
    out = "\n".join([line(good), line(good),                                       # the second: repeated
                     line({**good, "name": "lookup"}, key=b"forged" * 6),           # not signed with the secret
                     line({"exercise": "9.9", "name": "bogus", "status": "passed"}),     # no such exercise
                     line({**good, "name": "lookup", "exercise": "9.9"}),           # the wrong number
                     line({**good, "name": "lookup", "job": "another notebook's"}),
                     f"{grade.MARK}deadbeef {json.dumps(good)}"])
    rows, refused = grade._accepted_rows(out.encode(), secret, job, ["nearest_code", "lookup"])
    assert list(rows) == ["nearest_code"] and refused == 6


# ------------------------------------------------------------------------------------------ one grading run
FORGED_LINE = grade.MARK + "f00d " + json.dumps({"exercise": "9.9", "name": "bogus", "status": "passed"})


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """Six learners graded once by the real grader: the real lesson 1 (alice), honest mistakes (bob), shortcuts
    (cheater), attacks on the others (adam, graded first), a '=SUM(1+1)' folder, and a notebook without exercises."""
    root = tmp_path_factory.mktemp("grading")
    subs = root / "submissions"
    lesson = nbformat.read(LESSONS / "01_images_as_tokens.ipynb", as_version=4)
    for cell in lesson.cells:
        if "exercise" in cell.metadata.get("tags", []):
            cell.source = source(getattr(lesson01, cell.metadata["varlite"]["solution"].rsplit(".", 1)[1]))
        if "check" in cell.metadata.get("tags", []) and "nearest_code" in cell.source:
            cell.outputs = [nbformat.v4.new_output("stream", name="stdout",
                                                   text="[nearest_code] WRONG in case 2 of 5: ...\n")]
    alice = subs / "alice" / "01_images_as_tokens.ipynb"
    alice.parent.mkdir(parents=True)
    nbformat.write(lesson, alice)
    wrong_lookup = "def lookup(idx, e, side):\n    return e[idx].reshape(idx.shape[0], e.shape[1], side, side)\n"
    bob = write_notebook(
        subs / "bob" / "mine.ipynb",
        exercise_cell("nearest_code", "import torch\ndef nearest_code(z, e):\n    return torch.cdist(z, e).argmax(1)\n",
                      output="[nearest_code] PASSED: all 5 cases\n"),
        exercise_cell("lookup", wrong_lookup),
        exercise_cell("phi_of_scale", "import numpy as np\nimport torch.nn.functional as F\n"
                      + source(lesson10.phi_of_scale), lesson="lesson10"),
        exercise_cell("encode_tokens", "import torch.nn.functional as F\n" + source(lesson10._contribution)
                      + source(lesson10.encode_tokens), lesson="lesson10"),
        exercise_cell("train_step", "import torch\nimport torch.nn.functional as F\n" + source(lesson06.train_step),
                      lesson="lesson06"))      # a whole training step (seeding, optimizer) inside the guarded call
    write_notebook(subs / "bob" / "11_no_exercises.ipynb", setup="import torch\nprint('reading only')")
    bob_before = bob.read_bytes()
    outside = root / "outside.txt"
    write_notebook(
        subs / "adam" / "attacks.ipynb",
        exercise_cell("nearest_code",                       # copy another learner's answer at grading time
                      "import json\ndef nearest_code(z, e):\n"
                      f"    nb = json.load(open({str(alice)!r}))\n"
                      "    cell = [c for c in nb['cells'] if 'exercise' in c['metadata'].get('tags', [])][0]\n"
                      "    space = {}\n    exec(''.join(cell['source']), space)\n"
                      "    return space['nearest_code'](z, e)\n"),
        exercise_cell("lookup", "def lookup(idx, e, side):\n"   # write outside its folder
                                f"    open({str(outside)!r}, 'w').write('x')\n"
                                "    return e[idx].transpose(1, 2).reshape(idx.shape[0], e.shape[1], side, side)\n"),
        exercise_cell("block_causal_mask", "def block_causal_mask(patch_nums):\n"    # overwrite bob's notebook
                                           f"    open({str(bob)!r}, 'w').write('{{}}')\n"
                                           "    lvl = torch.cat([torch.full((p * p,), k) for k, p in "
                                           "enumerate(patch_nums)])\n"
                                           "    return lvl.view(-1, 1) >= lvl.view(1, -1)\n"),
        exercise_cell("top_k_top_p", "def top_k_top_p(logits, top_k, top_p):\n"       # kill the grader
                                     "    os.kill(os.getppid(), 9)\n"),
        exercise_cell("attention_pairs", "import subprocess\n"                          # leave a process running
                                         "def attention_pairs(patch_nums, kv_cache):\n"
                                         "    subprocess.Popen(['sleep', '600'])\n"),
        exercise_cell("kv_cache_bytes",                     # a right answer that prints forged result lines
                      f"print({FORGED_LINE!r})\n"
                      "def kv_cache_bytes(patch_nums, depth, embed_dim, batch, bytes_per_value=4):\n"
                      f"    print({FORGED_LINE!r})\n"
                      f"    os.write(1, ({FORGED_LINE!r} + '\\n').encode())\n"
                      "    L = sum(p * p for p in patch_nums)\n"
                      "    return 2 * depth * 2 * batch * L * embed_dim * bytes_per_value\n"),
        setup="import os\nimport torch")
    write_notebook(
        subs / "cheater" / "shortcuts.ipynb",
        *[exercise_cell(name, code) for name, code, _, _ in SHORTCUT_TABLE.values()],
        exercise_cell("bogus", "def bogus():\n    return 1\n", lesson="lesson09"))
    write_notebook(subs / "=SUM(1+1)" / "01.ipynb", exercise_cell("nearest_code", source(lesson01.nearest_code)))
    out = root / "grades.csv"
    report = grade.grade_folder(subs, out, timeout_s=240)
    return {"rows": read_csv(out), "report": report, "outside": outside,
            "bob": bob, "bob_before": bob_before, "out": out}


def test_the_real_lesson_is_graded_and_both_verdicts_are_reported(graded):
    alice = rows_of(graded["rows"], "alice")
    assert {name: row["status"] for name, row in alice.items()} == {"nearest_code": "passed", "lookup": "passed"}
    assert alice["nearest_code"]["exercise"] == "1.1" and "PASSED: all 5 cases" in alice["nearest_code"]["message"]
    assert alice["nearest_code"]["notebook_status"] == "wrong"     # what the saved notebook showed
    assert alice["lookup"]["notebook_status"] == "not run"


def test_the_diagnosis_is_kept(graded):
    bob = rows_of(graded["rows"], "bob")
    assert bob["nearest_code"]["status"] == "wrong" and "argmax instead of argmin" in bob["nearest_code"]["diagnosis"]
    assert bob["nearest_code"]["notebook_status"] == "passed"
    assert "without moving the channel axis" in bob["lookup"]["diagnosis"]
    assert bob["phi_of_scale"]["status"] == "passed"
    assert bob["train_step"]["status"] == "passed", bob["train_step"]["message"]
    assert bob["encode_tokens"]["status"] == "wrong"
    assert bob["encode_tokens"]["diagnosis"] == "calls nearest_code, which does not pass"


def test_a_notebook_without_exercises_gives_no_row(graded):
    assert not [row for row in graded["rows"] if row["notebook"] == "11_no_exercises.ipynb"]
    assert graded["report"].skipped == 1


def test_every_shortcut_has_its_own_exercise():
    assert len({name for name, _, _, _ in SHORTCUT_TABLE.values()}) == len(SHORTCUT_TABLE)


@pytest.mark.parametrize("shortcut", sorted(SHORTCUT_TABLE))
def test_shortcut_in_grading(graded, shortcut):
    name, _, _, in_grading = SHORTCUT_TABLE[shortcut]
    assert rows_of(graded["rows"], "cheater")[name]["status"] == in_grading


def test_grading_says_why_a_shortcut_is_refused(graded):
    cheater = {name: row["message"] for name, row in rows_of(graded["rows"], "cheater").items()}
    assert "default argument" in cheater["nearest_code"]
    assert "_getframe" in cheater["l2_attention_weights"] and "frames (sys._getframe)" in cheater["adaln"]
    assert "import solutions.lesson05" in cheater["top_k_top_p"]
    assert "`_masks` is computed outside the function" in cheater["scale_keep_masks"]
    assert "changed the checker (`varlite.exercises.lesson09._compare_int`)" in cheater["var_param_count"]


def test_unknown_exercises_and_forged_rows_are_refused(graded):
    rows = graded["rows"]
    assert not [row for row in rows if row["exercise"] == "9.9" or row["name"] == "bogus"]
    assert graded["report"].unknown == 1
    adam = rows_of(rows, "adam")
    assert adam["kv_cache_bytes"]["status"] == "passed"        # its own answer is right; its prints are ignored
    assert len(rows) == len({(r["student"], r["notebook"], r["name"]) for r in rows})


def test_a_learner_cannot_copy_write_outside_or_overwrite_anothers_notebook(graded):
    adam = rows_of(graded["rows"], "adam")
    assert adam["nearest_code"]["status"] == "refused" and "alice" in adam["nearest_code"]["message"]
    assert adam["lookup"]["status"] == "refused" and not graded["outside"].exists()
    assert adam["block_causal_mask"]["status"] == "refused"
    assert graded["bob"].read_bytes() == graded["bob_before"]
    assert rows_of(graded["rows"], "bob")["lookup"]["status"] == "wrong"       # bob's rows are bob's


def test_a_learner_cannot_kill_the_grader_or_leave_a_process(graded):
    adam = rows_of(graded["rows"], "adam")
    assert adam["top_k_top_p"]["status"] == "refused" and "signal" in adam["top_k_top_p"]["message"]
    assert adam["attention_pairs"]["status"] == "refused" and "start a program" in adam["attention_pairs"]["message"]
    assert set(rows_of(graded["rows"], "cheater")) and set(rows_of(graded["rows"], "bob"))    # graded after adam
    assert "sleep 600" not in _processes()


def test_a_formula_folder_name_is_quoted(graded):
    assert rows_of(graded["rows"], "'=SUM(1+1)")["nearest_code"]["status"] == "passed"
    assert not rows_of(graded["rows"], "=SUM(1+1)")
    assert "'=SUM(1+1)" in graded["out"].read_text()


def _processes() -> str:
    lines = []
    for proc in Path("/proc").iterdir():
        try:
            lines.append((proc / "cmdline").read_bytes().replace(b"\0", b" ").decode())
        except OSError:
            continue
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ the supervisor
FAKE_JUDGE = '''
import hashlib, hmac, json, os, signal, subprocess, sys, time
job = json.loads(sys.stdin.read())
secret = bytes.fromhex(job["secret"])
numbers = {"nearest_code": "1.1", "lookup": "1.2"}
mode = next(p for p in os.listdir(".") if p.endswith(".ipynb"))[:-len(".ipynb")]

def emit(name, status="passed", key=secret):
    payload = json.dumps({"job": job["job"], "exercise": numbers[name], "name": name, "status": status,
                          "message": f"[{name}] PASSED", "diagnosis": ""})
    print("varlite-grade-row " + hmac.new(key, payload.encode(), hashlib.sha256).hexdigest() + " " + payload,
          flush=True)

if mode == "dies":                  # one row, then the judge is killed (as by a learner killing its parent)
    emit("nearest_code")
    os.kill(os.getpid(), signal.SIGKILL)
if mode == "background":            # a process left running that holds the judge's output open
    child = subprocess.Popen(["sleep", "300"])
    open(os.environ["FAKE_JUDGE_PID_FILE"], "w").write(str(child.pid))
if mode == "forger":                # rows signed with another key, for an unknown exercise
    emit("nearest_code", key=b"guess")
    numbers["bogus"] = "9.9"
    emit("bogus")
if mode == "kill_supervisor":
    os.kill(os.getppid(), signal.SIGKILL)
    time.sleep(5)
if mode == "hangs":
    emit("nearest_code")
    time.sleep(300)
emit("nearest_code")
emit("lookup")
'''


@pytest.fixture
def fake_judge(tmp_path, monkeypatch):
    """Judges replaced by FAKE_JUDGE (behaving as the notebook's file name says); the folder of notebooks."""
    script = tmp_path / "fake_judge.py"
    script.write_text(FAKE_JUDGE)
    monkeypatch.setattr(grade, "_judge_command", lambda folder, deny: [sys.executable, str(script)])
    monkeypatch.setenv("FAKE_JUDGE_PID_FILE", str(tmp_path / "background.pid"))
    subs = tmp_path / "subs"

    def notebook(student: str, mode: str) -> None:
        write_notebook(subs / student / f"{mode}.ipynb", exercise_cell("nearest_code", "def nearest_code(z, e): pass"),
                       exercise_cell("lookup", "def lookup(i, e, s): pass"))
    return subs, notebook


def test_a_killed_judge_does_not_stop_the_others(fake_judge, tmp_path):
    subs, notebook = fake_judge
    notebook("a", "dies")
    notebook("b", "fine")
    report = grade.grade_folder(subs, tmp_path / "g.csv", timeout_s=60)
    statuses = {(r["student"], r["name"]): r["status"] for r in report.rows}
    assert statuses == {("a", "nearest_code"): "passed", ("a", "lookup"): "error",
                        ("b", "nearest_code"): "passed", ("b", "lookup"): "passed"}
    assert "killed by signal 9" in rows_of(report.rows, "a")["lookup"]["message"]


def test_a_process_left_running_is_killed_and_does_not_turn_the_notebook_into_a_timeout(fake_judge, tmp_path):
    subs, notebook = fake_judge
    notebook("a", "background")
    started = time.monotonic()
    report = grade.grade_folder(subs, tmp_path / "g.csv", timeout_s=60)
    assert time.monotonic() - started < 30
    assert [r["status"] for r in report.rows] == ["passed", "passed"]
    pid = int((tmp_path / "background.pid").read_text())
    time.sleep(0.5)
    state = Path(f"/proc/{pid}/stat")
    assert not state.exists() or state.read_text().split(") ")[1][0] == "Z"       # gone (or a zombie)


def test_a_judge_out_of_time_keeps_its_rows_and_the_rest_are_timeouts(fake_judge, tmp_path):
    subs, notebook = fake_judge
    notebook("a", "hangs")
    report = grade.grade_folder(subs, tmp_path / "g.csv", timeout_s=3)
    assert [(r["name"], r["status"]) for r in report.rows] == [("nearest_code", "passed"), ("lookup", "timeout")]


def test_forged_rows_from_a_judge_are_refused(fake_judge, tmp_path):
    subs, notebook = fake_judge
    notebook("a", "forger")
    report = grade.grade_folder(subs, tmp_path / "g.csv", timeout_s=60)
    assert [(r["name"], r["status"]) for r in report.rows] == [("nearest_code", "passed"), ("lookup", "passed")]
    assert report.refused == 2


def test_a_killed_grader_leaves_the_rows_so_far(fake_judge, tmp_path):
    """The CSV is written notebook by notebook: the supervisor killed during the second one leaves the first's."""
    subs, notebook = fake_judge
    notebook("a", "fine")
    notebook("b", "kill_supervisor")
    out = tmp_path / "g.csv"
    script = tmp_path / "fake_judge.py"
    code = ("import sys\nfrom varlite.exercises import grade\n"
            f"grade._judge_command = lambda folder, deny: [sys.executable, {str(script)!r}]\n"
            f"grade.main([{str(subs)!r}, '--out', {str(out)!r}, '--timeout', '60'])\n")
    import subprocess
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=300)
    assert done.returncode == -9
    assert [(r["student"], r["name"], r["status"]) for r in read_csv(out)] == [
        ("a", "nearest_code", "passed"), ("a", "lookup", "passed")]
