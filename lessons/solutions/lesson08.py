"""Lesson 8 -- cost and scale: counting attention, fitting power laws."""
import numpy as np


def attention_pairs(patch_nums, kv_cache):
    """Query-key pairs of VAR's attention for one image (one layer)."""
    total, seen = 0, 0
    for pn in patch_nums:
        new = pn * pn
        seen += new
        total += new * seen if kv_cache else seen * seen
    return total


def raster_pairs(n, kv_cache):
    """Query-key pairs of a raster-scan AR transformer on an n x n grid (one layer)."""
    return sum(i if kv_cache else i * i for i in range(1, n * n + 1))


def fit_power_law(x, y):
    """The exponent a of y ~ c x^a (least squares on log-log axes)."""
    return float(np.polyfit(np.log(np.asarray(x, float)), np.log(np.asarray(y, float)), 1)[0])
