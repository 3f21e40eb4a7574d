"""Checks of lesson 2 -- multi-scale residual quantization."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from ..quantizer import Phi, PhiPartiallyShared
from ._check import CheckResult, _Case, _Mistake, _compare_tensor, _compare_list, _run, _gen, _quantizer


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
