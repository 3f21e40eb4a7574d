"""Checks of lesson 12 -- the paper's claims, small: the paper's form of a scaling law fitted to published numbers,
the Frechet distance (the FID formula) whose sample-size bias the lesson measures, and the Inception Score.

Dimension key: N images (rows), C classes, D features."""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

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
exercise("inception_score", "12.3",
         concept="IS = exp( E_x KL(p(y|x) || p(y)) ): large when every image's class distribution p(y|x) is confident "
                 "and the images together cover the classes (the marginal p(y), the mean of the rows, is spread out). "
                 "It lies between 1 and the number of classes.",
         approach="p(y) is the mean of the N rows (dim 0). The KL of row n is sum_c p_nc (log p_nc - log p(y)_c), "
                  "in natural logs; average the N row KLs, then take exp of that mean. Write the KL as that sum "
                  "(F.kl_div is refused); work in float64.",
         code="p = probs_NC.double(); p_y = p.mean(0); kl_N = (p * (p.log() - p_y.log())).sum(1); return "
              "float(kl_N.mean().exp())",
         shortcuts=[Shortcut(F, "kl_div")])


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


def _kl_rows(p_NC: torch.Tensor, q_C: torch.Tensor, log=torch.log) -> torch.Tensor:
    """KL(p_n || q) of every row: sum_c p_nc (log p_nc - log q_c), in the unit of ``log`` (nats for torch.log)."""
    return (p_NC * (log(p_NC) - log(q_C))).sum(1)


def _inception_score(probs_NC: torch.Tensor) -> float:
    """exp( mean_n KL(p(y|x_n) || p(y)) ) with p(y) = mean_n p(y|x_n), in float64 (Salimans et al. 2016)."""
    p = probs_NC.double()
    return float(_kl_rows(p, p.mean(0)).mean().exp())


def _class_probabilities(n: int, c: int, seed: int, sharpness: float, prior_skew: float) -> torch.Tensor:
    """n rows of class probabilities over c classes: softmax of Gaussian logits times ``sharpness`` (larger: more
    confident rows), plus ``prior_skew`` times a per-class offset (larger: some classes predicted more often)."""
    g = torch.Generator().manual_seed(seed)
    offset_C = torch.linspace(0, 1, c, dtype=torch.float64) * prior_skew
    return torch.softmax(torch.randn(n, c, generator=g, dtype=torch.float64) * sharpness + offset_C, dim=1)


def check_inception_score(inception_score, verbose: bool = True) -> CheckResult:
    """``inception_score(probs_NC) -> float``: exp( mean_n KL(p(y|x_n) || p(y)) ) of an N x C matrix of class
    probabilities (every row sums to 1, every entry positive), p(y) the mean of the rows, natural logs. The
    reference is written here (varlite has no Inception Score of its own); F.kl_div is refused inside."""
    specs = [(8, 4, 1.0, 0.5, False), (10, 10, 3.0, 1.0, False), (200, 10, 2.5, 2.0, True), (50, 1000, 4.0, 3.0, True),
             (30, 2, 1.5, 0.8, True)]
    cases = [_Case(f"N={n} images, C={c} classes", (_class_probabilities(n, c, 120 + i, sharp, skew),), hidden=hidden)
             for i, (n, c, sharp, skew, hidden) in enumerate(specs)]
    collapsed = _class_probabilities(1, 5, 7, 2.0, 0.0).expand(6, 5).clone()
    cases.insert(2, _Case("N=6 identical rows (a collapsed generator), C=5", (collapsed,)))

    def marginal_of(p_NC):
        return p_NC.double().mean(0)

    mistakes = [
        _Mistake("KL(p(y) || p(y|x)) (the divergence reversed)",
                 lambda p: float(_kl_rows(marginal_of(p).expand_as(p), p.double()).mean().exp()),
                 "The KL runs from each image's distribution to the marginal: sum_c p(c|x) log(p(c|x) / p(c)), "
                 "weighted by p(c|x), not by p(c)."),
        _Mistake("log p(y) as the mean of log p(y|x) (the mean of the logs instead of the log of the mean)",
                 lambda p: float((p.double() * (p.double().log() - p.double().log().mean(0))).sum(1).mean().exp()),
                 "p(y) is the mean of the probabilities, p(y) = mean_x p(y|x); take its log afterwards."),
        _Mistake("the mean KL without the exp",
                 lambda p: float(_kl_rows(p.double(), marginal_of(p)).mean()),
                 "The score is exp of the mean KL (a number between 1 and the number of classes)."),
        _Mistake("the mean of exp(KL) over the images instead of exp of the mean KL",
                 lambda p: float(_kl_rows(p.double(), marginal_of(p)).exp().mean()),
                 "Average the KLs first, then exponentiate once: exp(E_x KL), not E_x exp(KL)."),
        _Mistake("p(y) uniform, 1/C (a class prior, or the mean over the classes, dim 1), not the mean of these rows",
                 lambda p: float(_kl_rows(p.double(), torch.full((p.shape[1],), 1 / p.shape[1],
                                                                  dtype=torch.float64)).mean().exp()),
                 "p(y) is the marginal of the images being scored: the mean of the rows (dim 0), so that a generator "
                 "that draws one class only scores 1."),
        _Mistake("the KL in bits (log2) exponentiated with exp",
                 lambda p: float(_kl_rows(p.double(), marginal_of(p), torch.log2).mean().exp()),
                 "exp undoes natural logs: use torch.log (or 2 ** of a KL in bits, which is the same number)."),
    ]
    return _run("inception_score", inception_score, _inception_score, cases,
                lambda got, exp: _compare_float(got, exp, "the Inception Score", rtol=1e-5), mistakes,
                verbose=verbose)
