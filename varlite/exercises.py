"""Self-checking exercises for the lessons (``lessons/*.ipynb``), and the lessons' model loader.

Dimension key: B batch, N vectors, Cv latent channels, V vocabulary, K scales, pn_k side of scale k, l tokens of one
scale, L all tokens, C width, D condition width, H heads, c head dim, h,w one scale's side.

Every ``check_<name>(fn)`` runs a learner's function on a few inputs drawn from fixed seeds, compares the answer with
what varlite itself computes (the library is the reference: ``MultiScaleQuantizer.nearest_code``,
``block_causal_bias``, ``sampling.filter_top_k_top_p`` ...), prints a verdict and returns a ``CheckResult``:

- PASSED          every case agrees with the library;
- NOT ATTEMPTED   the function still raises ``NotImplementedError`` (the stub in the notebook): the lesson goes on
                  with the library's version, so an unsolved notebook still runs top to bottom;
- WRONG           which case, which element, the expected and the obtained value, and -- when the answer is exactly
                  what a known mistake produces (argmax for argmin, the mask transposed, the guidance sign flipped,
                  the nucleus keeping the wrong tail ...) -- the name of that mistake and how to fix it;
- ERROR           the function raised: the exception, the line of the learner's code it came from, and a hint.

Checks never raise, so a notebook keeps running whatever the learner writes. The learner's function gets copies of
the inputs (so an in-place edit cannot corrupt the reference). ``rel_error`` is the CS231n-style helper for
comparing floats by hand.
"""
from __future__ import annotations

import functools
import itertools
import math
import traceback
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from . import complexity, editing, sampling
from .configs import OFFICIAL_PATCH_NUMS, VARConfig, VQVAEConfig, get_preset, official_var, official_vqvae
from .quantizer import MultiScaleQuantizer, Phi, PhiPartiallyShared
from .transformer import AdaLNBeforeHead, SelfAttention
from .var import VAR, block_causal_bias, scale_index_of_tokens
from .vqvae import VQVAE

__all__ = [
    "CheckResult", "rel_error", "lesson_models",
    "check_nearest_code", "check_lookup",
    "check_residual_quantize", "check_phi_index",
    "check_scale_of_tokens", "check_block_causal_mask",
    "check_adaln", "check_l2_attention_weights",
    "check_cfg_mix", "check_top_k_top_p",
    "check_per_scale_cross_entropy", "check_drop_labels",
    "check_scale_keep_masks", "check_inpaint_overrides",
    "check_attention_pairs", "check_raster_pairs", "check_fit_power_law",
    "check_var_param_count", "check_attention_capture_bytes",
]


# ============================================================================================== results and helpers
@dataclass
class CheckResult:
    """The verdict of one check. ``status``: "passed", "not attempted", "wrong" or "error"; truthy iff passed."""
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


def rel_error(x, y) -> float:
    """max |x - y| / max(1e-8, |x| + |y|), elementwise (the CS231n helper): ~1e-7 for float32 round-off."""
    x, y = (v.detach().double() if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=torch.float64)
            for v in (x, y))
    return float(((x - y).abs() / (x.abs() + y.abs()).clamp_min(1e-8)).max())


@dataclass
class _Case:
    label: str               # what this case is, for the message ("N=50 vectors, Cv=8, V=64")
    args: tuple
    kwargs: dict | None = None
    expected: Any = None     # the reference answer, when computed beforehand (else ``reference(*args)``)


@dataclass
class _Mistake:
    name: str                # short name, quoted in the message ("argmax instead of argmin")
    fn: Callable             # same signature as the learner's function: what that mistake returns
    advice: str              # how to fix it


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


def _learner_line(err: BaseException) -> str:
    """The last traceback line that is not inside varlite/torch/numpy: usually the learner's own code."""
    frames = traceback.extract_tb(err.__traceback__)[1:]     # skip the frame of the check itself
    mine = [f for f in frames if not any(p in f.filename for p in ("/varlite/", "/torch/", "/numpy/"))]
    frame = (mine or frames or [None])[-1]
    if frame is None or not frame.line:
        return ""
    return f"\n  at: {frame.line.strip()}"


def _report(result: CheckResult, verbose: bool) -> CheckResult:
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


def _raised(exercise: str, where: str, err: Exception, hint: str, verbose: bool) -> CheckResult:
    return _report(CheckResult(exercise, "error", (
        f"[{exercise}] ERROR in {where}: your function raised {type(err).__name__}: {err}{_learner_line(err)}"
        + (f"\n  Hint: {hint}" if hint else ""))), verbose)


def _run(exercise: str, fn, reference: Callable | None, cases: Sequence[_Case], compare: Callable[[Any, Any], None],
         mistakes: Sequence[_Mistake] = (), hint: str = "", success: str = "", verbose: bool = True,
         call: Callable | None = None, diagnose: Callable | None = None) -> CheckResult:
    """Run fn on every case, compare with the reference, diagnose known mistakes; print and return the verdict.

    ``call(fn, *args)`` adapts how the learner's function is called (default ``fn(*args)``); ``diagnose(got,
    expected, args)`` may explain a wrong answer that matches no listed mistake (a string, or None)."""
    head = f"[{exercise}]"
    if not callable(fn):
        return _not_callable(exercise, fn, verbose)
    for n, case in enumerate(cases, 1):
        kwargs = case.kwargs or {}
        label = f"case {n} of {len(cases)} ({case.label})"
        try:
            args = _clone(case.args)
            got = call(fn, *args) if call else fn(*args, **_clone(kwargs))
        except NotImplementedError:
            return _not_attempted(exercise, verbose)
        except Exception as err:      # the learner's code failed: say what and where, never crash the notebook
            return _raised(exercise, label, err, hint, verbose)
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
            return _report(CheckResult(exercise, "wrong", (
                f"{head} WRONG in {label}: {detail}.\n  Diagnosis: this is exactly what {mistake.name} gives. "
                f"{mistake.advice}")), verbose)
        explained = diagnose(got, expected, case.args) if diagnose else None
        return _report(CheckResult(exercise, "wrong", f"{head} WRONG in {label}: {detail}."
                                   + (f"\n  Diagnosis: {explained}" if explained else "")
                                   + (f"\n  Hint: {hint}" if hint else "")), verbose)
    return _report(CheckResult(exercise, "passed", f"{head} PASSED: all {len(cases)} cases agree with varlite. "
                               f"{success}".rstrip()), verbose)


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ============================================================================================== lesson models
def lesson_models(name: str = "shapes", seed: int = 0, verbose: bool = True) -> tuple[VQVAE, VAR]:
    """(vqvae, var) for a lesson: the shipped built-in model ``name`` if this install has its weights file, else the
    same preset with synthetic weights (``varlite.synthetic``: every computation is the real one, only the pictures
    are noise). Eval mode, CPU."""
    from .synthetic import layout_of, synthetic_state_dict
    try:
        from . import builtin
    except ImportError:              # a checkout without the built-in models module
        builtin, reason = None, "varlite.builtin is not installed"
    if builtin is not None:
        try:
            vqvae, var = builtin.load_builtin(name)
            if verbose:
                print(f"Loaded the built-in model {name!r} (varlite/weights/{name}.pth).")
            return vqvae, var
        except builtin.BuiltinError as err:
            reason = str(err)
    preset = get_preset(name)
    vqvae, var = VQVAE(preset.vqvae), None
    vqvae.load_state_dict(synthetic_state_dict(layout_of(vqvae), seed, preset.vqvae.patch_nums))
    var = VAR(preset.var, vqvae)
    var.load_state_dict(synthetic_state_dict(layout_of(var), seed, preset.var.patch_nums))
    if verbose:
        print(f"The built-in weights are not available here ({reason.split(';')[0]}).\nUsing the {name!r} preset with "
              f"SYNTHETIC weights: every tensor has the trained model's shape and every computation below is the "
              f"real one, but the pictures will be noise. Train the model yourself in lesson 6.")
    return vqvae.eval(), var.eval()


