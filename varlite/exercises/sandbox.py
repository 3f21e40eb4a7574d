"""The grading sandbox: a learner's exercise functions run in a separate, guarded process that receives only their
source and the inputs of each call, and answers with what the function returned.

Two sides, one pipe pair between them (what travels on it, and in which form: ``wire``):

* ``Worker`` (the grading side) forks the worker process before the grader has read anything of the learner's or
  computed any expected answer, so the worker's memory holds imported modules and nothing else. ``load`` sends the
  exercise cells, ``call`` one call of one function; ``SandboxedFunction`` is a learner's function as a check sees it
  (``_check.RemoteFunction``). Answers come back through ``torch.load(weights_only=True)``: tensors, numbers, strings
  and containers only, so nothing a learner returns can run code in the grader.
* ``_serve`` (the worker) keeps, of each cell, only its imports, function definitions (without decorators, with
  constant defaults) and constant assignments (``definitions_only``), executes them in one namespace, and answers
  calls: the function's result or what it raised, never a verdict -- the expected answers stay in the grader.

The worker runs under a guard, an audit hook (PEP 578; ``_install_guard``), that refuses: writing, renaming or
deleting files outside its working folder; reading files outside the Python installation, the varlite package, that
folder and a few system files; signals, new processes, sockets and ctypes; ``gc``'s object lists and tracing;
importing ``lessons``/``solutions``; and, while a learner's function runs, frames (``sys._getframe``, ``tb_frame``,
``gi_frame``). A refused operation raises ``PermissionError`` in the learner's code and is reported as REFUSED even
if the code catches it. While a learner's function runs, varlite's own files cannot be read either (a fresh copy of
a library module would bring back the functions a check disables), without a report: a warning raised in varlite's
code reads its source line that way too. Audit hooks are not a security boundary (CPython's own documentation says so): this
guard stops the shortcuts and accidents the checks know of; a container is the boundary (lessons/TEACHER.md).
"""
from __future__ import annotations

import ast
import linecache
import os
import pickle
import resource
import signal
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from . import _check
from ._check import Forbidden, LearnerRaised, RemoteFunction, ShortcutCalled, _call_learner, _Mismatch
from .guard import changed_since, install_guard, remove_unaudited_signals, snapshot
from .wire import answer_from_bytes, answer_to_bytes, decode_value, encode_value, receive_message, send_message

PRELUDE = "import math\nimport numpy as np\nimport torch\nimport torch.nn.functional as F\n"
OUTPUT_FILE = "output.txt"                   # the worker's stdout and stderr (the learner's prints), in its folder
MAX_FILE_BYTES = 64 * 2 ** 20                # the largest file the worker may write (RLIMIT_FSIZE)


# ---------------------------------------------------------------------------------------------- the cells
def python_only(source: str) -> str:
    """The cell without IPython magics and shell escapes (lines starting with % or !)."""
    return "\n".join(line for line in source.splitlines() if not line.lstrip().startswith(("%", "!")))


def _plain(node: ast.expr) -> bool:
    """A constant, a (dotted) name, or tuples, lists, signs and arithmetic of those: evaluating it calls nothing a
    learner wrote."""
    if isinstance(node, (ast.Constant, ast.Name)):
        return True
    if isinstance(node, ast.Attribute):
        return _plain(node.value)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(_plain(e) for e in node.elts)
    if isinstance(node, ast.UnaryOp):
        return _plain(node.operand)
    if isinstance(node, ast.BinOp):
        return _plain(node.left) and _plain(node.right)
    return False


@dataclass
class Definitions:
    """What grading keeps of a cell: ``module`` (imports, function definitions, constant assignments), the names
    that dropped statements would have assigned (``dropped``), and functions refused with the reason
    (``refused``: a default that is computed when the cell runs)."""
    module: ast.Module
    dropped: set[str]
    refused: dict[str, str]


