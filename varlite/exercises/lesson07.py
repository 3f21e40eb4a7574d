"""Checks of lesson 7 -- zero-shot editing: the keep mask of every scale."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import editing
from ..core.configs import OFFICIAL_PATCH_NUMS
from ._check import CheckResult, Shortcut, _Case, _compare_list, _gen, _Mistake, _run, exercise

exercise("scale_keep_masks", "7.1",
         concept="Editing keeps the known tokens at every scale, so the final-grid mask must be carried to every "
                 "scale's grid. A coarse token is kept when most of its area is known; the tiny first scales (a "
                 "handful of tokens) are kept entirely, so the layout of the source survives.",
         approach="For each pn: resize the (H, W) mask to (pn, pn) with F.interpolate(mode='bilinear', "
                  "align_corners=False) on a (1, 1, H, W) float tensor, then threshold (> 0.5); scales with pn * pn "
                  "<= 3 get an all-True mask.",
         code="[torch.ones(pn, pn, dtype=torch.bool) if pn * pn <= 3 else F.interpolate(keep.float()[None, None], "
              "size=(pn, pn), mode='bilinear', align_corners=False)[0, 0] > 0.5 for pn in patch_nums]",
         shortcuts=[Shortcut(editing, "scale_keep_masks"), Shortcut(editing, "make_overrides")])


def _keep_cases():
    g = _gen(3)
    soft = torch.rand(8, 8, generator=g)
    return [
        _Case("a central hole on the official 16x16 grid", (editing.box_mask(16, 0.3, 0.3, 0.7, 0.7).logical_not().float(),
                                                             OFFICIAL_PATCH_NUMS)),
        _Case("keep the left half, official schedule", (editing.box_mask(16, 0, 0, 1, 0.5).float(), OFFICIAL_PATCH_NUMS)),
        _Case("a soft (0..1) mask, patch_nums (1, 2, 3, 4, 5, 6, 8)", (soft, (1, 2, 3, 4, 5, 6, 8))),
        _Case("", (editing.box_mask(12, 0.1, 0.5, 0.6, 0.9).float(), (1, 2, 3, 5, 7, 12)), hidden=True),
    ]


def check_scale_keep_masks(scale_keep_masks, verbose: bool = True) -> CheckResult:
    """``scale_keep_masks(keep_HW, patch_nums) -> [bool (pn_k, pn_k) for every scale]``: the official rule carrying a
    final-grid keep mask (1 = keep) to every scale: bilinear resize (align_corners=False), then > 0.5; scales with
    pn_k^2 <= 3 tokens are kept entirely. Reference: ``varlite.editing.scale_keep_masks``."""
    def reference(keep, pn):
        return [m[0] for m in editing.scale_keep_masks(keep, pn)]

    def variant(keep, pn, *, mode="bilinear", ge=False, tiny=True, align=False, invert=False):
        out = []
        for p in pn:
            if tiny and p * p <= 3:
                out.append(torch.ones(p, p, dtype=torch.bool))
                continue
            kw = {"align_corners": align} if mode == "bilinear" else {}
            r = F.interpolate(keep.float()[None, None], size=(p, p), mode=mode, **kw)[0, 0]
            m = r >= 0.5 if ge else r > 0.5
            out.append(~m if invert else m)
        return out

    mistakes = [
        _Mistake("nearest-neighbour resizing", lambda k, pn: variant(k, pn, mode="nearest"),
                 "Resize with mode='bilinear', align_corners=False, then threshold at 0.5 (as the official demo)."),
        _Mistake("area resizing", lambda k, pn: variant(k, pn, mode="area"),
                 "Resize with mode='bilinear', align_corners=False, then threshold at 0.5 (as the official demo)."),
        _Mistake("bilinear with align_corners=True", lambda k, pn: variant(k, pn, align=True),
                 "align_corners=False (the F.interpolate default the official code uses)."),
        _Mistake(">= 0.5 instead of > 0.5", lambda k, pn: variant(k, pn, ge=True),
                 "A position exactly half covered is generated, not kept: use > 0.5."),
        _Mistake("resizing the tiny first scales too", lambda k, pn: variant(k, pn, tiny=False),
                 "Scales with pn^2 <= 3 tokens (the 1x1 start) are kept entirely: a 1x1 resize would sample the mask's "
                 "centre and, for a central hole, regenerate the whole image's layout."),
        _Mistake("the inverted mask", lambda k, pn: variant(k, pn, invert=True),
                 "True means keep the known token (where keep_HW is 1)."),
    ]
    return _run("scale_keep_masks", scale_keep_masks, reference, _keep_cases(),
                lambda got, exp: _compare_list(got, exp, "the keep masks", lambda k: f"scale {k + 1} "
                                               f"({exp[k].shape[0]}x{exp[k].shape[0]})", names=("row", "col"),
                                               kind_hint="Return bool masks (True = keep)."),
                mistakes, verbose=verbose)