# ============================================================================================== lesson 1
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


def _codebook_case(seed: int, N: int, Cv: int, V: int) -> tuple[torch.Tensor, torch.Tensor]:
    """z (N, Cv) and a codebook (V, Cv) whose vectors have very different lengths (so a dot product is not enough)."""
    g = _gen(seed)
    codebook = torch.randn(V, Cv, generator=g) * torch.linspace(0.2, 3.0, V).view(-1, 1)
    codebook = codebook[torch.randperm(V, generator=g)]
    z = torch.randn(N, Cv, generator=g)
    return z, codebook


def _nearest_code_reference(z_NCv, codebook_VCv):
    return _quantizer(codebook_VCv.shape[0], codebook_VCv.shape[1], codebook_VCv=codebook_VCv).nearest_code(z_NCv)


def check_nearest_code(nearest_code, verbose: bool = True) -> CheckResult:
    """``nearest_code(z_NCv, codebook_VCv) -> idx_N`` (int64): for every row of z, the index v of the codebook
    vector e_v with the smallest squared distance ||z - e_v||^2. Reference: ``MultiScaleQuantizer.nearest_code``."""
    cases = [_Case(f"N={N} vectors, Cv={Cv}, V={V}", _codebook_case(s, N, Cv, V))
             for s, (N, Cv, V) in enumerate([(1, 2, 3), (50, 8, 64), (300, 32, 512)])]
    mistakes = [
        _Mistake("argmax instead of argmin (the *farthest* codebook vector)",
                 lambda z, e: torch.cdist(z, e).argmax(dim=1),
                 "The token is the codebook entry at the *smallest* distance: torch.argmin(d, dim=1)."),
        _Mistake("the largest dot product z . e_v (without the ||e_v||^2 term)",
                 lambda z, e: (z @ e.T).argmax(dim=1),
                 "||z - e||^2 = ||z||^2 + ||e||^2 - 2 z.e: the ||e_v||^2 term differs between codebook vectors, so "
                 "the best dot product is not the nearest vector when the vectors have different lengths."),
        _Mistake("the largest cosine similarity",
                 lambda z, e: (F.normalize(z, dim=1) @ F.normalize(e, dim=1).T).argmax(dim=1),
                 "Cosine similarity ignores length; VQ uses the Euclidean distance."),
    ]
    return _run("nearest_code", nearest_code, _nearest_code_reference, cases,
                lambda got, exp: _compare_tensor(got, exp, "the indices", names=("row",),
                                                 kind_hint="Return indices (argmin), not distances."),
                mistakes, hint="compute the (N, V) matrix of squared distances, then argmin over the V axis (dim=1).",
                success="This is line for line what the tokenizer does at every scale.", verbose=verbose)


def _lookup_case(seed: int, B: int, side: int, Cv: int, V: int):
    g = _gen(seed)
    return torch.randint(0, V, (B, side * side), generator=g), torch.randn(V, Cv, generator=g), side


def check_lookup(lookup, verbose: bool = True) -> CheckResult:
    """``lookup(idx_Bl, codebook_VCv, side) -> (B, Cv, side, side)``: the codebook vectors of a row-major token map,
    channels first. Reference: ``MultiScaleQuantizer.lookup``."""
    cases = [_Case(f"B={B}, {side}x{side} tokens, Cv={Cv}, V={V}", _lookup_case(s, B, side, Cv, V))
             for s, (B, side, Cv, V) in enumerate([(1, 1, 4, 5), (2, 3, 4, 16), (3, 8, 32, 256)])]

    def reference(idx_Bl, codebook_VCv, side):
        return _quantizer(codebook_VCv.shape[0], codebook_VCv.shape[1], codebook_VCv=codebook_VCv).lookup(idx_Bl, side)

    mistakes = [
        _Mistake("reshaping (B, l, Cv) straight to (B, Cv, h, w) without moving the channel axis",
                 lambda idx, e, side: e[idx].reshape(idx.shape[0], e.shape[1], side, side),
                 "e[idx] is (B, l, Cv): the channels are last. Move them first (.transpose(1, 2) or .permute(0, 2, 1)) "
                 "and only then reshape to (B, Cv, side, side)."),
        _Mistake("column-major order (rows and columns swapped)",
                 lambda idx, e, side: e[idx].transpose(1, 2).reshape(idx.shape[0], e.shape[1], side, side).transpose(2, 3),
                 "Token i of a scale sits at row i // side, column i % side (row-major, as tensors are flattened)."),
    ]
    return _run("lookup", lookup, reference, cases,
                lambda got, exp: _compare_tensor(got, exp, "the vectors", atol=1e-6, names=("b", "channel", "row", "col")),
                mistakes, hint="index the codebook with the tokens, then put the channel axis before the spatial ones.",
                verbose=verbose)


# ============================================================================================== lesson 2
_RQ_PATCH_NUMS = (1, 2, 3, 4, 6)


def _rq_case(seed: int, B: int, patch_nums=_RQ_PATCH_NUMS, V: int = 64, Cv: int = 8):
    q = _quantizer(V, Cv, patch_nums, seed=seed)
    H = patch_nums[-1]
    f = torch.randn(B, Cv, H, H, generator=_gen(100 + seed))
    return f, q


def _rq_variant(f, q, *, subtract=True, phi_in_residual=True, down="area"):
    """The residual loop with one step changed (for diagnosing mistakes); defaults reproduce the library."""
    B, Cv, H, _ = f.shape
    rest, out, K = f.clone(), [], len(q.patch_nums)
    with torch.no_grad():
        for si, pn in enumerate(q.patch_nums):
            z = rest if si == K - 1 else F.interpolate(rest, size=(pn, pn), mode=down)
            idx = q.nearest_code(z.permute(0, 2, 3, 1).reshape(-1, Cv)).view(B, pn * pn)
            h = q.lookup(idx, pn)
            up = h if si == K - 1 else F.interpolate(h, size=(H, H), mode="bicubic")
            contribution = q.phi(up, si) if phi_in_residual else up
            if subtract:
                rest = rest - contribution
            out.append(idx)
    return out


def check_residual_quantize(residual_quantize, verbose: bool = True) -> CheckResult:
    """``residual_quantize(f_BCvHW, quantizer) -> [idx_Bl for every scale]``: VAR's multi-scale residual
    quantization (Algorithm 1 of the paper). Reference: ``MultiScaleQuantizer.f_to_idx_Bl``."""
    cases = [_Case(f"B={B}, Cv=8, V=64, patch_nums={_RQ_PATCH_NUMS}", _rq_case(s, B)) for s, B in enumerate([1, 3])]

    def reference(f, q):
        with torch.no_grad():
            return q.f_to_idx_Bl(f)

    mistakes = [
        _Mistake("never subtracting what each scale explained (every scale quantizes f itself)",
                 lambda f, q: _rq_variant(f, q, subtract=False),
                 "After scale k, update the residual: rest = rest - phi_k(upsample(e[r_k])); scale k+1 quantizes what "
                 "is *left*."),
        _Mistake("subtracting upsample(e[r_k]) without phi_k",
                 lambda f, q: _rq_variant(f, q, phi_in_residual=False),
                 "What scale k adds to f_hat is quantizer.upsample_and_phi(h, si) -- the upsampled vectors *through* "
                 "phi_k -- and the residual must lose exactly that."),
        _Mistake("bilinear downsampling instead of area averaging",
                 lambda f, q: _rq_variant(f, q, down="bilinear"),
                 "Use F.interpolate(rest, size=(pn, pn), mode='area'): each coarse position is the mean of its patch."),
        _Mistake("nearest-neighbour downsampling instead of area averaging",
                 lambda f, q: _rq_variant(f, q, down="nearest"),
                 "Use F.interpolate(rest, size=(pn, pn), mode='area'): each coarse position is the mean of its patch."),
    ]
    return _run("residual_quantize", residual_quantize, reference, cases,
                lambda got, exp: _compare_list(got, exp, "the token maps",
                                               lambda k: f"scale {k + 1} ({_RQ_PATCH_NUMS[k]}x{_RQ_PATCH_NUMS[k]})",
                                               names=("b", "token")),
                mistakes, hint="if scale 1 is right and a later scale is wrong, look at the residual update; "
                               "the last scale is quantized at full size without down/upsampling.",
                success="You have written the heart of VAR's tokenizer.", verbose=verbose)