def definitions_only(source: str) -> Definitions:
    """Keep a cell's imports, function definitions (decorators removed: they run code when the cell runs) and
    assignments of constants to names; drop everything else -- computations, calls, loops, classes -- so nothing of
    the notebook runs but the functions when a check calls them. Raises SyntaxError."""
    tree = ast.parse(python_only(source))
    kept: list[ast.stmt] = []
    dropped: set[str] = set()
    refused: dict[str, str] = {}
    for stmt in tree.body:
        if isinstance(stmt, (ast.Import, ast.ImportFrom)):
            kept.append(stmt)
        elif isinstance(stmt, (ast.FunctionDef, ast.AsyncFunctionDef)):
            defaults = stmt.args.defaults + [d for d in stmt.args.kw_defaults if d is not None]
            computed = next((d for d in defaults if not _plain(d)), None)
            if computed is not None:
                refused[stmt.name] = (f"the function computes a default argument when the cell runs "
                                      f"(`{ast.unparse(computed)}`): grading keeps only constants and names as "
                                      f"defaults")
                continue
            stmt.decorator_list = []
            kept.append(stmt)
        elif isinstance(stmt, (ast.Assign, ast.AnnAssign)) and stmt.value is not None and _plain(stmt.value) and all(
                isinstance(t, ast.Name) for t in (stmt.targets if isinstance(stmt, ast.Assign) else [stmt.target])):
            kept.append(stmt)
        else:
            dropped.update(node.id for node in ast.walk(stmt) if isinstance(node, ast.Name)
                           and isinstance(node.ctx, ast.Store))
            dropped.update(node.name for node in ast.walk(stmt) if isinstance(node, (ast.FunctionDef, ast.ClassDef)))
    return Definitions(ast.Module(body=kept, type_ignores=[]), dropped, refused)


# ---------------------------------------------------------------------------------------------- the grading side
class WorkerGone(Exception):
    """The worker process ended (the learner's code killed it, or it ran out of memory)."""


class Worker:
    """The learner's process, forked from this one. Fork it first, before reading anything of the learner's:
    ``Worker(folder, deny)``; then ``load`` the cells, ``call`` the functions, ``close``."""

    def __init__(self, folder: Path, deny: Sequence[Path] = ()):
        worker_reads, grader_writes = os.pipe()
        grader_reads, worker_writes = os.pipe()
        for stream in (sys.stdout, sys.stderr):
            stream.flush()
        pid = os.fork()
        if pid == 0:                                     # the worker: never returns into the grader's code
            code = 70
            try:
                os.close(grader_writes)
                os.close(grader_reads)
                _become_worker(Path(folder), keep=(worker_reads, worker_writes))
                code = _serve(worker_reads, worker_writes, Path(folder), [Path(p) for p in deny])
            except BaseException:
                traceback.print_exc()                    # into the worker's output file
            finally:
                os._exit(code)
        os.close(worker_reads)
        os.close(worker_writes)
        self.pid, self._to_worker, self._from_worker = pid, grader_writes, grader_reads
        self.exit_status: str | None = None

    def _ask(self, request: tuple):
        if self.exit_status is not None:
            raise WorkerGone(self.exit_status)
        try:
            send_message(self._to_worker, pickle.dumps(request))
            data = receive_message(self._from_worker)
        except OSError:
            data = None
        if data is None:
            _, status = os.waitpid(self.pid, 0)
            self.exit_status = (f"killed by signal {os.WTERMSIG(status)}" if os.WIFSIGNALED(status)
                                else f"exit code {os.WEXITSTATUS(status)}")
            raise WorkerGone(self.exit_status)
        return answer_from_bytes(data)

    def load(self, cells: Sequence[tuple[str, str]], setup: Sequence[str] = ()) -> dict[str, tuple[str, str]]:
        """Execute the exercise cells ``(name, source)`` (in order, one namespace; ``definitions_only``) after the
        imports of the ``setup`` cells; for every name: ("ok", ""), or ("missing" | "error" | "refused", why)."""
        try:
            return {name: (status, why) for name, status, why in self._ask(("load", list(cells), list(setup)))}
        except WorkerGone as gone:
            return {name: ("error", f"the grading process ended while running the cell ({gone})")
                    for name, _ in cells}

    def call(self, name: str, call: Callable | None, args: tuple, kwargs: dict):
        """``call(fn, *args)`` (or ``fn(*args, **kwargs)``) for the learner's function ``name``, computed by the
        worker; raises what it raised there. Dict arguments get the worker's changes (a KV cache)."""
        try:
            answer = self._ask(("call", name, call, args, kwargs))
        except WorkerGone as gone:
            raise type("GradingProcessEnded", (LearnerRaised,), {})(
                f"the process running your function ended ({gone}): did your code exit or kill it?") from None
        for index, value in answer["dicts"]:
            args[index].clear()
            args[index].update(decode_value(value))
        kind = answer["kind"]
        if kind == "value":
            return decode_value(answer["value"])
        if kind == "not attempted":
            raise NotImplementedError
        if kind == "shortcut":
            raise ShortcutCalled(answer["text"])
        if kind == "forbidden":
            raise Forbidden(answer["text"])
        if kind == "mismatch":
            raise _Mismatch(answer["text"])
        name = answer["type"] if answer["type"].isidentifier() else "Exception"
        raise type(name, (LearnerRaised,), {})(answer["text"], answer["line"])   # reads as the learner's type

    def close(self) -> None:
        if self.exit_status is None:
            try:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
            self.exit_status = "closed"
        for fd in (self._to_worker, self._from_worker):
            try:
                os.close(fd)
            except OSError:
                pass


