"""Shared checking machinery of the lesson exercises: the verdict (``CheckResult``), the comparison helpers that
describe the first difference, and ``_run``, which runs a learner's function on every case, names known mistakes and
never raises.

A learner's function is run with the library functions its exercise asks for disabled (``shortcuts_disabled``), and
not at all when it reaches past its arguments (``reaches_outside``): into the checker, the reference solutions, the
running program's frames, or a function kept in a default argument. In grading the function runs in another process
(``RemoteFunction``, implemented by ``sandbox.SandboxedFunction``) and only its answer comes back."""
from __future__ import annotations

import abc
import contextlib
import math
import re
import sys
import traceback
import types
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import torch

from ..core.configs import VQVAEConfig
from ..core.quantizer import MultiScaleQuantizer
# the comparisons live in compare.py; the lesson modules take them from here, with the rest of the machinery
from .compare import (_Mismatch, _clone, _compare_float, _compare_int, _compare_list, _compare_tensor,  # noqa: F401
                      rel_error)


@dataclass
class CheckResult:
    """The verdict of one check. ``status``: "passed", "not attempted", "wrong", "error" or "refused" (the function
    called the library function it was meant to write); truthy iff passed."""
    exercise: str
    status: str
    message: str

    @property
    def passed(self) -> bool:
        return self.status == "passed"

    def __bool__(self) -> bool:
        return self.passed

    def _ipython_display_(self) -> None:
        """The message was printed when the check ran; show nothing more as the cell's value."""

    def __str__(self) -> str:
        return self.message


@dataclass
class _Case:
    label: str               # what this case is, for the message ("N=50 vectors, Cv=8, V=64")
    args: tuple
    kwargs: dict | None = None
    expected: Any = None     # the reference answer, when computed beforehand (else ``reference(*args)``)
    hidden: bool = False     # a hidden case: its inputs are never described in a message


@dataclass
class _Mistake:
    name: str                # short name, quoted in the message ("argmax instead of argmin")
    fn: Callable             # same signature as the learner's function: what that mistake returns
    advice: str              # how to fix it


def _learner_line(err: BaseException) -> str:
    """The last traceback line that is not inside varlite/torch/numpy: usually the learner's own code."""
    if isinstance(err, LearnerRaised):
        return err.line
    frames = traceback.extract_tb(err.__traceback__)[1:]     # skip the frame of the check itself
    mine = [f for f in frames if not any(p in f.filename for p in ("/varlite/", "/torch/", "/numpy/"))]
    frame = (mine or frames or [None])[-1]
    if frame is None or not frame.line:
        return ""
    return f"\n  at: {frame.line.strip()}"


# ---------------------------------------------------------------------------------------------- the exercises
@dataclass(frozen=True)
class Shortcut:
    """A library function an exercise asks the learner to write: ``getattr(owner, attr)`` (a module function or a
    method), disabled while the learner's function runs."""
    owner: Any
    attr: str

    @property
    def name(self) -> str:
        owner = getattr(self.owner, "__name__", type(self.owner).__name__)
        return f"{owner}.{self.attr}"


@dataclass(frozen=True)
class Exercise:
    """One coding exercise: its number in the lessons ("2.1"), three hints from the idea to the code, and the library
    functions that would answer it without writing it (refused by the check)."""
    name: str
    number: str
    concept: str
    approach: str
    code: str
    shortcuts: tuple[Shortcut, ...] = ()

    def hint(self, level: int) -> str:
        if level not in (1, 2, 3):
            raise ValueError(f"hint level must be 1 (the idea), 2 (the approach) or 3 (the code), got {level!r}")
        title = {1: "the idea", 2: "the approach", 3: "the code"}[level]
        text = {1: self.concept, 2: self.approach, 3: self.code}[level]
        return f"[{self.name}] Hint {level} of 3 ({title}, exercise {self.number}): {text}"