def _phi_reference(si: int, num_scales: int) -> int:
    return PhiPartiallyShared(nn.ModuleList([Phi(1, 0.5) for _ in range(4)])).index_for(si, num_scales)


def check_phi_index(phi_index, verbose: bool = True) -> CheckResult:
    """``phi_index(si, num_scales) -> int``: which of the 4 shared phi convs scale si (0-based) of K uses: the one
    whose tick (ticks = linspace(1/12, 11/12, 4)) is nearest to si / (K - 1).
    Reference: ``PhiPartiallyShared.index_for``."""
    cases = [_Case(f"every scale of K={K}", (K,)) for K in (2, 4, 7, 10, 16)]

    def table(fn):
        return lambda K: torch.tensor([int(fn(si, K)) for si in range(K)])

    def float32_ticks(si, K):
        ticks = torch.linspace(1 / 12, 11 / 12, 4, dtype=torch.float32)
        return int((ticks - si / (K - 1)).abs().argmin())

    mistakes = [
        _Mistake("si / K instead of si / (K - 1)",
                 table(lambda si, K: int(np.argmin(np.abs(np.linspace(1 / 12, 11 / 12, 4) - si / K)))),
                 "The position of scale si runs from 0 (first scale) to 1 (last scale): si / (K - 1)."),
        _Mistake("ticks at linspace(0, 1, 4)",
                 table(lambda si, K: int(np.argmin(np.abs(np.linspace(0, 1, 4) - si / (K - 1))))),
                 "The 4 ticks are the centres of 4 equal bins shrunk towards the middle: linspace(1/12, 11/12, 4)."),
        _Mistake("float32 ticks (torch.linspace) where a scale lies exactly between two ticks",
                 table(float32_ticks),
                 "For K=10, scales 2 and 7 sit exactly half-way between two ticks; upstream computes in float64 "
                 "with numpy (np.linspace, np.argmin) and its rounding decides. Do the same to agree bit for bit."),
    ]
    return _run("phi_index", phi_index, table(_phi_reference), cases,
                lambda got, exp: _compare_tensor(got, exp, "the conv index of each scale", names=("scale",)),
                mistakes, hint="ticks = np.linspace(1/12, 11/12, 4); return int(np.argmin(np.abs(ticks - si / (K - 1)))).",
                verbose=verbose, call=lambda fn, K: table(fn)(K))


# ============================================================================================== lesson 3
_MASK_CASES = [(1, 2), (1, 2, 3), (1, 2, 3, 4), (1, 3, 5, 8)]


def check_scale_of_tokens(scale_of_tokens, verbose: bool = True) -> CheckResult:
    """``scale_of_tokens(patch_nums) -> (L,) int64``: the 0-based scale of every token of the flattened sequence.
    Reference: ``varlite.var.scale_index_of_tokens``."""
    cases = [_Case(f"patch_nums={pn}", (pn,)) for pn in _MASK_CASES + [OFFICIAL_PATCH_NUMS]]
    mistakes = [_Mistake("pn_k tokens per scale instead of pn_k^2",
                         lambda pn: torch.cat([torch.full((p,), k) for k, p in enumerate(pn)]),
                         "Scale k is a pn_k x pn_k map: it has pn_k ** 2 tokens.")]
    return _run("scale_of_tokens", scale_of_tokens, lambda pn: scale_index_of_tokens(pn)[0], cases,
                lambda got, exp: _compare_tensor(got, exp, "the scale index", names=("token",)),
                mistakes, hint="repeat scale index k pn_k ** 2 times, for k = 0, 1, ..., K-1.", verbose=verbose,
                call=lambda fn, pn: fn(list(pn)))


def check_block_causal_mask(block_causal_mask, verbose: bool = True) -> CheckResult:
    """``block_causal_mask(patch_nums) -> (L, L) bool``: True where query token i may attend to key token j, i.e.
    scale(j) <= scale(i). Reference: ``varlite.var.block_causal_bias`` (0 where allowed, -inf elsewhere)."""
    cases = [_Case(f"patch_nums={pn}", (pn,)) for pn in _MASK_CASES + [OFFICIAL_PATCH_NUMS]]

    def lvl(pn):
        return scale_index_of_tokens(pn)[0]

    mistakes = [
        _Mistake("a token-by-token causal mask (lower triangle)",
                 lambda pn: torch.ones(len(lvl(pn)), len(lvl(pn)), dtype=torch.bool).tril(),
                 "That is next-*token* prediction: a token could not see the later tokens of its own scale. In VAR a "
                 "token sees *all* tokens of its own scale (their inputs are known) and of every coarser scale."),
        _Mistake("a strict mask (only coarser scales, not the own scale: scale(j) < scale(i))",
                 lambda pn: lvl(pn).view(-1, 1) > lvl(pn).view(1, -1),
                 "Off by one scale: a token also attends to the tokens of its own scale. Use <=, not <. (The first "
                 "scale would otherwise see nothing at all.)"),
        _Mistake("the transposed mask (rows and columns swapped: scale(j) >= scale(i))",
                 lambda pn: lvl(pn).view(-1, 1) <= lvl(pn).view(1, -1),
                 "Rows are queries (the token that looks), columns are keys (the token looked at). Row i may look at "
                 "column j when scale(j) <= scale(i): coarse scales are visible to fine ones, not the reverse."),
        _Mistake("the inverted mask (True where attention is forbidden)",
                 lambda pn: lvl(pn).view(-1, 1) < lvl(pn).view(1, -1),
                 "Return True where attention is *allowed* (torch's boolean attn_mask convention)."),
    ]
    return _run("block_causal_mask", block_causal_mask, lambda pn: block_causal_bias(pn)[0, 0] == 0, cases,
                lambda got, exp: _compare_tensor(got, exp, "the mask", names=("query", "key"),
                                                 kind_hint="Return a bool mask (True = may attend); the additive bias "
                                                           "is torch.where(mask, 0.0, -inf)."),
                mistakes, hint="compare the scale index of every query (a column vector) with that of every key "
                               "(a row vector): broadcasting gives the (L, L) mask in one line.",
                success="This is exactly the buffer VAR registers as attn_bias_for_masking (as 0 / -inf).",
                verbose=verbose, call=lambda fn, pn: fn(list(pn)))


# ============================================================================================== lesson 4
def _adaln_case(seed: int, B: int, L: int, C: int):
    g = _gen(seed)
    head_nm = AdaLNBeforeHead(C, 1e-6)
    with torch.no_grad():
        lin = head_nm.ada_lin[1]
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) / math.sqrt(C))
        lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * 0.5)
    x = torch.randn(B, L, C, generator=g) * 2 + 0.5
    cond = torch.randn(B, C, generator=g)
    with torch.no_grad():
        expected = head_nm(x, cond)                      # the library's AdaLN, computed once
    return (x, cond, head_nm.ada_lin), expected