class SandboxedFunction(RemoteFunction):
    """The learner's function ``name`` in the worker, as a check calls it."""

    def __init__(self, worker: Worker, name: str):
        self.worker, self.name = worker, name

    def run(self, call, args, kwargs):
        return self.worker.call(self.name, call, args, kwargs)

    def __repr__(self) -> str:
        return f"<the learner's {self.name} in the grading sandbox>"


# ---------------------------------------------------------------------------------------------- the worker
def _become_worker(folder: Path, keep: Sequence[int]) -> None:
    """Detach from the grader: work in ``folder``, stdin from /dev/null, stdout and stderr to ``folder/output.txt``,
    every other inherited descriptor closed, no core files, files capped at ``MAX_FILE_BYTES``."""
    os.chdir(folder)
    null = os.open(os.devnull, os.O_RDONLY)
    output = os.open(folder / OUTPUT_FILE, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.dup2(null, 0)
    os.dup2(output, 1)
    os.dup2(output, 2)
    keep = sorted(set(keep))
    low = 3
    for fd in keep + [max(keep) + 1]:
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 65536)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_FSIZE, (MAX_FILE_BYTES, MAX_FILE_BYTES))
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False, buffering=1)
    sys.stderr = open(2, "w", closefd=False, buffering=1)


def _warm_up() -> None:
    """Do once, before the guard, what torch does lazily on its first optimizer step: it imports modules (torch's
    compiler stack, sympy) whose top-level code reads frames. Inside an honest ``train_step`` that first use would
    otherwise count as the learner reading the program's frames."""
    w = torch.zeros(1, requires_grad=True)
    optimizer = torch.optim.AdamW([w])
    optimizer.zero_grad()
    (2 * w).sum().backward()
    optimizer.step()


def _serve(requests: int, answers: int, folder: Path, deny: Sequence[Path]) -> int:
    """The worker's loop: a ``load`` request, then ``call`` requests, until the grader is gone."""
    remove_unaudited_signals()
    _warm_up()
    calling, refusals = install_guard(folder, deny)
    namespace: dict[str, Any] = {"__name__": "__learner__"}
    exec(PRELUDE, namespace)
    checker = snapshot()
    dropped: set[str] = set()
    while True:
        data = receive_message(requests)
        if data is None:
            return 0
        request = pickle.loads(data)
        if request[0] == "load":
            answer = _load(namespace, request[1], request[2], dropped, refusals)
        else:
            answer = _answer_call(namespace, dropped, checker, calling, refusals, *request[1:])
        send_message(answers, answer_to_bytes(answer))


