"""Lesson 7 -- zero-shot editing: keep masks per scale and in-painting overrides."""
import torch
import torch.nn.functional as F

from varlite import editing


def scale_keep_masks(keep_HW, patch_nums):
    """The official rule: bilinear resize of the keep mask to every scale, > 0.5; tiny scales (pn^2 <= 3) kept."""
    masks = []
    for pn in patch_nums:
        if pn * pn <= 3:
            masks.append(torch.ones(pn, pn, dtype=torch.bool))
        else:
            resized = F.interpolate(keep_HW.float()[None, None], size=(pn, pn), mode="bilinear", align_corners=False)
            masks.append(resized[0, 0] > 0.5)
    return masks


def inpaint_overrides(source_tokens, hole_HW, patch_nums):
    """{k: (source tokens of scale k, keep mask of scale k)}: keep everything outside the hole."""
    keeps = editing.scale_keep_masks(1 - hole_HW, patch_nums)
    return {k: (source_tokens[k], keeps[k][0]) for k in range(len(patch_nums))}