def check_adaln(adaln, verbose: bool = True) -> CheckResult:
    """``adaln(x_BLC, cond_BD, ada_lin) -> (B, L, C)``: LN(x) * (1 + scale) + shift with (scale, shift) =
    ada_lin(cond) split in two along the last axis (scale first) and LN a LayerNorm *without* learned weights
    (eps 1e-6). Reference: ``AdaLNBeforeHead`` (the AdaLN before VAR's output head)."""
    cases = []
    for n, (B, L, C) in enumerate([(1, 1, 4), (2, 5, 8), (3, 7, 32)]):
        args, expected = _adaln_case(n, B, L, C)
        cases.append(_Case(f"B={B}, L={L}, C={C}", args, expected=expected))

    def variant(x, cond, ada_lin, *, plus_one=True, swap=False):
        with torch.no_grad():
            C = x.shape[-1]
            a, b = ada_lin(cond).view(-1, 1, 2, C).unbind(2)
            scale, shift = (b, a) if swap else (a, b)
            return F.layer_norm(x, (C,), eps=1e-6) * ((1 + scale) if plus_one else scale) + shift

    mistakes = [
        _Mistake("LN(x) * scale + shift (without the 1 +)",
                 lambda x, c, m: variant(x, c, m, plus_one=False),
                 "AdaLN multiplies by (1 + scale): with a zero condition the block starts as a plain LayerNorm."),
        _Mistake("scale and shift swapped",
                 lambda x, c, m: variant(x, c, m, swap=True),
                 "ada_lin(cond) is (scale, shift) in that order: .view(B, 1, 2, C).unbind(2) gives scale first."),
        _Mistake("the plain LayerNorm (the condition ignored)",
                 lambda x, c, m: F.layer_norm(x, (x.shape[-1],), eps=1e-6),
                 "The class condition enters through ada_lin(cond): (scale, shift) per sample, broadcast over L."),
    ]
    return _run("adaln", adaln, None, cases,
                lambda got, exp: _compare_tensor(got, exp, "the output", atol=1e-4, rtol=1e-4, names=("b", "token", "channel")),
                mistakes, hint="scale, shift = ada_lin(cond).view(B, 1, 2, C).unbind(2); F.layer_norm(x, (C,), eps=1e-6).",
                verbose=verbose)


def _attention_case(seed: int, B: int, H: int, L: int, c: int, big_scale: bool, patch_nums=None):
    """Raw per-head q, k (before normalisation), the log-scale parameter and a mask, from a seeded SelfAttention."""
    g = _gen(seed)
    C = H * c
    attn = SelfAttention(0, C, H)
    with torch.no_grad():
        attn.mat_qkv.weight.copy_(torch.randn(attn.mat_qkv.weight.shape, generator=g) / math.sqrt(C))
        attn.q_bias.copy_(torch.randn(C, generator=g) * 0.1)
        logs = math.log(4.0) + torch.randn(H, generator=g) * 0.3
        if big_scale:
            logs[0] = math.log(300.0)          # above the clamp at log(100)
        attn.scale_mul_1H11.copy_(logs.view(1, H, 1, 1))
    x = torch.randn(B, L, C, generator=g)
    bias = block_causal_bias(patch_nums) if patch_nums else None
    with torch.no_grad():
        raw = F.linear(x, attn.mat_qkv.weight, torch.cat((attn.q_bias, attn.zero_k_bias, attn.v_bias)))
        q, k, _ = raw.view(B, L, 3, H, c).permute(2, 0, 3, 1, 4).unbind(0)
    return (q.contiguous(), k.contiguous(), attn.scale_mul_1H11.detach().clone(), bias), (attn, x, bias)


def check_l2_attention_weights(l2_attention_weights, verbose: bool = True) -> CheckResult:
    """``l2_attention_weights(q_BHLc, k_BHLc, scale_mul_1H11, attn_bias) -> (B, H, L, L)``: VAR's attention
    probabilities softmax(exp(min(s_h, log 100)) q_hat k_hat^T + bias) with q_hat, k_hat the L2-normalised q, k,
    ``scale_mul_1H11`` the learned log-temperature s_h, and ``attn_bias`` (0 / -inf, or None).
    Reference: the weights ``SelfAttention`` records with ``attn_weights_out``."""
    specs = [(1, 1, 3, 4, False, None), (2, 2, 5, 8, False, (1, 2)), (1, 4, 14, 8, True, (1, 2, 3))]
    cases = []
    for n, (B, H, L, c, big, pn) in enumerate(specs):
        args, (attn, x, bias) = _attention_case(n, B, H, L, c, big, pn)
        weights: list = []
        with torch.no_grad():
            attn(x, bias, attn_weights_out=weights)      # the probabilities the library computes, recorded
        label = (f"B={B}, H={H}, L={L}, c={c}" + (", a head with s_h > log 100" if big else "")
                 + (", block-causal bias" if pn else ""))
        cases.append(_Case(label, args, expected=weights[0]))

    def variant(q, k, s, bias, *, normalise=True, clamp=True, exp=True, sqrt_scale=False, dim=-1):
        if normalise:
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        if sqrt_scale:
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        else:
            t = s.clamp_max(math.log(100)) if clamp else s
            scores = (t.exp() if exp else t) * (q @ k.transpose(-2, -1))
        if bias is not None:
            scores = scores + bias
        return scores.softmax(dim=dim)

    mistakes = [
        _Mistake("plain dot products (q and k not L2-normalised)",
                 lambda q, k, s, b: variant(q, k, s, b, normalise=False),
                 "Normalise q and k to unit length over the head dimension first: F.normalize(q, dim=-1)."),
        _Mistake("standard attention scaling 1/sqrt(c)",
                 lambda q, k, s, b: variant(q, k, s, b, sqrt_scale=True),
                 "With unit-length q and k the scores lie in [-1, 1]; VAR multiplies them by a learned per-head "
                 "temperature exp(s_h) instead of 1/sqrt(c)."),
        _Mistake("the temperature without the clamp at log(100)",
                 lambda q, k, s, b: variant(q, k, s, b, clamp=False),
                 "Clamp the log-temperature first: s.clamp_max(math.log(100)).exp(), so no head sharper than 100."),
        _Mistake("the log-temperature used without exp",
                 lambda q, k, s, b: variant(q, k, s, b, exp=False),
                 "scale_mul_1H11 stores log(temperature): multiply by its exp()."),
        _Mistake("the mask ignored",
                 lambda q, k, s, b: variant(q, k, s, None),
                 "Add attn_bias (0 where allowed, -inf where not) to the scores before the softmax."),
        _Mistake("the softmax over the query axis",
                 lambda q, k, s, b: variant(q, k, s, b, dim=-2),
                 "Each query's weights over the keys sum to 1: softmax over the last axis (dim=-1)."),
    ]
    return _run("l2_attention_weights", l2_attention_weights, None, cases,
                lambda got, exp: _compare_tensor(got, exp, "the attention weights", atol=1e-5, rtol=1e-4,
                                                 names=("b", "head", "query", "key")),
                mistakes, hint="normalise q, k; scores = exp(clamp(s, max=log 100)) * q k^T (+ bias); softmax(dim=-1).",
                verbose=verbose)


# ============================================================================================== lesson 5
def _logit_pair(seed: int, B: int, l: int, V: int):
    g = _gen(seed)
    return torch.randn(B, l, V, generator=g) * 2, torch.randn(B, l, V, generator=g) * 2


