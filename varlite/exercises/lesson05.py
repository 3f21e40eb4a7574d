"""Checks of lesson 5 -- sampling: classifier-free guidance and top-k/top-p."""
from __future__ import annotations

import math

import torch

from .. import sampling
from ._check import CheckResult, _Case, _Mistake, _compare_tensor, _run, _gen


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
