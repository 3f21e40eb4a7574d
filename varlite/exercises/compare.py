"""How a learner's answer is compared with the expected one: tensors, ints, floats and lists of tensors, each
raising ``_Mismatch`` with a human description of the first difference (what, where, got vs expected)."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np
import torch


def rel_error(x, y) -> float:
    """max |x - y| / max(1e-8, |x| + |y|), elementwise (the CS231n helper): ~1e-7 for float32 round-off."""
    x, y = (v.detach().double() if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=torch.float64)
            for v in (x, y))
    return float(((x - y).abs() / (x.abs() + y.abs()).clamp_min(1e-8)).max())


class _Mismatch(Exception):
    """Raised by comparison helpers with a human description of the first difference."""


def _clone(x):
    if isinstance(x, torch.Tensor):
        return x.detach().clone()
    if isinstance(x, np.ndarray):
        return x.copy()
    if isinstance(x, list):
        return [_clone(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_clone(v) for v in x)
    if isinstance(x, dict):
        return {k: _clone(v) for k, v in x.items()}
    return x


def _fmt_value(v) -> str:
    if isinstance(v, bool):
        return str(v)
    if isinstance(v, float):
        return "-inf" if v == -math.inf else ("inf" if v == math.inf else f"{v:.6g}")
    return str(v)


def _fmt_index(idx: tuple, names: Sequence[str] | None) -> str:
    if names and len(names) == len(idx):
        return ", ".join(f"{n} {i}" for n, i in zip(names, idx))
    return "[" + ", ".join(str(i) for i in idx) + "]"


def _as_tensor(got, what: str) -> torch.Tensor:
    if isinstance(got, torch.Tensor):
        return got.detach()
    if isinstance(got, np.ndarray):
        return torch.from_numpy(got)
    if got is None:
        raise _Mismatch(f"{what}: your function returned None -- did you forget the `return` statement?")
    raise _Mismatch(f"{what}: expected a torch.Tensor, got a {type(got).__name__}")


def _kind(t: torch.Tensor) -> str:
    if t.dtype == torch.bool:
        return "bool"
    return "float" if t.is_floating_point() else "int"


def _compare_tensor(got, expected: torch.Tensor, what: str = "the result", atol: float = 0.0, rtol: float = 0.0,
                    names: Sequence[str] | None = None, kind_hint: str = "") -> None:
    """Raise _Mismatch describing the first difference between got and expected (shape, kind, values)."""
    got, expected = _as_tensor(got, what), expected.detach()
    if tuple(got.shape) != tuple(expected.shape):
        raise _Mismatch(f"{what}: expected shape {tuple(expected.shape)}, got {tuple(got.shape)}")
    want_kind, got_kind = _kind(expected), _kind(got)
    if want_kind != got_kind:
        raise _Mismatch(f"{what}: expected {want_kind} values ({expected.dtype}), got {got.dtype}. {kind_hint}".rstrip())
    if want_kind == "float":
        got_d, exp_d = got.double(), expected.double()
        inf_g, inf_e = torch.isinf(got_d), torch.isinf(exp_d)
        bad = (inf_g != inf_e) | (inf_e & (torch.sign(got_d) != torch.sign(exp_d)))
        finite = ~inf_e & ~inf_g
        close = torch.isclose(got_d, exp_d, rtol=rtol, atol=atol) | ~finite
        bad = bad | ~close | (torch.isnan(got_d) & ~torch.isnan(exp_d))
    else:
        bad = got != expected
    if bool(bad.any()):
        first = tuple(int(i) for i in bad.nonzero()[0])
        n_bad, n = int(bad.sum()), bad.numel()
        extra = ""
        if want_kind == "float":
            both = ~torch.isinf(got.double()) & ~torch.isinf(expected.double())
            worst = rel_error(got[both], expected[both]) if bool(both.any()) else 0.0
            if worst > 0:
                extra = f" (largest rel_error over finite entries: {worst:.2e})"
        raise _Mismatch(f"{what}: {n_bad} of {n} entries differ{extra}; first at {_fmt_index(first, names)}: "
                        f"expected {_fmt_value(expected[first].item())}, got {_fmt_value(got[first].item())}")


def _compare_int(got, expected: int, what: str) -> None:
    if isinstance(got, torch.Tensor) and got.numel() == 1:
        got = got.item()
    if isinstance(got, (np.integer,)):
        got = int(got)
    if isinstance(got, float) and got.is_integer():
        got = int(got)
    if not isinstance(got, int) or isinstance(got, bool):
        raise _Mismatch(f"{what}: expected an int, got {type(got).__name__} {got!r}")
    if got != expected:
        raise _Mismatch(f"{what}: expected {expected:,}, got {got:,} (off by {got - expected:+,})")


def _compare_float(got, expected: float, what: str, rtol: float = 1e-6) -> None:
    if isinstance(got, (torch.Tensor, np.ndarray)) and np.size(got) == 1:
        got = float(got.item() if hasattr(got, "item") else got)
    if not isinstance(got, (int, float, np.floating)) or isinstance(got, bool):
        raise _Mismatch(f"{what}: expected a number, got {type(got).__name__} {got!r}")
    if not math.isclose(float(got), expected, rel_tol=rtol, abs_tol=1e-12):
        raise _Mismatch(f"{what}: expected {expected:.6g}, got {float(got):.6g}")


def _compare_list(got, expected: list[torch.Tensor], what: str, item: Callable[[int], str], **kw) -> None:
    if not isinstance(got, (list, tuple)):
        raise _Mismatch(f"{what}: expected a list of {len(expected)} tensors (one per scale), got {type(got).__name__}")
    if len(got) != len(expected):
        raise _Mismatch(f"{what}: expected {len(expected)} entries (one per scale), got {len(got)}")
    for k, (g, e) in enumerate(zip(got, expected)):
        _compare_tensor(g, e, f"{what}, {item(k)}", **kw)