def check_cfg_mix(cfg_mix, verbose: bool = True) -> CheckResult:
    """``cfg_mix(cond_BlV, uncond_BlV, cfg, si, num_scales) -> (B, l, V)``: classifier-free guidance with VAR's
    linear ramp, t = cfg * si / (K - 1) (t = 0 when K = 1); logits = (1 + t) cond - t uncond.
    Reference: ``sampling.cfg_strength`` and ``sampling.guide``."""
    specs = [(1.5, 0, 10), (1.5, 9, 10), (4.0, 3, 7), (0.0, 5, 10), (2.0, 2, 3), (3.0, 0, 1)]
    cases = [_Case(f"cfg={cfg}, scale si={si} of K={K}", (*_logit_pair(n, 2, 4, 16), cfg, si, K))
             for n, (cfg, si, K) in enumerate(specs)]

    def reference(cond, uncond, cfg, si, K):
        return sampling.guide(torch.cat((cond, uncond)), sampling.cfg_strength(cfg, si, K))

    def ramp(cfg, si, K):
        return cfg * si / (K - 1) if K > 1 else 0.0

    mistakes = [
        _Mistake("the sign flipped ((1 + t) uncond - t cond: steering *away* from the class)",
                 lambda c, u, cfg, si, K: (1 + ramp(cfg, si, K)) * u - ramp(cfg, si, K) * c,
                 "Guidance extrapolates from the unconditional towards the conditional prediction: "
                 "cond + t (cond - uncond) = (1 + t) cond - t uncond."),
        _Mistake("no ramp (t = cfg at every scale)",
                 lambda c, u, cfg, si, K: (1 + cfg) * c - cfg * u,
                 "VAR ramps the strength linearly with the scale: t = cfg * si / (K - 1) -- no guidance on the first "
                 "scale, full guidance on the last."),
        _Mistake("the ramp si / K instead of si / (K - 1)",
                 lambda c, u, cfg, si, K: (1 + cfg * si / K) * c - cfg * si / K * u,
                 "With 0-based si the last scale is si = K - 1, which must get the full strength cfg."),
        _Mistake("t cond - t uncond (the 1 + missing)",
                 lambda c, u, cfg, si, K: ramp(cfg, si, K) * (c - u),
                 "At t = 0 guidance must give back the conditional logits: (1 + t) cond - t uncond."),
    ]
    return _run("cfg_mix", cfg_mix, reference, cases,
                lambda got, exp: _compare_tensor(got, exp, "the guided logits", atol=1e-5, rtol=1e-5,
                                                 names=("b", "token", "vocab")),
                mistakes, hint="t = cfg * si / (num_scales - 1) if num_scales > 1 else 0.0; "
                               "return (1 + t) * cond - t * uncond.", verbose=verbose)


def _filter_case(seed: int, B: int, l: int, V: int):
    return torch.randn(B, l, V, generator=_gen(seed)) * 2.5


def check_top_k_top_p(top_k_top_p, verbose: bool = True) -> CheckResult:
    """``top_k_top_p(logits_BlV, top_k, top_p) -> (B, l, V)``: the logits with every token outside the top_k largest
    (if top_k > 0) and then outside the top-p nucleus (if top_p > 0) set to -inf. The nucleus is the smallest set of
    most likely tokens whose probability reaches top_p (computed on what top-k kept); the best token always stays.
    Reference: ``sampling.filter_top_k_top_p``."""
    specs = [(0, 0.0), (5, 0.0), (0, 0.9), (10, 0.8), (0, 1e-6), (64, 0.5)]
    cases = [_Case(f"top_k={k}, top_p={p}, V=64", (_filter_case(n, 2, 3, 64), k, p)) for n, (k, p) in enumerate(specs)]

    def reference(logits, k, p):
        return sampling.filter_top_k_top_p(logits, k, p)

    def nucleus(logits, p, *, wrong_tail=False, keep_best=True, on_logits=False):
        probs = logits if on_logits else logits.softmax(-1)
        sorted_p, order = probs.sort(-1, descending=True)
        before = sorted_p.cumsum(-1) - sorted_p          # mass of strictly better tokens
        remove = before < p if wrong_tail else before >= p
        if not keep_best:
            remove = sorted_p.cumsum(-1) > p
        out = torch.zeros_like(remove).scatter(-1, order, remove)
        return logits.masked_fill(out, -math.inf)

    def topk(logits, k, *, off=0, fill=-math.inf):
        if k <= 0:
            return logits
        kk = max(1, min(k + off, logits.shape[-1]))
        kth = logits.topk(kk, dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, fill)

    def variant(logits, k, p, **kw):
        logits = topk(logits, k, off=kw.pop("off", 0), fill=kw.pop("fill", -math.inf))
        return nucleus(logits, p, **kw) if p > 0 else logits

    mistakes = [
        _Mistake("top-p keeping the wrong tail (the unlikely tokens instead of the likely ones)",
                 lambda x, k, p: variant(x, k, p, wrong_tail=True),
                 "Sort by probability *descending* and keep the head of the list until its mass reaches top_p; "
                 "everything after that is removed."),
        _Mistake("top-p stopping before the token that reaches top_p (kept mass < top_p; for a tiny top_p nothing "
                 "is left)",
                 lambda x, k, p: variant(x, k, p, keep_best=False),
                 "Keep a token while the mass of the tokens *before* it is < top_p: the token that crosses top_p stays, "
                 "and so the best token always stays, even for a tiny top_p."),
        _Mistake("the nucleus computed on the logits instead of the probabilities",
                 lambda x, k, p: variant(x, k, p, on_logits=True),
                 "Cumulate softmax(logits), not raw logits."),
        _Mistake("top-k keeping k + 1 tokens", lambda x, k, p: variant(x, k, p, off=1),
                 "Keep the k largest: logits below the k-th largest (topk(k).values[..., -1:]) become -inf."),
        _Mistake("top-k keeping k - 1 tokens", lambda x, k, p: variant(x, k, p, off=-1),
                 "Keep the k largest: logits below the k-th largest (topk(k).values[..., -1:]) become -inf."),
        _Mistake("filtered logits set to 0 instead of -inf", lambda x, k, p: variant(x, k, p, fill=0.0),
                 "A logit of 0 still has probability exp(0)/Z > 0; only -inf removes a token from the softmax."),
    ]
    return _run("top_k_top_p", top_k_top_p, reference, cases,
                lambda got, exp: _compare_tensor(got, exp, "the filtered logits", atol=1e-6, names=("b", "token", "vocab")),
                mistakes, hint="top-k first (masked_fill below the k-th largest), then the nucleus on the softmax of "
                               "what is left; removed entries are -inf; top_k=0 / top_p=0 mean 'off'.",
                verbose=verbose)


# ============================================================================================== lesson 6
def _ce_case(seed: int, B: int, patch_nums, V: int):
    g = _gen(seed)
    L = sum(p * p for p in patch_nums)
    return torch.randn(B, L, V, generator=g) * 2, torch.randint(0, V, (B, L), generator=g), tuple(patch_nums)


