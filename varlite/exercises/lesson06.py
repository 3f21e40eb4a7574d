"""Checks of lesson 6 -- training: per-scale loss and class dropout."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ._check import CheckResult, _Case, _Mistake, _Mismatch, _as_tensor, _compare_tensor, _report, _not_callable, _not_attempted, _raised, _run, _gen


def _ce_case(seed: int, B: int, patch_nums, V: int):
    g = _gen(seed)
    L = sum(p * p for p in patch_nums)
    return torch.randn(B, L, V, generator=g) * 2, torch.randint(0, V, (B, L), generator=g), tuple(patch_nums)


def check_per_scale_cross_entropy(per_scale_cross_entropy, verbose: bool = True) -> CheckResult:
    """``per_scale_cross_entropy(logits_BLV, target_BL, patch_nums) -> (K,)``: the mean cross-entropy of the tokens of
    each scale (scale k owns positions [sum_{j<k} pn_j^2, sum_{j<=k} pn_j^2)).
    Reference: ``varlite.train.metrics.per_scale_loss_acc``."""
    from ..train.metrics import per_scale_loss_acc
    specs = [(1, (1, 2), 5), (2, (1, 2, 3, 4), 16), (3, (1, 2, 4, 8), 32)]
    cases = [_Case(f"B={B}, patch_nums={pn}, V={V}", _ce_case(s, B, pn, V)) for s, (B, pn, V) in enumerate(specs)]

    def begin_ends(pn, square=True):
        out, cur = [], 0
        for p in pn:
            n = p * p if square else p
            out.append((cur, cur + n))
            cur += n
        return out

    def reference(logits, target, pn):
        return per_scale_loss_acc(logits, target, begin_ends(pn))[1]

    def ce_BL(logits, target):
        return F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction="none").view(target.shape)

    mistakes = [
        _Mistake("the mean over all L tokens for every scale",
                 lambda x, t, pn: ce_BL(x, t).mean().repeat(len(pn)),
                 "Average each scale over its own positions only: loss_BL[:, begin:end].mean()."),
        _Mistake("pn_k positions per scale instead of pn_k^2",
                 lambda x, t, pn: torch.stack([ce_BL(x, t)[:, b:e].mean() for b, e in begin_ends(pn, square=False)]),
                 "Scale k has pn_k ** 2 tokens: begin/end advance by pn_k ** 2."),
        _Mistake("the sum over a scale's tokens instead of the mean",
                 lambda x, t, pn: torch.stack([ce_BL(x, t)[:, b:e].sum() for b, e in begin_ends(pn)]),
                 "Take the mean over the batch and the scale's tokens, so scales of different sizes compare."),
    ]
    return _run("per_scale_cross_entropy", per_scale_cross_entropy, reference, cases,
                lambda got, exp: _compare_tensor(got, exp, "the per-scale losses", atol=1e-5, rtol=1e-5, names=("scale",)),
                mistakes, hint="loss_BL = F.cross_entropy(logits.flatten(0, 1), target.flatten(), reduction='none')"
                               ".view(B, L); then one mean per scale's slice.", verbose=verbose)


def check_drop_labels(drop_labels, verbose: bool = True) -> CheckResult:
    """``drop_labels(labels_B, drop_rate, num_classes, generator) -> (B,)``: each label replaced by the
    "unconditional" class ``num_classes`` with probability ``drop_rate`` (independently), the others unchanged; random
    numbers from ``generator`` only; the input tensor not modified. This is the class dropout of ``VAR.forward`` in
    training mode (``torch.rand(B) < cond_drop_rate``) that makes classifier-free guidance possible.

    A statistical check (no reference tensor): the dropped fraction must be within 5 standard deviations of
    drop_rate on 20,000 labels, and equal generators must give equal results."""
    exercise = "drop_labels"
    if not callable(drop_labels):
        return _not_callable(exercise, drop_labels, verbose)
    B, num_classes = 20_000, 10
    for rate in (0.1, 0.5, 0.0, 1.0):
        labels = torch.arange(B) % num_classes
        original = labels.clone()
        try:
            out = drop_labels(labels, rate, num_classes, _gen(7))
            again = drop_labels(labels.clone(), rate, num_classes, _gen(7))
        except NotImplementedError:
            return _not_attempted(exercise, verbose)
        except Exception as err:
            return _raised(exercise, f"drop_rate={rate}", err, "torch.where(torch.rand(B, generator=generator) < "
                           "drop_rate, num_classes, labels).", verbose)
        problem = None
        try:
            out = _as_tensor(out, "the labels")
            if tuple(out.shape) != (B,):
                problem = f"expected shape ({B},), got {tuple(out.shape)}"
            elif out.is_floating_point() or out.dtype == torch.bool:
                problem = f"expected integer labels, got {out.dtype}"
            elif not torch.equal(labels, original):
                problem = ("the input tensor was modified in place. Return a new tensor (torch.where(drop, "
                           "num_classes, labels)) -- the caller still needs the true labels")
            else:
                kept = out == original
                dropped = ~kept
                if bool((out[dropped] != num_classes).any()):
                    wrong = int(out[dropped & (out != num_classes)][0])
                    problem = (f"a dropped label must become the unconditional class {num_classes} (the extra row of "
                               f"class_emb), got {wrong}")
                else:
                    frac = float(dropped.double().mean()) if rate < 1.0 else float((out == num_classes).double().mean())
                    sd = math.sqrt(max(rate * (1 - rate), 1e-12) / B)
                    if abs(frac - rate) > 5 * sd + 1e-9:
                        flip = abs(frac - (1 - rate)) <= 5 * sd + 1e-9
                        problem = (f"with drop_rate={rate} you dropped {frac:.1%} of the labels" + (
                            " -- that is 1 - drop_rate: compare with `torch.rand(B) < drop_rate` to drop with "
                            "probability drop_rate" if flip else ""))
                    elif not torch.equal(out, _as_tensor(again, "the labels")):
                        problem = ("two calls with equally seeded generators gave different results: draw the random "
                                   "numbers with torch.rand(B, generator=generator)")
        except _Mismatch as m:
            problem = str(m)
        if problem:
            return _report(CheckResult(exercise, "wrong", f"[{exercise}] WRONG with drop_rate={rate}: {problem}."),
                           verbose)
    return _report(CheckResult(exercise, "passed", f"[{exercise}] PASSED: drop rates 0.1, 0.5, 0 and 1 behave as "
                               f"VAR's class dropout."), verbose)
