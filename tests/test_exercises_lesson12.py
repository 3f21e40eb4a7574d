"""Lesson 12's checks: the paper's form of a power law (12.1), the Frechet distance (12.2) and the Inception Score
(12.3), each with the mistakes a learner makes, written the way a learner would write them; and torchmetrics'
Inception Score and FID, with a custom network as the lesson uses them, against the lesson's formulas."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from varlite import exercises as ex
from varlite.train.metrics import frechet_distance

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "lessons"))
from solutions.lesson12 import inception_score  # noqa: E402


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



def _score(p, bits=False, marginal=None, exp_of_mean=True):
    """A learner's Inception Score with one step made selectable: the log's base, the marginal p(y), where exp goes.
    (No function in a default argument: the check refuses those.)"""
    p = p.double()
    q = p.mean(0) if marginal is None else marginal
    kl_N = (p * (p.log2() - q.log2()) if bits else p * (p.log() - q.log())).sum(1)
    return float(kl_N.mean().exp() if exp_of_mean else kl_N.exp().mean())


def test_inception_score_written_differently_passes_and_its_mistakes_are_named():
    check = lambda fn: ex.check_inception_score(fn, verbose=False)
    assert check(inception_score).passed
    assert check(_score).passed
    assert check(lambda p: float(2 ** (p * (p.log2() - p.mean(0).log2())).sum(1).mean())).passed    # bits, then 2**
    assert_wrong(check(lambda p: _score(p.mean(0).expand_as(p), marginal=p)), "the divergence reversed")
    assert_wrong(check(lambda p: _score(p, marginal=p.log().mean(0).exp())), "the mean of the logs")
    assert_wrong(check(lambda p: math.log(_score(p))), "without the exp")
    assert_wrong(check(lambda p: _score(p, exp_of_mean=False)), "exp of the mean KL")
    assert_wrong(check(lambda p: _score(p, marginal=torch.full((p.shape[1],), 1 / p.shape[1]))), "uniform, 1/C")
    assert_wrong(check(lambda p: _score(p, marginal=p.mean(1, keepdim=True))), "uniform, 1/C")
    assert_wrong(check(lambda p: _score(p, bits=True)), "in bits (log2)")
    refused = check(lambda p: float(F.kl_div(p.mean(0).log().expand_as(p), p, reduction="batchmean").exp()))
    assert refused.status == "refused" and "kl_div" in refused.message


def test_inception_score_bounds():
    """1 for a collapsed or an unsure classifier; close to C for sure, balanced predictions; never above C."""
    sure_CC = torch.eye(10, dtype=torch.float64) * 0.99 + 0.001
    assert inception_score(sure_CC[[3] * 20]) == pytest.approx(1.0)
    assert inception_score(torch.full((20, 10), 0.1, dtype=torch.float64)) == pytest.approx(1.0)
    assert 9 < inception_score(sure_CC.repeat(3, 1)) < 10


class _Network(torch.nn.Module):
    """A stand-in network for torchmetrics: returns its input, with the ``num_features`` its FID reads."""

    def __init__(self, num_features):
        super().__init__()
        self.num_features = num_features

    def forward(self, x_ND):
        return x_ND


@pytest.mark.filterwarnings("ignore:Metric `InceptionScore` will save all extracted features")
def test_torchmetrics_inception_score_and_fid_equal_the_lessons_formulas():
    """torchmetrics with a custom network (no download): its IS over seeded shuffled splits (std divided by n - 1)
    is the solution's inception_score of the same splits; its FID is varlite's frechet_distance."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.inception import InceptionScore
    g = torch.Generator().manual_seed(3)
    logits_NC = torch.randn(120, 10, generator=g) * 3
    metric = InceptionScore(feature=_Network(10), splits=10)
    metric.update(logits_NC)
    torch.manual_seed(5)
    mean, std = metric.compute()
    torch.manual_seed(5)
    order = torch.randperm(120)
    per_split = torch.tensor([inception_score(part) for part in logits_NC.double().softmax(1)[order].chunk(10)])
    assert float(mean) == pytest.approx(float(per_split.mean()), rel=1e-5)
    assert float(std) == pytest.approx(float(per_split.std()), rel=1e-4)

    real_ND, fake_ND = torch.randn(80, 6, generator=g), torch.randn(70, 6, generator=g) * 1.3 + 0.2
    fid = FrechetInceptionDistance(feature=_Network(6))
    fid.update(real_ND, real=True)
    fid.update(fake_ND, real=False)
    assert float(fid.compute()) == pytest.approx(frechet_distance(real_ND, fake_ND), rel=1e-5)
