"""Lesson 3 -- next-scale prediction: the teacher-forcing input and the block-causal mask."""
import torch
import torch.nn.functional as F


def teacher_forcing_input(token_maps, quantizer):
    """(B, L - pn_1^2, Cv): for scales 2..K, f_hat after the coarser scales, area-downsampled to the scale's side."""
    pns, H = quantizer.patch_nums, quantizer.patch_nums[-1]
    B, Cv = token_maps[0].shape[0], quantizer.Cv
    f_hat, inputs = 0, []
    for si in range(len(pns) - 1):
        h_BCvhw = quantizer.lookup(token_maps[si], pns[si])
        up_BCvHW = h_BCvhw if pns[si] == H else F.interpolate(h_BCvhw, size=(H, H), mode="bicubic")
        f_hat = f_hat + quantizer.phi(up_BCvHW, si)
        x_BCvhw = F.interpolate(f_hat, size=(pns[si + 1], pns[si + 1]), mode="area")
        inputs.append(x_BCvhw.reshape(B, Cv, -1).transpose(1, 2))
    return torch.cat(inputs, dim=1)


def block_causal_mask(patch_nums):
    """(L, L) bool: query i may attend to key j iff scale(j) <= scale(i)."""
    lvl_L = torch.cat([torch.full((pn * pn,), k) for k, pn in enumerate(patch_nums)])    # the scale of every token
    return lvl_L.view(-1, 1) >= lvl_L.view(1, -1)
