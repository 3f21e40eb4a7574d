"""Checks of lesson 8 -- cost and scale: counting attention pairs, fitting a power law from sums."""
from __future__ import annotations

import itertools

import numpy as np
import torch

from .. import complexity
from ..core.configs import OFFICIAL_PATCH_NUMS, VARConfig
from ._check import CheckResult, Shortcut, _Case, _Mismatch, _Mistake, _compare_float, _compare_int, _run, exercise

exercise("attention_pairs", "8.1",
         concept="At each step the new queries attend to every key they may see: with a KV cache only the step's new "
                 "tokens are queries; without it the step recomputes every token seen so far. The block-causal mask "
                 "decides what 'may see' means.",
         approach="Walk through the scales keeping a running count L_k of the tokens up to and including scale k; "
                  "add l_k * L_k pairs with a cache (l_k = pn_k^2 new queries) and L_k * L_k without one.",
         code="total = seen = 0; for pn in patch_nums: seen += pn * pn; total += pn * pn * seen if kv_cache else "
              "seen * seen; return total",
         shortcuts=[Shortcut(complexity, a) for a in ("var_cost", "raster_ar_cost", "compare", "scaling_rows")])
exercise("fit_power_law", "8.2",
         concept="A power law y = c x^a is a straight line on log-log axes (log y = log c + a log x). Least squares "
                 "gives the line; Pearson's r says how close to a line the points lie (not whether the law holds "
                 "beyond them).",
         approach="With u = log x, v = log y: slope a = sum((u - mean u)(v - mean v)) / sum((u - mean u)^2); "
                  "intercept = mean v - a mean u, c = exp(intercept); r = the same covariance over the product of the "
                  "two root sums of squares.",
         code="u, v = np.log(x), np.log(y); du, dv = u - u.mean(), v - v.mean(); a = (du * dv).sum() / (du ** 2).sum(); "
              "return a, np.exp(v.mean() - a * u.mean()), (du * dv).sum() / np.sqrt((du ** 2).sum() * (dv ** 2).sum())",
         shortcuts=[Shortcut(np, "polyfit"), Shortcut(np, "corrcoef"), Shortcut(np.linalg, "lstsq"),
                    Shortcut(np.polynomial.polynomial, "polyfit"), Shortcut(torch.linalg, "lstsq")])


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
    cases = [_Case(f"patch_nums={pn}, kv_cache={kv}", (pn, kv)) for pn, kv in specs] + \
        [_Case("", ((1, 3, 4, 7), kv), hidden=True) for kv in (True, False)]

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
                verbose=verbose)


def _power_law_fit(x, y):
    """(exponent a, prefactor c, Pearson r of log x and log y) by numpy: the reference."""
    lx, ly = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    a, log_c = np.polyfit(lx, ly, 1)
    return float(a), float(np.exp(log_c)), float(np.corrcoef(lx, ly)[0, 1])


def check_fit_power_law(fit_power_law, verbose: bool = True) -> CheckResult:
    """``fit_power_law(x, y) -> (a, c, r)``: the least-squares fit of y ~ c x^a on log-log axes (exponent a,
    prefactor c) and the Pearson correlation r of (log x, log y) -- written from sums, without np.polyfit, a lstsq
    solver or np.corrcoef (refused). Reference: ``np.polyfit(log x, log y, 1)`` and ``np.corrcoef``."""
    rng = np.random.default_rng(0)
    specs = [(np.array([2., 4, 8, 16, 32]), 4.0, 3.0, 0.0, False), (np.array([1., 2, 3, 5, 8, 13]), -0.2, 2.0, 0.02, False),
             (np.geomspace(18e6, 2e9, 12), -0.23, 1e3, 0.01, False), (np.array([3., 7, 20, 50, 90, 400]), 1.7, 0.05, 0.3, True)]
    cases = [_Case(f"{len(x)} points, true exponent {a}", (x, c * x ** a * np.exp(noise * rng.standard_normal(len(x)))),
                   hidden=hidden) for x, a, c, noise, hidden in specs]

    def compare(got, exp):
        if not isinstance(got, (tuple, list)) or len(got) != 3:
            raise _Mismatch(f"expected a tuple (a, c, r) of three numbers, got {got!r:.80}")
        for g, e, what in zip(got, exp, ("the exponent a", "the prefactor c", "the correlation r")):
            _compare_float(g, e, what, rtol=1e-6)

    def lin(lx, ly):
        slope = np.sum((lx - lx.mean()) * (ly - ly.mean())) / np.sum((lx - lx.mean()) ** 2)
        return slope, ly.mean() - slope * lx.mean()

    def variant(x, y, *, log_x=True, log10_x=False, intercept_as_c=False, r_squared=False):
        lx = np.log10(x) if log10_x else (np.log(x) if log_x else np.asarray(x, float))
        ly = np.log(y)
        slope, icpt = lin(lx, ly)
        r = float(np.corrcoef(lx, ly)[0, 1])
        return float(slope), float(icpt if intercept_as_c else np.exp(icpt)), r * abs(r) if r_squared else r

    mistakes = [
        _Mistake("a line through (x, log y) (x not in log scale)", lambda x, y: variant(x, y, log_x=False),
                 "A power law is a straight line on log-log axes: take the log of *both* x and y."),
        _Mistake("log10 for x and ln for y", lambda x, y: variant(x, y, log10_x=True),
                 "Use the same logarithm on both axes (then the base does not matter for the exponent)."),
        _Mistake("the intercept of the line returned as c (log c instead of c)",
                 lambda x, y: variant(x, y, intercept_as_c=True),
                 "The line is log y = log c + a log x: its intercept is log c, so c = exp(intercept)."),
        _Mistake("r squared (with the sign of r) instead of r", lambda x, y: variant(x, y, r_squared=True),
                 "Pearson's r = cov(log x, log y) / (std(log x) std(log y)), not its square."),
    ]
    return _run("fit_power_law", fit_power_law, _power_law_fit, cases, compare, mistakes, verbose=verbose)