EXERCISES: dict[str, Exercise] = {}
_last_unsolved: list[str] = []          # the exercise whose check last said WRONG / ERROR / REFUSED (for hint())


def exercise(name: str, number: str, *, concept: str, approach: str, code: str,
             shortcuts: Sequence[Shortcut] = ()) -> Exercise:
    """Register an exercise (at import of its lesson module) and return it."""
    EXERCISES[name] = Exercise(name, number, concept, approach, code, tuple(shortcuts))
    return EXERCISES[name]


def hint(level: int = 2, exercise: str | None = None) -> str:
    """Print and return hint ``level`` (1 the idea, 2 the approach, 3 the code) of ``exercise`` (by default the one
    whose check last failed). A WRONG verdict prints level 1 itself; ask for 2, then 3, only when stuck."""
    name = exercise or (_last_unsolved[-1] if _last_unsolved else None)
    if name is None:
        text = "No check has failed yet: name the exercise, e.g. hint(2, 'nearest_code')."
    elif name not in EXERCISES:
        text = f"No exercise named {name!r}; the exercises are: {', '.join(sorted(EXERCISES))}."
    else:
        text = EXERCISES[name].hint(level)
    print(text)
    return text


def _more_help(exercise: str) -> str:
    return f"\n  Still stuck? ex.hint(2) gives the approach, ex.hint(3) the code (exercise {EXERCISES[exercise].number})."


class ShortcutCalled(BaseException):
    """Raised by a disabled library function. A BaseException, so a learner's ``except Exception`` cannot hide it."""

    def __init__(self, name: str):
        super().__init__(name)
        self.name = name

    @property
    def reason(self) -> str:
        """What the learner's function did, as the end of "your function ..."."""
        return f"calls `{self.name}`, varlite's own version of what this exercise asks you to write"