def check_per_scale_cross_entropy(per_scale_cross_entropy, verbose: bool = True) -> CheckResult:
    """``per_scale_cross_entropy(logits_BLV, target_BL, patch_nums) -> (K,)``: the mean cross-entropy of the tokens of
    each scale (scale k owns positions [sum_{j<k} pn_j^2, sum_{j<=k} pn_j^2)).
    Reference: ``varlite.train.metrics.per_scale_loss_acc``."""
    from .train.metrics import per_scale_loss_acc
    specs = [(1, (1, 2), 5), (2, (1, 2, 3, 4), 16), (3, (1, 2, 4, 8), 32)]
    cases = [_Case(f"B={B}, patch_nums={pn}, V={V}", _ce_case(s, B, pn, V)) for s, (B, pn, V) in enumerate(specs)]

    def begin_ends(pn, square=True):
        out, cur = [], 0
        for p in pn:
            n = p * p if square else p
            out.append((cur, cur + n))
            cur += n
        return out

    def reference(logits, target, pn):
        return per_scale_loss_acc(logits, target, begin_ends(pn))[1]

    def ce_BL(logits, target):
        return F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view(target.shape)

    mistakes = [
        _Mistake("the mean over all L tokens for every scale",
                 lambda x, t, pn: ce_BL(x, t).mean().repeat(len(pn)),
                 "Average each scale over its own positions only: loss_BL[:, begin:end].mean()."),
        _Mistake("pn_k positions per scale instead of pn_k^2",
                 lambda x, t, pn: torch.stack([ce_BL(x, t)[:, b:e].mean() for b, e in begin_ends(pn, square=False)]),
                 "Scale k has pn_k ** 2 tokens: begin/end advance by pn_k ** 2."),
        _Mistake("the sum over a scale's tokens instead of the mean",
                 lambda x, t, pn: torch.stack([ce_BL(x, t)[:, b:e].sum() for b, e in begin_ends(pn)]),
                 "Take the mean over the batch and the scale's tokens, so scales of different sizes compare."),
    ]
    return _run("per_scale_cross_entropy", per_scale_cross_entropy, reference, cases,
                lambda got, exp: _compare_tensor(got, exp, "the per-scale losses", atol=1e-5, rtol=1e-5, names=("scale",)),
                mistakes, hint="loss_BL = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction='none')"
                               ".view(B, L); then one mean per scale's slice.", verbose=verbose)


def check_drop_labels(drop_labels, verbose: bool = True) -> CheckResult:
    """``drop_labels(labels_B, drop_rate, num_classes, generator) -> (B,)``: each label replaced by the
    "unconditional" class ``num_classes`` with probability ``drop_rate`` (independently), the others unchanged; random
    numbers from ``generator`` only; the input tensor not modified. This is the class dropout of ``VAR.forward`` in
    training mode (``torch.rand(B) < cond_drop_rate``) that makes classifier-free guidance possible.

    A statistical check (no reference tensor): the dropped fraction must be within 5 standard deviations of
    drop_rate on 20,000 labels, and equal generators must give equal results."""
    exercise = "drop_labels"
    if not callable(drop_labels):
        return _not_callable(exercise, drop_labels, verbose)
    B, num_classes = 20_000, 10
    for rate in (0.1, 0.5, 0.0, 1.0):
        labels = torch.arange(B) % num_classes
        original = labels.clone()
        try:
            out = drop_labels(labels, rate, num_classes, _gen(7))
            again = drop_labels(labels.clone(), rate, num_classes, _gen(7))
        except NotImplementedError:
            return _not_attempted(exercise, verbose)
        except Exception as err:
            return _raised(exercise, f"drop_rate={rate}", err, "torch.where(torch.rand(B, generator=generator) < "
                           "drop_rate, num_classes, labels).", verbose)
        problem = None
        try:
            out = _as_tensor(out, "the labels")
            if tuple(out.shape) != (B,):
                problem = f"expected shape ({B},), got {tuple(out.shape)}"
            elif out.is_floating_point() or out.dtype == torch.bool:
                problem = f"expected integer labels, got {out.dtype}"
            elif not torch.equal(labels, original):
                problem = ("the input tensor was modified in place. Return a new tensor (torch.where(drop, "
                           "num_classes, labels)) -- the caller still needs the true labels")
            else:
                kept = out == original
                dropped = ~kept
                if bool((out[dropped] != num_classes).any()):
                    wrong = int(out[dropped & (out != num_classes)][0])
                    problem = (f"a dropped label must become the unconditional class {num_classes} (the extra row of "
                               f"class_emb), got {wrong}")
                else:
                    frac = float(dropped.double().mean()) if rate < 1.0 else float((out == num_classes).double().mean())
                    sd = math.sqrt(max(rate * (1 - rate), 1e-12) / B)
                    if abs(frac - rate) > 5 * sd + 1e-9:
                        flip = abs(frac - (1 - rate)) <= 5 * sd + 1e-9
                        problem = (f"with drop_rate={rate} you dropped {frac:.1%} of the labels" + (
                            " -- that is 1 - drop_rate: compare with `torch.rand(B) < drop_rate` to drop with "
                            "probability drop_rate" if flip else ""))
                    elif not torch.equal(out, _as_tensor(again, "the labels")):
                        problem = ("two calls with equally seeded generators gave different results: draw the random "
                                   "numbers with torch.rand(B, generator=generator)")
        except _Mismatch as m:
            problem = str(m)
        if problem:
            return _report(CheckResult(exercise, "wrong", f"[{exercise}] WRONG with drop_rate={rate}: {problem}."),
                           verbose)
    return _report(CheckResult(exercise, "passed", f"[{exercise}] PASSED: drop rates 0.1, 0.5, 0 and 1 behave as "
                               f"VAR's class dropout."), verbose)


# ============================================================================================== lesson 7
def _keep_cases():
    g = _gen(3)
    soft = torch.rand(8, 8, generator=g)
    return [
        _Case("a central hole on the official 16x16 grid", (editing.box_mask(16, 0.3, 0.3, 0.7, 0.7).logical_not().float(),
                                                             OFFICIAL_PATCH_NUMS)),
        _Case("keep the left half, official schedule", (editing.box_mask(16, 0, 0, 1, 0.5).float(), OFFICIAL_PATCH_NUMS)),
        _Case("a soft (0..1) mask, patch_nums (1, 2, 3, 4, 5, 6, 8)", (soft, (1, 2, 3, 4, 5, 6, 8))),
    ]


def check_scale_keep_masks(scale_keep_masks, verbose: bool = True) -> CheckResult:
    """``scale_keep_masks(keep_HW, patch_nums) -> [bool (pn_k, pn_k) for every scale]``: the official rule carrying a
    final-grid keep mask (1 = keep) to every scale: bilinear resize (align_corners=False), then > 0.5; scales with
    pn_k^2 <= 3 tokens are kept entirely. Reference: ``varlite.editing.scale_keep_masks``."""
    def reference(keep, pn):
        return [m[0] for m in editing.scale_keep_masks(keep, pn)]

    def variant(keep, pn, *, mode="bilinear", ge=False, tiny=True, align=False, invert=False):
        out = []
        for p in pn:
            if tiny and p * p <= 3:
                out.append(torch.ones(p, p, dtype=torch.bool))
                continue
            kw = {"align_corners": align} if mode == "bilinear" else {}
            r = F.interpolate(keep.float()[None, None], size=(p, p), mode=mode, **kw)[0, 0]
            m = r >= 0.5 if ge else r > 0.5
            out.append(~m if invert else m)
        return out

    mistakes = [
        _Mistake("nearest-neighbour resizing", lambda k, pn: variant(k, pn, mode="nearest"),
                 "Resize with mode='bilinear', align_corners=False, then threshold at 0.5 (as the official demo)."),
        _Mistake("area resizing", lambda k, pn: variant(k, pn, mode="area"),
                 "Resize with mode='bilinear', align_corners=False, then threshold at 0.5 (as the official demo)."),
        _Mistake("bilinear with align_corners=True", lambda k, pn: variant(k, pn, align=True),
                 "align_corners=False (the F.interpolate default the official code uses)."),
        _Mistake(">= 0.5 instead of > 0.5", lambda k, pn: variant(k, pn, ge=True),
                 "A position exactly half covered is generated, not kept: use > 0.5."),
        _Mistake("resizing the tiny first scales too", lambda k, pn: variant(k, pn, tiny=False),
                 "Scales with pn^2 <= 3 tokens (the 1x1 start) are kept entirely: a 1x1 resize would sample the mask's "
                 "centre and, for a central hole, regenerate the whole image's layout."),
        _Mistake("the inverted mask", lambda k, pn: variant(k, pn, invert=True),
                 "True means keep the known token (where keep_HW is 1)."),
    ]
    return _run("scale_keep_masks", scale_keep_masks, reference, _keep_cases(),
                lambda got, exp: _compare_list(got, exp, "the keep masks", lambda k: f"scale {k + 1} "
                                               f"({exp[k].shape[0]}x{exp[k].shape[0]})", names=("row", "col"),
                                               kind_hint="Return bool masks (True = keep)."),
                mistakes, hint="for each pn: F.interpolate(keep[None, None].float(), size=(pn, pn), mode='bilinear', "
                               "align_corners=False)[0, 0] > 0.5, except pn * pn <= 3 -> all True.", verbose=verbose)


