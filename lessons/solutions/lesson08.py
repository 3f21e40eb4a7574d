"""Lesson 8 -- cost and scale: counting attention pairs, fitting a power law."""
import numpy as np


def attention_pairs(patch_nums, kv_cache):
    """Query-key pairs of VAR's attention for one image (one layer)."""
    total, seen = 0, 0
    for pn in patch_nums:
        new = pn * pn
        seen += new
        total += new * seen if kv_cache else seen * seen
    return total


def fit_power_law(x, y):
    """(a, c, r): y ~ c x^a by least squares on log-log axes, and Pearson's r of (log x, log y), from sums."""
    u, v = np.log(np.asarray(x, float)), np.log(np.asarray(y, float))
    du, dv = u - u.mean(), v - v.mean()
    a = float((du * dv).sum() / (du * du).sum())
    c = float(np.exp(v.mean() - a * u.mean()))
    r = float((du * dv).sum() / np.sqrt((du * du).sum() * (dv * dv).sum()))
    return a, c, r
