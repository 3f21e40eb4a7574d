"""Lesson 3 -- next-scale prediction: the block-causal mask."""
import torch


def scale_of_tokens(patch_nums):
    """(L,) int64: the 0-based scale of every token of the flattened sequence."""
    return torch.cat([torch.full((pn * pn,), k, dtype=torch.long) for k, pn in enumerate(patch_nums)])


def block_causal_mask(patch_nums):
    """(L, L) bool: query i may attend to key j iff scale(j) <= scale(i)."""
    lvl_L = scale_of_tokens(patch_nums)
    return lvl_L.view(-1, 1) >= lvl_L.view(1, -1)