def _overrides_case(seed: int, patch_nums, hole):
    g = _gen(seed)
    tokens = [torch.randint(0, 64, (p, p), generator=g) for p in patch_nums]
    return tokens, hole, tuple(patch_nums)


def check_inpaint_overrides(inpaint_overrides, verbose: bool = True) -> CheckResult:
    """``inpaint_overrides(source_tokens, hole_HW, patch_nums) -> {k: (tokens_k, keep_k)}`` for every scale k: the
    source's (pn_k, pn_k) token map and the bool keep mask from the official rule applied to 1 - hole (1 = the region
    to regenerate). Reference: ``editing.scale_keep_masks(1 - hole, patch_nums)``, as ``editing.inpaint`` builds it."""
    pn7 = (1, 2, 3, 4, 5, 6, 8)
    cases = [_Case("a central hole, patch_nums (1, 2, 3, 4, 5, 6, 8)", _overrides_case(0, pn7, editing.box_mask(8, .25, .25, .75, .75).float())),
             _Case("the right third, official schedule", _overrides_case(1, OFFICIAL_PATCH_NUMS, editing.box_mask(16, 0, 2 / 3, 1, 1).float()))]

    def build(tokens, hole, pn, keep_from):
        masks = [m[0] for m in editing.scale_keep_masks(keep_from(hole), pn)]
        return {k: (tokens[k], masks[k]) for k in range(len(pn))}

    def compare(got, exp):
        if not isinstance(got, dict):
            raise _Mismatch(f"expected a dict {{scale: (tokens, keep)}}, got {type(got).__name__}")
        if sorted(got) != sorted(exp):
            raise _Mismatch(f"expected the scales {sorted(exp)} as keys, got {sorted(got, key=str)}")
        for k in sorted(exp):
            if not (isinstance(got[k], (tuple, list)) and len(got[k]) == 2):
                raise _Mismatch(f"scale {k}: expected a pair (tokens, keep)")
            _compare_tensor(got[k][0], exp[k][0], f"the tokens of scale {k}", names=("row", "col"))
            _compare_tensor(got[k][1], exp[k][1], f"the keep mask of scale {k}", names=("row", "col"),
                            kind_hint="Return bool masks (True = keep the source token).")

    mistakes = [_Mistake("keeping the hole instead of everything around it",
                         lambda t, h, pn: build(t, h, pn, lambda x: x),
                         "The hole is what the model regenerates; the keep mask is 1 - hole.")]
    return _run("inpaint_overrides", inpaint_overrides, lambda t, h, pn: build(t, h, pn, lambda x: 1 - x), cases,
                compare, mistakes, hint="keep = editing.scale_keep_masks(1 - hole, patch_nums); "
                                        "{k: (source_tokens[k], keep[k][0]) for k in range(K)}.", verbose=verbose)


# ============================================================================================== lesson 8
def _cost_cfg(patch_nums) -> VARConfig:
    return VARConfig(vocab_size=16, z_channels=4, patch_nums=tuple(patch_nums), num_classes=1, depth=1, embed_dim=1,
                     num_heads=1)


def check_attention_pairs(attention_pairs, verbose: bool = True) -> CheckResult:
    """``attention_pairs(patch_nums, kv_cache) -> int``: query-key pairs VAR's attention computes for one image (one
    layer, no CFG). With a KV cache step k has l_k = pn_k^2 queries over L_k keys (all tokens up to its scale); without
    it, step k recomputes the whole prefix: L_k queries over L_k keys.
    Reference: ``complexity.var_cost`` (attention FLOPs / (4 C depth))."""
    specs = [((1, 2), True), ((1, 2), False), ((1, 2, 3, 4), True), ((1, 2, 3, 4), False),
             (OFFICIAL_PATCH_NUMS, True), (OFFICIAL_PATCH_NUMS, False)]
    cases = [_Case(f"patch_nums={pn}, kv_cache={kv}", (pn, kv)) for pn, kv in specs]

    def reference(pn, kv):
        cost = complexity.var_cost(_cost_cfg(pn))
        return (cost.attention_flops_cached if kv else cost.attention_flops_uncached) // 4

    def cum(pn):
        return list(itertools.accumulate(p * p for p in pn))

    mistakes = [
        _Mistake("each scale attending only to its own tokens (block-diagonal)",
                 lambda pn, kv: sum((p * p) ** 2 for p in pn),
                 "A scale's queries see the keys of every coarser scale too: L_k = pn_1^2 + ... + pn_k^2 keys."),
        _Mistake("keys of the coarser scales only (the own scale left out)",
                 lambda pn, kv: sum(p * p * (Lk - p * p) for p, Lk in zip(pn, cum(pn))) if kv else
                 sum((Lk - p * p) ** 2 for p, Lk in zip(pn, cum(pn))),
                 "The block-causal mask lets a token see its own scale as well: L_k includes pn_k^2."),
        _Mistake("the cached count for both cases",
                 lambda pn, kv: sum(p * p * Lk for p, Lk in zip(pn, cum(pn))),
                 "Without a cache every step recomputes all L_k tokens seen so far: L_k queries x L_k keys."),
        _Mistake("the uncached count for both cases",
                 lambda pn, kv: sum(Lk * Lk for Lk in cum(pn)),
                 "With a cache only the step's new tokens are queries: l_k = pn_k^2 queries x L_k keys."),
    ]
    return _run("attention_pairs", attention_pairs, reference, cases,
                lambda got, exp: _compare_int(got, exp, "the number of pairs"), mistakes,
                hint="keep a running total L_k of the tokens so far; add pn_k^2 * L_k (cache) or L_k^2 (no cache).",
                verbose=verbose)


def check_raster_pairs(raster_pairs, verbose: bool = True) -> CheckResult:
    """``raster_pairs(n, kv_cache) -> int``: query-key pairs of a raster-scan AR transformer generating an n x n grid
    (n^2 steps; step i = 1..n^2 has i keys: 1 query with a cache, i queries without).
    Reference: ``complexity.raster_ar_cost``."""
    cases = [_Case(f"n={n}, kv_cache={kv}", (n, kv)) for n in (1, 2, 4, 16) for kv in (True, False)]

    def reference(n, kv):
        cost = complexity.raster_ar_cost(_cost_cfg((n,)))
        return (cost.attention_flops_cached if kv else cost.attention_flops_uncached) // 4

    mistakes = [
        _Mistake("i running over 0 .. n^2 - 1 (off by one)",
                 lambda n, kv: sum(i if kv else i * i for i in range(n * n)),
                 "Step i (1-based) sees i keys: the first token sees itself. Sum over i = 1 .. n^2."),
        _Mistake("n steps instead of n^2",
                 lambda n, kv: sum(i if kv else i * i for i in range(1, n + 1)),
                 "An n x n grid has n^2 tokens, generated one per step."),
    ]
    return _run("raster_pairs", raster_pairs, reference, cases,
                lambda got, exp: _compare_int(got, exp, "the number of pairs"), mistakes,
                hint="sum(i for i in 1..n^2) with a cache, sum(i^2) without.", verbose=verbose)


