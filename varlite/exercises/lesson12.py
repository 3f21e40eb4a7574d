"""Checks of lesson 12 -- the paper's claims, small: the paper's form of a scaling law fitted to published numbers,
and the Frechet distance (the FID formula) whose sample-size bias the lesson measures."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..baselines import fit_power_law
from ..train import metrics
from ._check import CheckResult, Shortcut, _Case, _Mismatch, _Mistake, _compare_float, _run, exercise

exercise("fit_paper_form", "12.1",
         concept="The paper writes its laws as y = (beta N)^alpha. On log-log axes that is the straight line "
                 "log y = alpha log N + alpha log beta: fit the line, then read alpha and beta off it.",
         approach="Least squares through (log N, log y): the slope is alpha; the intercept is alpha log beta, so "
                  "beta = exp(intercept / alpha).",
         code="u, v = np.log(N), np.log(y); du, dv = u - u.mean(), v - v.mean(); alpha = (du * dv).sum() / "
              "(du * du).sum(); beta = np.exp((v.mean() - alpha * u.mean()) / alpha); return float(alpha), "
              "float(beta)",
         shortcuts=[Shortcut(np, "polyfit"), Shortcut(np.linalg, "lstsq"), Shortcut(np.polynomial.polynomial, "polyfit"),
                    Shortcut(torch.linalg, "lstsq")])
exercise("frechet_distance", "12.2",
         concept="Fit a Gaussian to each set of features (mean and covariance) and measure the Frechet distance of "
                 "the two Gaussians: ||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)).",
         approach="Means over the rows; covariances of the features with the unbiased 1/(n - 1) (torch.cov of the "
                  "transposed set); the trace of (S_a S_b)^(1/2) is the sum of the square roots of the eigenvalues of "
                  "A S_b A with A = S_a^(1/2), a symmetric matrix (torch.linalg.eigh); compute in float64.",
         code="a, b = fa.double(), fb.double(); Sa, Sb = torch.cov(a.T), torch.cov(b.T); w, U = "
              "torch.linalg.eigh(Sa); A = (U * w.clamp_min(0).sqrt()) @ U.T; tr = torch.linalg.eigvalsh(A @ Sb @ "
              "A).clamp_min(0).sqrt().sum(); return float((a.mean(0) - b.mean(0)).square().sum() + Sa.trace() + "
              "Sb.trace() - 2 * tr)",
         shortcuts=[Shortcut(metrics, "frechet_distance")])


def _paper_form(N, y) -> tuple[float, float]:
    """(alpha, beta) of y = (beta N)^alpha, from ``baselines.fit_power_law``'s y = a N^b: alpha = b, beta = a^(1/b)."""
    fit = fit_power_law(N, y)
    return fit.b, fit.a ** (1 / fit.b)


def _compare_pair(got, expected) -> None:
    if not isinstance(got, (tuple, list)) or len(got) != 2:
        raise _Mismatch(f"expected a tuple (alpha, beta) of two numbers, got {got!r:.80}")
    for g, e, what in zip(got, expected, ("the exponent alpha", "beta")):
        _compare_float(g, e, what, rtol=1e-6)


def check_fit_paper_form(fit_paper_form, verbose: bool = True) -> CheckResult:
    """``fit_paper_form(N, y) -> (alpha, beta)``: y ~ (beta N)^alpha by least squares on log-log axes, written from
    sums (np.polyfit and lstsq solvers are refused). Reference: ``varlite.baselines.fit_power_law`` converted."""
    rng = np.random.default_rng(12)
    specs = [(np.array([310e6, 600e6, 1.0e9, 2.0e9]), -0.3, 3e-8, 0.0, False),
             (np.geomspace(18e6, 2e9, 8), -0.05, 2e-3, 0.01, False),
             (np.array([2., 5, 11, 40, 90]), 1.5, 0.3, 0.2, True),
             (np.geomspace(1e3, 1e6, 6), -0.5, 7.0, 0.05, True)]
    cases = [_Case(f"{len(N)} points, true alpha {alpha}", (N, (beta * N) ** alpha * np.exp(noise * rng.standard_normal(len(N)))),
                   hidden=hidden) for N, alpha, beta, noise, hidden in specs]

    def line(u, v):
        """(slope, intercept) of the least-squares line through (u, v)."""
        slope = float(((u - u.mean()) * (v - v.mean())).sum() / ((u - u.mean()) ** 2).sum())
        return slope, float(v.mean() - slope * u.mean())

    def logs(N, y):
        return np.log(np.asarray(N, float)), np.log(np.asarray(y, float))

    def beta_from(slope, intercept):
        return slope, math.exp(intercept / slope)

    mistakes = [
        _Mistake("the prefactor c of y = c N^alpha returned as beta (c = beta^alpha)",
                 lambda N, y: (lambda s, i: (s, math.exp(i)))(*line(*logs(N, y))),
                 "In the paper's form the prefactor sits inside the power: c = beta^alpha, so beta = c^(1/alpha)."),
        _Mistake("beta = exp(intercept * alpha) instead of exp(intercept / alpha)",
                 lambda N, y: (lambda s, i: (s, math.exp(i * s)))(*line(*logs(N, y))),
                 "log y = alpha log N + alpha log beta: the intercept is alpha log beta; divide it by alpha."),
        _Mistake("the line through (N, log y) (N not in log scale)",
                 lambda N, y: beta_from(*line(np.asarray(N, float), logs(N, y)[1])),
                 "A power law is a straight line on log-log axes: take the log of both N and y."),
    ]
    return _run("fit_paper_form", fit_paper_form, _paper_form, cases, _compare_pair, mistakes, verbose=verbose)


