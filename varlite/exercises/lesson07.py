"""Checks of lesson 7 -- zero-shot editing: keep masks and in-painting overrides."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .. import editing
from ..configs import OFFICIAL_PATCH_NUMS
from ._check import CheckResult, _Case, _Mistake, _Mismatch, _compare_tensor, _compare_list, _run, _gen


def _keep_cases():
    g = _gen(3)
    soft = torch.rand(8, 8, generator=g)
    return [
        _Case("a central hole on the official 16x16 grid", (editing.box_mask(16, 0.3, 0.3, 0.7, 0.7).logical_not().float(),
                                                             OFFICIAL_PATCH_NUMS)),
        _Case("keep the left half, official schedule", (editing.box_mask(16, 0, 0, 1, 0.5).float(), OFFICIAL_PATCH_NUMS)),
        _Case("a soft (0..1) mask, patch_nums (1, 2, 3, 4, 5, 6, 8)", (soft, (1, 2, 3, 4, 5, 6, 8))),
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
                mistakes, hint="for each pn: F.interpolate(keep[None, None].float(), size=(pn, pn), mode='bilinear', "
                               "align_corners=False)[0, 0] > 0.5, except pn * pn <= 3 -> all True.", verbose=verbose)


def _overrides_case(seed: int, patch_nums, hole):
    g = _gen(seed)
    tokens = [torch.randint(0, 64, (p, p), generator=g) for p in patch_nums]
    return tokens, hole, tuple(patch_nums)


def check_inpaint_overrides(inpaint_overrides, verbose: bool = True) -> CheckResult:
    """``inpaint_overrides(source_tokens, hole_HW, patch_nums) -> {k: (tokens_k, keep_k)}`` for every scale k: the
    source's (pn_k, pn_k) token map and the bool keep mask from the official rule applied to 1 - hole (1 = the region
    to regenerate). Reference: ``editing.scale_keep_masks(1 - hole, patch_nums)``, as ``editing.inpaint`` builds it."""
    pn7 = (1, 2, 3, 4, 5, 6, 8)
    cases = [_Case("a central hole, patch_nums (1, 2, 3, 4, 5, 6, 8)", _overrides_case(0, pn7, editing.box_mask(8, .25, .25, .75, .75).float())),
             _Case("the right third, official schedule", _overrides_case(1, OFFICIAL_PATCH_NUMS, editing.box_mask(16, 0, 2 / 3, 1, 1).float()))]

    def build(tokens, hole, pn, keep_from):
        masks = [m[0] for m in editing.scale_keep_masks(keep_from(hole), pn)]
        return {k: (tokens[k], masks[k]) for k in range(len(pn))}

    def compare(got, exp):
        if not isinstance(got, dict):
            raise _Mismatch(f"expected a dict {{scale: (tokens, keep)}}, got {type(got).__name__}")
        if sorted(got) != sorted(exp):
            raise _Mismatch(f"expected the scales {sorted(exp)} as keys, got {sorted(got, key=str)}")
        for k in sorted(exp):
            if not (isinstance(got[k], (tuple, list)) and len(got[k]) == 2):
                raise _Mismatch(f"scale {k}: expected a pair (tokens, keep)")
            _compare_tensor(got[k][0], exp[k][0], f"the tokens of scale {k}", names=("row", "col"))
            _compare_tensor(got[k][1], exp[k][1], f"the keep mask of scale {k}", names=("row", "col"),
                            kind_hint="Return bool masks (True = keep the source token).")

    mistakes = [_Mistake("keeping the hole instead of everything around it",
                         lambda t, h, pn: build(t, h, pn, lambda x: x),
                         "The hole is what the model regenerates; the keep mask is 1 - hole.")]
    return _run("inpaint_overrides", inpaint_overrides, lambda t, h, pn: build(t, h, pn, lambda x: 1 - x), cases,
                compare, mistakes, hint="keep = editing.scale_keep_masks(1 - hole, patch_nums); "
                                        "{k: (source_tokens[k], keep[k][0]) for k in range(K)}.", verbose=verbose)