def check_fit_power_law(fit_power_law, verbose: bool = True) -> CheckResult:
    """``fit_power_law(x, y) -> float``: the exponent a of y ~ c x^a, by a least-squares line through (log x, log y).
    Reference: ``np.polyfit(np.log(x), np.log(y), 1)[0]``."""
    rng = np.random.default_rng(0)
    specs = [(np.array([2., 4, 8, 16, 32]), 4.0, 3.0, 0.0), (np.array([1., 2, 3, 5, 8, 13]), -0.2, 2.0, 0.02),
             (np.geomspace(18e6, 2e9, 12), -0.23, 1e3, 0.01)]
    cases = [_Case(f"{len(x)} points, true exponent {a}", (x, c * x ** a * np.exp(noise * rng.standard_normal(len(x)))))
             for x, a, c, noise in specs]

    def reference(x, y):
        return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])

    mistakes = [
        _Mistake("a line through (x, log y) (x not in log scale)",
                 lambda x, y: float(np.polyfit(np.asarray(x, float), np.log(y), 1)[0]),
                 "A power law is a straight line on log-log axes: take the log of *both* x and y."),
        _Mistake("log10 for one axis and ln for the other",
                 lambda x, y: float(np.polyfit(np.log10(x), np.log(y), 1)[0]),
                 "Use the same logarithm on both axes (then the base does not matter)."),
        _Mistake("the intercept instead of the slope",
                 lambda x, y: float(np.polyfit(np.log(x), np.log(y), 1)[1]),
                 "np.polyfit(..., 1) returns [slope, intercept]: the exponent is the slope, [0]."),
    ]
    return _run("fit_power_law", fit_power_law, reference, cases,
                lambda got, exp: _compare_float(got, exp, "the exponent", rtol=1e-6), mistakes,
                hint="np.polyfit(np.log(x), np.log(y), 1)[0].", verbose=verbose)


# ============================================================================================== lesson 9
@functools.lru_cache(maxsize=8)
def _meta_var(depth: int) -> VAR:
    with torch.device("meta"):
        return VAR(official_var(depth), VQVAE(official_vqvae()))


def _param_groups(depth: int) -> dict[str, int]:
    """Parameter counts of the official VAR-d{depth} by part (from the model itself, built on the meta device)."""
    var = _meta_var(depth)
    groups: dict[str, int] = {}
    for name, p in var.named_parameters():
        if name.startswith("blocks."):
            part = name.split(".")[2]
            key = {"attn": "attention (all blocks)", "ffn": "FFN (all blocks)", "ada_lin": "AdaLN (all blocks)"}.get(part, part)
        elif name.startswith("head_nm"):
            key = "the AdaLN before the head"
        elif name.startswith("head."):
            key = "the output head"
        else:
            key = "embeddings (class, position, level, word, start)"
        groups[key] = groups.get(key, 0) + p.numel()
    C = var.config.embed_dim
    groups["(buffer) attn_bias_for_masking"] = -var.L * var.L
    groups["(buffer) lvl_1L"] = -var.L
    groups["(buffers) zero_k_bias of every block"] = -depth * C
    return groups


def check_var_param_count(var_param_count, verbose: bool = True) -> CheckResult:
    """``var_param_count(depth) -> int``: the number of learned parameters of the official VAR-d{depth} (width
    C = 64 depth, V = 4096, Cv = 32, 1000 classes, patch_nums 1..16, L = 680). Reference: the model itself,
    ``sum(p.numel() for p in VAR(official_var(depth), ...).parameters())`` (built on the meta device: no memory)."""
    cases = [_Case(f"depth={d} (C={64 * d})", (d,)) for d in (16, 20, 24, 30)]

    def reference(depth):
        return sum(p.numel() for p in _meta_var(depth).parameters())

    def diagnose(got, expected, args):
        """Name the parts of the model whose parameter counts add up to the difference."""
        try:
            diff = expected - int(got)
        except (TypeError, ValueError):
            return None
        groups = _param_groups(int(args[0]))
        for r in range(1, 4):
            for combo in itertools.combinations(groups, r):
                if sum(groups[n] for n in combo) == diff:
                    return (f"the difference is exactly {' + '.join(combo)} "
                            f"({'missing' if diff > 0 else 'counted, but they are buffers, not parameters'}).")
        return None

    return _run("var_param_count", var_param_count, reference, cases,
                lambda got, exp: _compare_int(got, exp, "the parameter count"), diagnose=diagnose,
                hint="per block: attention 4C^2 + 3C + H, FFN 8C^2 + 5C, AdaLN 6C^2 + 6C; then the embeddings, the "
                     "head's AdaLN (2C^2 + 2C) and the head (C V + V).", verbose=verbose)


def check_attention_capture_bytes(attention_capture_bytes, verbose: bool = True) -> CheckResult:
    """``attention_capture_bytes(patch_nums, depth, num_heads, batch=1, bytes_per_value=4) -> [int per scale]``: the
    memory ``generate_steps(capture_attention=True)`` keeps: at scale k, depth x heads x l_k queries x L_k keys values
    per image. Reference: ``complexity.attention_capture_bytes``."""
    specs = [((1, 2, 3), 2, 2, 1, 4), (OFFICIAL_PATCH_NUMS, 16, 16, 1, 4), (OFFICIAL_PATCH_NUMS, 16, 16, 2, 2)]
    cases = [_Case(f"patch_nums={pn}, depth={d}, heads={h}, batch={b}, {nb} bytes", (pn, d, h, b, nb))
             for pn, d, h, b, nb in specs]

    def cfg(pn, d, h):
        return VARConfig(vocab_size=16, z_channels=4, patch_nums=tuple(pn), num_classes=1, depth=d, embed_dim=h,
                         num_heads=h)

    def reference(pn, d, h, b, nb):
        return complexity.attention_capture_bytes(cfg(pn, d, h), b, nb)

    def cum(pn):
        return list(itertools.accumulate(p * p for p in pn))

    mistakes = [
        _Mistake("L_k x L_k per scale (all queries so far, not just this scale's)",
                 lambda pn, d, h, b, nb: [d * h * Lk * Lk * b * nb for Lk in cum(pn)],
                 "Only this scale's l_k = pn_k^2 queries are computed at step k (the others are cached)."),
        _Mistake("the heads left out", lambda pn, d, h, b, nb: [d * p * p * Lk * b * nb for p, Lk in zip(pn, cum(pn))],
                 "Every head has its own weights: multiply by num_heads."),
        _Mistake("the layers left out", lambda pn, d, h, b, nb: [h * p * p * Lk * b * nb for p, Lk in zip(pn, cum(pn))],
                 "Every layer has its own weights: multiply by depth."),
    ]

    def compare(got, exp):
        if not isinstance(got, (list, tuple)) or len(got) != len(exp):
            raise _Mismatch(f"expected a list of {len(exp)} ints (one per scale), got {got!r:.80}")
        for k, (g, e) in enumerate(zip(got, exp)):
            _compare_int(g, e, f"scale {k + 1}")

    return _run("attention_capture_bytes", attention_capture_bytes, reference, cases, compare, mistakes,
                hint="for each scale: depth * num_heads * pn_k**2 * L_k * bytes_per_value * batch.", verbose=verbose)
