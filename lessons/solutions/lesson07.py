"""Lesson 7 -- zero-shot editing: the keep mask of every scale."""
import torch
import torch.nn.functional as F


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
