"""Checks of lesson 8 -- cost and scale: counting attention, fitting power laws."""
from __future__ import annotations

import itertools

import numpy as np

from .. import complexity
from ..configs import OFFICIAL_PATCH_NUMS, VARConfig
from ._check import CheckResult, _Case, _Mistake, _compare_int, _compare_float, _run


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
