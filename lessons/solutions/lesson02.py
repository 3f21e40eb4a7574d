"""Lesson 2 -- multi-scale residual quantization."""
import torch.nn.functional as F


def residual_quantize(f_BCvHW, quantizer):
    """Token maps r_1..r_K (each (B, pn_k^2)) of f, coarse to fine, each quantizing what the previous ones left."""
    B, Cv, H, W = f_BCvHW.shape
    K = len(quantizer.patch_nums)
    rest = f_BCvHW.clone()
    token_maps = []
    for si, pn in enumerate(quantizer.patch_nums):
        target_BCvhw = rest if si == K - 1 else F.interpolate(rest, size=(pn, pn), mode="area")
        idx_Bl = quantizer.nearest_code(target_BCvhw.permute(0, 2, 3, 1).reshape(-1, Cv)).view(B, pn * pn)
        z_BCvhw = quantizer.lookup(idx_Bl, pn)                  # e[r_k], the paper's z_k
        rest = rest - quantizer.upsample_and_phi(z_BCvhw, si)     # what scale si explained leaves the rest
        token_maps.append(idx_Bl)
    return token_maps


def f_hat_from_tokens(token_maps, quantizer):
    """f_hat after every scale: the running sum of the contributions phi_k(bicubic upsample(e[r_k]))."""
    H = quantizer.patch_nums[-1]
    f_hat, f_hats = 0, []
    for si, (idx_Bl, pn) in enumerate(zip(token_maps, quantizer.patch_nums)):
        z_BCvhw = quantizer.lookup(idx_Bl, pn)                  # e[r_k], the paper's z_k
        up_BCvHW = z_BCvhw if pn == H else F.interpolate(z_BCvhw, size=(H, H), mode="bicubic")
        f_hat = f_hat + quantizer.phi(up_BCvHW, si)           # this scale's contribution
        f_hats.append(f_hat)
    return f_hats
