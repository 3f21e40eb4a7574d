"""Checks of lesson 2 -- multi-scale residual quantization."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..core.quantizer import MultiScaleQuantizer
from ..core.vqvae import VQVAE
from ._check import Shortcut, exercise, CheckResult, _Case, _Mistake, _compare_list, _run, _gen, _quantizer


_RQ_PATCH_NUMS = (1, 2, 3, 4, 6)
_ENCODERS = [Shortcut(MultiScaleQuantizer, a) for a in ("f_to_idx_Bl", "f_to_f_hats", "residual_steps", "forward")] + \
    [Shortcut(VQVAE, a) for a in ("img_to_idx", "img_to_f_hats", "encode_steps")]
_DECODERS = [Shortcut(MultiScaleQuantizer, a) for a in ("idx_to_f_hats", "idx_to_var_input", "upsample_and_phi")] + \
    [Shortcut(VQVAE, a) for a in ("idx_to_img", "idx_to_var_input")]

exercise("residual_quantize", "2.1",
         concept="Each scale quantizes what the coarser scales have not explained yet (the rest, f - f_hat), at its "
                 "own resolution; after choosing its tokens it removes its contribution from the rest.",
         approach="Keep a running rest (start: f). For each scale: area-downsample the rest to pn x pn (not the last "
                  "scale), nearest code per position (quantizer.nearest_code on (B*pn*pn, Cv) rows), look the codes "
                  "up (quantizer.lookup), upsample + phi (quantizer.upsample_and_phi) and subtract that from the rest.",
         code="for si, pn in enumerate(q.patch_nums): target = rest if si == K - 1 else F.interpolate(rest, "
              "size=(pn, pn), mode='area'); idx = q.nearest_code(target.permute(0, 2, 3, 1).reshape(-1, Cv)).view(B, "
              "pn * pn); "
              "rest = rest - q.upsample_and_phi(q.lookup(idx, pn), si); maps.append(idx)",
         shortcuts=_ENCODERS)
exercise("f_hat_from_tokens", "2.2",
         concept="Decoding is the encoder's loop without the search: each scale's tokens give vectors, the vectors are "
                 "brought to the full latent size and corrected by phi_k, and f_hat is the running sum of these "
                 "contributions.",
         approach="For each scale si: quantizer.lookup(tokens, pn) -> (B, Cv, pn, pn); F.interpolate to (H, H) with "
                  "mode='bicubic' (the last scale is already H x H); quantizer.phi(up, si); add to a running f_hat "
                  "and keep a copy of f_hat after every scale.",
         code="f_hat = 0; for si, (idx, pn) in enumerate(zip(token_maps, q.patch_nums)): h = q.lookup(idx, pn); "
              "up = h if pn == H else F.interpolate(h, size=(H, H), mode='bicubic'); f_hat = f_hat + q.phi(up, si); "
              "out.append(f_hat)",
         shortcuts=_DECODERS)


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
            target = rest if si == K - 1 else F.interpolate(rest, size=(pn, pn), mode=down)
            idx = q.nearest_code(target.permute(0, 2, 3, 1).reshape(-1, Cv)).view(B, pn * pn)
            z = q.lookup(idx, pn)                      # e[r_k], the paper's z_k
            up = z if si == K - 1 else F.interpolate(z, size=(H, H), mode="bicubic")
            contribution = q.phi(up, si) if phi_in_residual else up
            if subtract:
                rest = rest - contribution
            out.append(idx)
    return out


def check_residual_quantize(residual_quantize, verbose: bool = True) -> CheckResult:
    """``residual_quantize(f_BCvHW, quantizer) -> [idx_Bl for every scale]``: VAR's multi-scale residual
    quantization (Algorithm 1 of the paper). Reference: ``MultiScaleQuantizer.f_to_idx_Bl``."""
    cases = [_Case(f"B={B}, Cv=8, V=64, patch_nums={_RQ_PATCH_NUMS}", _rq_case(s, B), hidden=hidden)
             for s, (B, hidden) in enumerate([(1, False), (3, False), (2, True)])]

    def reference(f, q):
        with torch.no_grad():
            return q.f_to_idx_Bl(f)

    mistakes = [
        _Mistake("never subtracting what each scale explained (every scale quantizes f itself)",
                 lambda f, q: _rq_variant(f, q, subtract=False),
                 "After scale k, update the rest: rest = rest - phi_k(upsample(e[r_k])); scale k+1 quantizes what "
                 "is *left*."),
        _Mistake("subtracting upsample(e[r_k]) without phi_k",
                 lambda f, q: _rq_variant(f, q, phi_in_residual=False),
                 "What scale k adds to f_hat is quantizer.upsample_and_phi(h, si) -- the upsampled vectors *through* "
                 "phi_k -- and the rest must lose exactly that."),
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
                mistakes,
                success="You have written the heart of VAR's tokenizer.", verbose=verbose)


def _tokens_case(seed: int, B: int, patch_nums=_RQ_PATCH_NUMS, V: int = 64, Cv: int = 8):
    q = _quantizer(V, Cv, patch_nums, seed=seed)
    g = _gen(200 + seed)
    return [torch.randint(0, V, (B, pn * pn), generator=g) for pn in patch_nums], q


def _f_hats_variant(token_maps, q, *, phi=True, mode="bicubic", cumulative=True, phi_index_of=None):
    """The prefix decode with one step changed (for diagnosing mistakes); defaults reproduce the library."""
    H, K = q.patch_nums[-1], len(q.patch_nums)
    f_hat, out = 0, []
    with torch.no_grad():
        for si, (idx, pn) in enumerate(zip(token_maps, q.patch_nums)):
            h = q.lookup(idx, pn)
            up = h if si == K - 1 else F.interpolate(h, size=(H, H), mode=mode)
            if phi_index_of is not None:
                contribution = q.quant_resi.qresi_ls[phi_index_of(si, K)](up)
            else:
                contribution = q.phi(up, si) if phi else up
            f_hat = f_hat + contribution if cumulative else contribution
            out.append(f_hat)
    return out


def check_f_hat_from_tokens(f_hat_from_tokens, verbose: bool = True) -> CheckResult:
    """``f_hat_from_tokens(token_maps, quantizer) -> [f_hat_BCvHW after scale 1, ..., after scale K]``: the decoder
    side of the tokenizer. Scale k's *contribution* is phi_k(bicubic upsample of its codebook vectors to H x W);
    f_hat after k scales is the sum of the first k contributions. Reference: ``MultiScaleQuantizer.idx_to_f_hats``."""
    specs = [(1, _RQ_PATCH_NUMS, False), (2, _RQ_PATCH_NUMS, False), (3, (1, 2, 4, 5, 7, 9), True)]
    cases = [_Case(f"B={B}, Cv=8, V=64, patch_nums={pn}", _tokens_case(n, B, pn), hidden=hidden)
             for n, (B, pn, hidden) in enumerate(specs)]

    def reference(token_maps, q):
        with torch.no_grad():
            return q.idx_to_f_hats(token_maps)

    def phi_by_si_over_K(si, K):
        return int(np.argmin(np.abs(np.linspace(1 / 12, 11 / 12, 4) - si / K)))

    mistakes = [
        _Mistake("adding the upsampled vectors without phi_k", lambda t, q: _f_hats_variant(t, q, phi=False),
                 "A scale's contribution goes through its phi convolution after the upsampling: quantizer.phi(up, si)."),
        _Mistake("bilinear upsampling instead of bicubic", lambda t, q: _f_hats_variant(t, q, mode="bilinear"),
                 "VAR upsamples every token map with mode='bicubic' (F.interpolate)."),
        _Mistake("nearest-neighbour upsampling instead of bicubic", lambda t, q: _f_hats_variant(t, q, mode="nearest"),
                 "VAR upsamples every token map with mode='bicubic' (F.interpolate)."),
        _Mistake("returning each scale's contribution instead of the running sum f_hat",
                 lambda t, q: _f_hats_variant(t, q, cumulative=False),
                 "Entry k is f_hat after k scales: the sum of the contributions of scales 1..k, not scale k's alone."),
        _Mistake("picking the phi conv by si / K (the position of scale si is si / (K - 1))",
                 lambda t, q: _f_hats_variant(t, q, phi_index_of=phi_by_si_over_K),
                 "quantizer.phi(h, si) picks the right shared conv for you; if you pick it yourself, the relative "
                 "position of scale si is si / (K - 1), from 0 (first) to 1 (last)."),
    ]
    return _run("f_hat_from_tokens", f_hat_from_tokens, reference, cases,
                lambda got, exp: _compare_list(got, exp, "f_hat", lambda k: f"after scale {k + 1}", atol=1e-5,
                                               rtol=1e-5, names=("b", "channel", "row", "col")),
                mistakes, success="Every prefix of the token maps now decodes: this is how the pyramid is drawn.",
                verbose=verbose)