def _load(namespace: dict, cells, setup, dropped: set[str], refusals) -> list[list[str]]:
    for source in setup:                                # the setup cells' imports, each on its own
        try:
            tree = ast.parse(python_only(source))
        except SyntaxError:
            continue
        for stmt in tree.body:
            if isinstance(stmt, (ast.Import, ast.ImportFrom)):
                try:
                    exec(compile(ast.Module(body=[stmt], type_ignores=[]), "<setup>", "exec"), namespace)
                except BaseException:       # an import that fails leaves its names undefined
                    pass
    refusals()
    outcome: dict[str, tuple[str, str]] = {}
    for n, (name, source) in enumerate(cells):
        filename = f"<exercise cell {n + 1}: {name}>"
        linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
        try:
            kept = definitions_only(source)
            dropped |= kept.dropped
            code = compile(kept.module, filename, "exec")
        except SyntaxError as err:
            outcome[name] = ("error", f"the cell does not parse: SyntaxError: {err.msg} (line {err.lineno})")
            continue
        try:
            exec(code, namespace)
        except BaseException as err:
            outcome[name] = ("error", f"the cell raised {type(err).__name__}: {err}")
        refused = refusals()
        if refused:
            outcome[name] = ("refused", f"the cell tried to {refused[0]}, which grading refuses")
        elif name in kept.refused:
            outcome[name] = ("refused", kept.refused[name])
        elif name not in outcome:
            outcome[name] = ("ok", "")
    answer = []
    for name, (status, why) in outcome.items():
        if status == "ok" and not callable(namespace.get(name)):
            status = "missing"
            why = f"the notebook defines no function `{name}`"
            if name in dropped:
                why += " (grading keeps only a cell's imports, function definitions and constants)"
        answer.append([name, status, why])
    return answer


def _answer_call(namespace: dict, dropped: set[str], checker, calling, refusals, name: str, call, args: tuple,
                 kwargs: dict) -> dict:
    """Run one call of the learner's function; its answer (``kind``, and ``value`` or ``text``) and the dict
    arguments as the call left them."""
    fn = namespace.get(name)
    dicts = {i: dict(a) for i, a in enumerate(args) if isinstance(a, dict)}
    refusals()
    changed = changed_since(checker)
    calling(True)
    try:
        if changed is not None:
            raise Forbidden(f"changed the checker (`{changed}`)")
        answer = {"kind": "value", "value": encode_value(_call_learner(name, fn, call, args, kwargs))}
    except NotImplementedError:
        answer = {"kind": "not attempted"}
    except Forbidden as forbidden:
        answer = {"kind": "forbidden", "text": forbidden.reason}
    except ShortcutCalled as called:
        answer = {"kind": "shortcut", "text": called.name}
    except _Mismatch as mismatch:
        answer = {"kind": "mismatch", "text": str(mismatch)}
    except BaseException as err:                  # the learner's code failed (or exited): say what and where
        calling(False)
        text = str(err)[:2000]
        if isinstance(err, NameError) and getattr(err, "name", None) in dropped:
            text += (f" (`{err.name}` is computed outside the function, by a statement grading does not run: it "
                     f"keeps only a cell's imports, function definitions and constants)")
        answer = {"kind": "raised", "type": type(err).__name__, "text": text, "line": _check._learner_line(err)}
    finally:
        calling(False)
    refused = refusals()
    changed = changed_since(checker)
    if refused:
        answer = {"kind": "forbidden", "text": f"tried to {refused[0]}, which grading refuses"}
    elif changed is not None:
        answer = {"kind": "forbidden", "text": f"changed the checker (`{changed}`)"}
    answer["dicts"] = [[i, encode_value(args[i])] for i, before in dicts.items()
                       if args[i].keys() != before.keys() or any(args[i][k] is not v for k, v in before.items())]
    return answer
