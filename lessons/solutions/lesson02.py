"""Lesson 2 -- multi-scale residual quantization."""
import numpy as np
import torch.nn.functional as F


def residual_quantize(f_BCvHW, quantizer):
    """Token maps r_1..r_K (each (B, pn_k^2)) of f, coarse to fine, each quantizing what the previous ones left."""
    B, Cv, H, W = f_BCvHW.shape
    K = len(quantizer.patch_nums)
    rest = f_BCvHW.clone()
    token_maps = []
    for si, pn in enumerate(quantizer.patch_nums):
        z_BCvhw = rest if si == K - 1 else F.interpolate(rest, size=(pn, pn), mode="area")
        idx_Bl = quantizer.nearest_code(z_BCvhw.permute(0, 2, 3, 1).reshape(-1, Cv)).view(B, pn * pn)
        h_BCvhw = quantizer.lookup(idx_Bl, pn)
        rest = rest - quantizer.upsample_and_phi(h_BCvhw, si)     # what scale si explained leaves the residual
        token_maps.append(idx_Bl)
    return token_maps


def phi_index(si, num_scales):
    """Which of the 4 shared phi convs scale si (0-based) of num_scales uses: the nearest tick to si / (K - 1)."""
    ticks = np.linspace(1 / 12, 11 / 12, 4)          # float64, as upstream (ties are decided by its rounding)
    at = si / (num_scales - 1) if num_scales > 1 else 0.0
    return int(np.argmin(np.abs(ticks - at)))
