"""Lesson 12's checks: the paper's form of a power law (12.1) and the Frechet distance (12.2), each with the mistakes
a learner makes, written the way a learner would write them."""
from __future__ import annotations

import math

import numpy as np
import torch

from varlite import exercises as ex


def assert_wrong(result, phrase):
    assert result.status == "wrong" and phrase in result.message, result.message


def _line(N, y):
    u, v = np.log(np.asarray(N, float)), np.log(np.asarray(y, float))
    slope = ((u - u.mean()) * (v - v.mean())).sum() / ((u - u.mean()) ** 2).sum()
    return float(slope), float(v.mean() - slope * u.mean())


def test_fit_paper_form_mistakes():
    check = lambda fn: ex.check_fit_paper_form(fn, verbose=False)
    assert_wrong(check(lambda N, y: (lambda a, i: (a, math.exp(i)))(*_line(N, y))), "c = beta^alpha")
    assert_wrong(check(lambda N, y: (lambda a, i: (a, math.exp(i * a)))(*_line(N, y))), "divide it by alpha")
    assert_wrong(check(lambda N, y: (lambda a, i: (-a, math.exp(-i / a)))(*_line(N, y))), "the exponent alpha")


def _cov(x, correction):
    x = x.double()
    centred = x - x.mean(0)
    return centred.T @ centred / (len(x) - correction)


def _frechet(a, b, correction=1, sqrt=True):
    """A learner's version written with scipy-free matrix maths (eigen-decomposition of each covariance)."""
    Sa, Sb = _cov(a, correction), _cov(b, correction)
    w, U = torch.linalg.eigh(Sa)
    root = (U * w.clamp_min(0).sqrt()) @ U.T
    cross = torch.linalg.eigvalsh(root @ Sb @ root).clamp_min(0).sqrt().sum() if sqrt else (Sa @ Sb).trace()
    return float((a.double().mean(0) - b.double().mean(0)).square().sum() + Sa.trace() + Sb.trace() - 2 * cross)


def test_frechet_distance_written_differently_passes_and_its_mistakes_are_named():
    check = lambda fn: ex.check_frechet_distance(fn, verbose=False)
    assert check(_frechet).passed
    assert_wrong(check(lambda a, b: _frechet(a, b, correction=0)), "population covariance")
    assert_wrong(check(lambda a, b: _frechet(a, b, sqrt=False)), "without the matrix square root")
    assert_wrong(check(lambda a, b: float((a.mean(0) - b.mean(0)).double().square().sum())), "the means only")

