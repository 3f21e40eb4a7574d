"""Lesson 12 -- the paper's claims, small: the paper's form of a power law, the Frechet distance and the Inception
Score."""
import numpy as np
import torch


def fit_paper_form(N, y):
    """(alpha, beta) of y ~ (beta N)^alpha: the least-squares line through (log N, log y), from sums."""
    u, v = np.log(np.asarray(N, float)), np.log(np.asarray(y, float))
    du, dv = u - u.mean(), v - v.mean()
    alpha = float((du * dv).sum() / (du * du).sum())
    intercept = float(v.mean() - alpha * u.mean())           # = alpha * log(beta)
    return alpha, float(np.exp(intercept / alpha))


def frechet_distance(feat_a_ND, feat_b_MD):
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2)) of Gaussians fitted to two feature sets, in float64."""
    a, b = feat_a_ND.double(), feat_b_MD.double()
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)                 # unbiased: divided by N - 1
    w, U = torch.linalg.eigh(cov_a)
    sqrt_a = (U * w.clamp_min(0).sqrt()) @ U.T                    # S_a^(1/2), symmetric
    tr_sqrt = torch.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a).clamp_min(0).sqrt().sum()   # tr (S_a S_b)^(1/2)
    return float((a.mean(0) - b.mean(0)).square().sum() + cov_a.trace() + cov_b.trace() - 2 * tr_sqrt)


def inception_score(probs_NC):
    """exp( mean_n KL(p(y|x_n) || p(y)) ) with p(y) the mean of the N rows; natural logs, in float64."""
    p = probs_NC.double()
    p_y = p.mean(0)                                   # the marginal: how often each class is predicted overall
    kl_N = (p * (p.log() - p_y.log())).sum(1)         # KL(p(y|x_n) || p(y)) of every image, in nats
    return float(kl_N.mean().exp())