def _features(n: int, d: int, seed: int, shift: float, scale: float) -> torch.Tensor:
    """n correlated d-dim feature vectors: a random linear map of Gaussian noise, shifted and scaled."""
    g = torch.Generator().manual_seed(seed)
    mix_dd = torch.randn(d, d, generator=g) / math.sqrt(d)
    return (torch.randn(n, d, generator=g) @ mix_dd) * scale + shift


def _frechet_variant(fa, fb, correction: int = 1, sqrt: bool = True, covariances: bool = True,
                     squared: bool = True) -> float:
    """The Frechet distance with one step changed (for diagnosing mistakes); defaults reproduce the library."""
    a, b = fa.double(), fb.double()
    mean = (a.mean(0) - b.mean(0)).square().sum()
    if not squared:
        mean = mean.sqrt()
    if not covariances:
        return float(mean)
    cov_a, cov_b = torch.cov(a.T, correction=correction), torch.cov(b.T, correction=correction)
    if sqrt:
        w, U = torch.linalg.eigh(cov_a)
        sqrt_a = (U * w.clamp_min(0).sqrt()) @ U.T
        cross = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp_min(0).sqrt().sum()
    else:
        cross = (cov_a @ cov_b).trace()
    return float(mean + cov_a.trace() + cov_b.trace() - 2 * cross)


def check_frechet_distance(frechet_distance, verbose: bool = True) -> CheckResult:
    """``frechet_distance(feat_a_ND, feat_b_MD) -> float``: the Frechet distance of Gaussians fitted to two feature
    sets (unbiased covariances). Reference: ``varlite.train.metrics.frechet_distance`` (refused inside)."""
    specs = [(50, 40, 4, 0.0, 1.0, 1.0, False), (200, 120, 16, 0.3, 1.0, 1.5, False), (30, 30, 64, 0.0, 0.5, 0.5, False),
             (80, 300, 24, 1.0, 2.0, 0.7, True), (20, 25, 8, -0.2, 1.0, 3.0, True)]
    cases = [_Case(f"N={n}, M={m} vectors of D={d} features", (_features(n, d, 1 + i, 0.0, s_a),
                                                              _features(m, d, 100 + i, shift, s_b)), hidden=hidden)
             for i, (n, m, d, shift, s_a, s_b, hidden) in enumerate(specs)]
    mistakes = [
        _Mistake("the population covariance (divided by N instead of N - 1)",
                 lambda a, b: _frechet_variant(a, b, correction=0),
                 "Estimate each covariance without bias, dividing by N - 1 (torch.cov's default)."),
        _Mistake("tr(S_a S_b) without the matrix square root",
                 lambda a, b: _frechet_variant(a, b, sqrt=False),
                 "The cross term is 2 tr((S_a S_b)^(1/2)): the trace of the matrix square root, not of the product."),
        _Mistake("the distance between the means only",
                 lambda a, b: _frechet_variant(a, b, covariances=False),
                 "Add the covariance terms tr(S_a + S_b - 2 (S_a S_b)^(1/2)): two sets with equal means can differ."),
        _Mistake("||mu_a - mu_b|| instead of its square",
                 lambda a, b: _frechet_variant(a, b, squared=False),
                 "The mean term is the squared Euclidean distance ||mu_a - mu_b||^2."),
    ]
    return _run("frechet_distance", frechet_distance, metrics.frechet_distance, cases,
                lambda got, exp: _compare_float(got, exp, "the Frechet distance", rtol=1e-4), mistakes,
                verbose=verbose)
