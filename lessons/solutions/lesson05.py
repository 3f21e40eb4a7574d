"""Lesson 5 -- sampling: classifier-free guidance with a ramp, top-k and top-p."""
import torch


def cfg_mix(cond_BlV, uncond_BlV, cfg, si, num_scales):
    """(1 + t) cond - t uncond with t = cfg * si / (K - 1) (0 for K = 1)."""
    t = cfg * si / (num_scales - 1) if num_scales > 1 else 0.0
    return (1 + t) * cond_BlV - t * uncond_BlV


def top_k_top_p(logits_BlV, top_k, top_p):
    """-inf outside the top_k largest logits, then outside the top_p nucleus of what is left."""
    if top_k > 0:
        kth_largest = logits_BlV.topk(min(top_k, logits_BlV.shape[-1]), dim=-1).values[..., -1:]
        logits_BlV = logits_BlV.masked_fill(logits_BlV < kth_largest, -torch.inf)
    if top_p > 0:
        probs, order = logits_BlV.softmax(dim=-1).sort(dim=-1, descending=True)
        mass_before = probs.cumsum(dim=-1) - probs            # probability of the strictly better tokens
        remove_sorted = mass_before >= top_p                  # the best token has mass_before = 0: always kept
        remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
        logits_BlV = logits_BlV.masked_fill(remove, -torch.inf)
    return logits_BlV