class Forbidden(ShortcutCalled):
    """The learner's function reaches past its arguments (``reaches_outside``), or did something the grading
    sandbox refuses; ``reason`` says what."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self._reason = reason

    @property
    def reason(self) -> str:
        return self._reason


class LearnerRaised(Exception):
    """What a learner's function raised in another process (grading): the message, and ``line``, the learner's line
    it came from (as ``_learner_line`` writes it). The sandbox makes a subclass named after the original type, so
    ``type(err).__name__`` reads as it would have here."""

    def __init__(self, message: str, line: str = ""):
        super().__init__(message)
        self.line = line


class RemoteFunction(abc.ABC):
    """A learner's function that runs in another process (grading: ``sandbox.SandboxedFunction``). ``run`` sends one
    call there and returns its answer, or raises what the call raised there (``NotImplementedError``,
    ``ShortcutCalled``, ``Forbidden``, ``_Mismatch`` or ``LearnerRaised``)."""

    @abc.abstractmethod
    def run(self, call: Callable | None, args: tuple, kwargs: dict) -> Any:
        """``call(fn, *args)`` -- or ``fn(*args, **kwargs)`` when ``call`` is None -- computed by the learner's
        process; ``call`` must be a module-level function (it travels by name)."""

    def __call__(self, *args, **kwargs):
        return self.run(None, args, kwargs)


# Names a function reaching past its arguments uses: the running program's frames and objects ...
_FRAME_WORDS = frozenset({"_getframe", "currentframe", "_current_frames", "f_back", "f_locals", "f_globals",
                          "tb_frame", "gi_frame", "cr_frame", "getouterframes", "getinnerframes", "settrace",
                          "setprofile", "get_referrers", "get_referents", "get_objects", "inspect", "gc"})
_CHECKER_WORDS = frozenset({"exercises", "_check", "EXERCISES", "shortcuts_disabled", "ShortcutCalled"})
_SOLUTION_WORDS = frozenset({"solutions"})
_DOTTED = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _code_objects(code: types.CodeType):
    yield code
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _code_objects(const)


def _is_checker(value) -> bool:
    name = value.__name__ if isinstance(value, types.ModuleType) else getattr(value, "__module__", None)
    return isinstance(name, str) and name.startswith("varlite.exercises")


def reaches_outside(fn) -> str | None:
    """Why ``fn`` may not be run by a check, or None. A check gives the function its inputs and nothing else, so it
    refuses a function that

    * keeps a function in a default argument (evaluated once, before the check disables the library's functions);
    * reaches into the checker (``varlite.exercises``: the check's cases and expected answers), the reference
      solutions (``lessons.solutions``) or the running program's frames and objects (``sys._getframe``,
      ``inspect.currentframe``, ``gc``);
    * is varlite's own function.

    Read from the code objects (the names they use, and dotted names in their string constants) of ``fn``, its
    nested functions and the helper functions of the same namespace it calls. A cheap, static test: a name built at
    run time escapes it (the grading sandbox refuses those at run time)."""
    fn = getattr(fn, "__func__", fn)                          # a bound method
    if not isinstance(fn, types.FunctionType):
        return None
    if (fn.__module__ or "").startswith("varlite."):
        return f"is varlite's own `{fn.__qualname__}`, not a function you wrote"
    seen: set[int] = set()
    todo = [fn]
    while todo:
        f = todo.pop()
        if id(f) in seen:
            continue
        seen.add(id(f))
        for value in list(f.__defaults__ or ()) + list((f.__kwdefaults__ or {}).values()):
            if callable(value):
                return (f"keeps a function in a default argument of `{f.__name__}` "
                        f"({getattr(value, '__qualname__', type(value).__name__)}): a default is evaluated once, "
                        f"before the check runs, so the check cannot disable it")
        for code in _code_objects(f.__code__):
            strings = {c for c in code.co_consts if isinstance(c, str) and _DOTTED.fullmatch(c)}
            for word in sorted(set(code.co_names) | strings):
                parts = set(word.split("."))
                if parts & _FRAME_WORDS:
                    return f"inspects the running program (`{word}`): it may use only its arguments"
                if parts & _CHECKER_WORDS or (word in code.co_names and _is_checker(f.__globals__.get(word))):
                    return f"reaches into the checker (`{word}`): it may use only its arguments"
                if parts & _SOLUTION_WORDS:
                    return f"reaches into the reference solutions (`{word}`)"
                helper = f.__globals__.get(word) if word in code.co_names else None
                if isinstance(helper, types.FunctionType) and helper.__globals__ is f.__globals__:
                    todo.append(helper)
    return None


@contextlib.contextmanager
def shortcuts_disabled(fn: Callable, shortcuts: Sequence[Shortcut]):
    """While inside: every shortcut raises ``ShortcutCalled`` -- on its owner (module or class) and wherever else
    the learner's globals, the function's closure or the modules of the owner's package hold the same function
    (``from varlite.core.sampling import guide`` binds a second name; ``np.polyfit`` is also
    ``numpy.lib._polynomial_impl.polyfit``). Raises ``Forbidden`` on entry if the function reaches outside
    (``reaches_outside``)."""
    reason = reaches_outside(fn)
    if reason is not None:
        raise Forbidden(reason)
    patches: list[tuple[Any, str, Any]] = []
    try:
        refusals: dict[int, Callable] = {}                # id(original function) -> its refusing stand-in
        packages = set()
        for shortcut in shortcuts:
            original = shortcut.owner.__dict__.get(shortcut.attr) if isinstance(shortcut.owner, type) else \
                getattr(shortcut.owner, shortcut.attr, None)
            if original is None:
                continue

            def refuse(*args, _name=shortcut.name, **kwargs):
                raise ShortcutCalled(_name)
            refusals[id(original)] = refuse
            patches.append((shortcut.owner, shortcut.attr, original))
            setattr(shortcut.owner, shortcut.attr, refuse)
            owner = shortcut.owner.__module__ if isinstance(shortcut.owner, type) else shortcut.owner.__name__
            packages.add(owner.split(".")[0])

        def stand_in(value) -> Callable | None:
            if type(value) is types.MethodType:           # a bound method: q.nearest_code
                value = value.__func__
            return refusals.get(id(value))

        namespaces = [getattr(fn, "__globals__", {})] + [
            vars(module) for name, module in list(sys.modules.items())
            if module is not None and name.split(".")[0] in packages]
        for namespace in namespaces:
            for key, value in list(namespace.items()):
                if (refuse := stand_in(value)) is not None:
                    patches.append((namespace, key, value))
                    namespace[key] = refuse
        for cell in getattr(fn, "__closure__", None) or ():
            try:
                value = cell.cell_contents
            except ValueError:                            # an empty cell (a name not assigned yet)
                continue
            if (refuse := stand_in(value)) is not None:
                patches.append((cell, "cell_contents", value))
                cell.cell_contents = refuse
        yield
    finally:
        for owner, attr, original in reversed(patches):
            if isinstance(owner, dict):
                owner[attr] = original
            else:
                setattr(owner, attr, original)


def _call_learner(exercise: str, fn, call: Callable | None, args: tuple, kwargs: dict):
    """The learner's answer to one case: ``call(fn, *args)`` (or ``fn(*args, **kwargs)``) with the exercise's
    shortcuts disabled -- here, or in the grading sandbox's process when ``fn`` is a ``RemoteFunction``."""
    if isinstance(fn, RemoteFunction):
        return fn.run(call, args, kwargs)
    with shortcuts_disabled(fn, EXERCISES[exercise].shortcuts):
        return call(fn, *args) if call else fn(*args, **kwargs)


# ---------------------------------------------------------------------------------------------- verdicts
def _report(result: CheckResult, verbose: bool) -> CheckResult:
    if result.status != "passed":
        _last_unsolved.append(result.exercise)
    if verbose:
        print(result.message)
    return result


def _not_callable(exercise: str, fn, verbose: bool) -> CheckResult:
    return _report(CheckResult(exercise, "error", f"[{exercise}] ERROR: pass the function itself, e.g. "
                               f"check_{exercise}({exercise}) -- without calling it (no parentheses after its name); "
                               f"got a {type(fn).__name__}."), verbose)


def _not_attempted(exercise: str, verbose: bool) -> CheckResult:
    return _report(CheckResult(exercise, "not attempted", (
        f"[{exercise}] NOT ATTEMPTED YET: `{exercise}` still raises NotImplementedError. Write it in the cell above, "
        f"run that cell, then run this one again. (The rest of the lesson uses varlite's own version, so you can "
        f"keep reading.)")), verbose)


def _refused(exercise: str, called: ShortcutCalled, verbose: bool) -> CheckResult:
    if isinstance(called, Forbidden):
        return _report(CheckResult(exercise, "refused", (
            f"[{exercise}] REFUSED: your function {called.reason}. A check gives your function its inputs and nothing "
            f"else: compute the answer from the arguments.")), verbose)
    return _report(CheckResult(exercise, "refused", (
        f"[{exercise}] REFUSED: your function calls `{called.name}`, varlite's own version of what this exercise asks "
        f"you to write (the check runs your code with it disabled). Write the computation yourself with tensor "
        f"operations; the library's function is the reference you are compared with.")), verbose)


def _raised(exercise: str, where: str, err: Exception, verbose: bool) -> CheckResult:
    return _report(CheckResult(exercise, "error", (
        f"[{exercise}] ERROR in {where}: your function raised {type(err).__name__}: {err}{_learner_line(err)}"
        f"\n  Hint 1 (the idea): {EXERCISES[exercise].concept}" + _more_help(exercise))), verbose)


def _wrong(exercise: str, where: str, detail: str, verbose: bool, mistake: _Mistake | None = None,
           explained: str | None = None) -> CheckResult:
    """A WRONG verdict: the first difference, then the named mistake (if recognised) or the idea -- never the code."""
    head = f"[{exercise}] WRONG in {where}: {detail}."
    if mistake is not None:
        body = f"\n  Diagnosis: this is exactly what {mistake.name} gives. {mistake.advice}"
    else:
        body = (f"\n  Diagnosis: {explained}" if explained else "") + \
            f"\n  Hint 1 (the idea): {EXERCISES[exercise].concept}"
    return _report(CheckResult(exercise, "wrong", head + body + _more_help(exercise)), verbose)


def _run(exercise: str, fn, reference: Callable | None, cases: Sequence[_Case], compare: Callable[[Any, Any], None],
         mistakes: Sequence[_Mistake] = (), success: str = "", verbose: bool = True,
         call: Callable | None = None, diagnose: Callable | None = None) -> CheckResult:
    """Run fn on every case (its library shortcuts disabled), compare with the reference, diagnose known mistakes;
    print and return the verdict.

    ``call(fn, *args)`` adapts how the learner's function is called (default ``fn(*args)``); ``diagnose(got,
    expected, args)`` may explain a wrong answer that matches no listed mistake (a string, or None). A hidden case's
    inputs are never described in the message (only the first difference)."""
    if not callable(fn):
        return _not_callable(exercise, fn, verbose)
    n_hidden = sum(case.hidden for case in cases)
    for n, case in enumerate(cases, 1):
        kwargs = case.kwargs or {}
        label = (f"hidden case {n} of {len(cases)} (inputs not shown)" if case.hidden
                 else f"case {n} of {len(cases)} ({case.label})")
        try:
            got = _call_learner(exercise, fn, call, _clone(case.args), _clone(kwargs))
        except NotImplementedError:
            return _not_attempted(exercise, verbose)
        except ShortcutCalled as called:
            return _refused(exercise, called, verbose)
        except _Mismatch as mismatch:   # raised by a ``call`` adapter that inspects what the function returned
            return _wrong(exercise, label, str(mismatch), verbose)
        except Exception as err:      # the learner's code failed: say what and where, never crash the notebook
            return _raised(exercise, label, err, verbose)
        expected = case.expected if case.expected is not None else reference(*_clone(case.args), **_clone(kwargs))
        try:
            compare(got, expected)
            continue
        except _Mismatch as mismatch:
            detail = str(mismatch)
        for mistake in mistakes:
            try:
                compare(got, mistake.fn(*_clone(case.args), **_clone(kwargs)))
            except _Mismatch:
                continue
            except Exception:         # a mistake variant that does not apply to this input
                continue
            return _wrong(exercise, label, detail, verbose, mistake=mistake)
        explained = diagnose(got, expected, case.args) if diagnose else None
        return _wrong(exercise, label, detail, verbose, explained=explained)
    shown = len(cases) - n_hidden
    return _report(CheckResult(exercise, "passed", f"[{exercise}] PASSED: all {len(cases)} cases ({shown} shown, "
                               f"{n_hidden} hidden) agree with varlite. {success}".rstrip()), verbose)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _quantizer(vocab_size: int, z_channels: int, patch_nums: Sequence[int] = (1,), seed: int | None = None,
               codebook_VCv: torch.Tensor | None = None) -> MultiScaleQuantizer:
    """A stand-alone MultiScaleQuantizer (no encoder needed), with a given or seeded codebook and phi convs."""
    q = MultiScaleQuantizer(VQVAEConfig(vocab_size=vocab_size, z_channels=z_channels, ch=32,
                                        patch_nums=tuple(patch_nums)))
    g = _gen(0 if seed is None else seed)
    with torch.no_grad():
        if codebook_VCv is None:
            codebook_VCv = torch.randn(vocab_size, z_channels, generator=g) * 0.5
        q.embedding.weight.copy_(codebook_VCv)
        for conv in q.quant_resi.qresi_ls:
            conv.weight.copy_(torch.randn(conv.weight.shape, generator=g) / math.sqrt(9 * z_channels))
            conv.bias.copy_(torch.randn(conv.bias.shape, generator=g) * 0.05)
    return q.eval()
