"""Lesson 5 -- sampling: top-k and top-p, then one guided sampling step."""
import torch


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


def sample_scale(logits_2BlV, cfg, si, num_scales, top_k, top_p, generator):
    """One scale of the sampler: ramped guidance on the doubled batch, the filter, one token per position."""
    B, l, V = logits_2BlV.shape[0] // 2, logits_2BlV.shape[1], logits_2BlV.shape[2]
    cond_BlV, uncond_BlV = logits_2BlV[:B], logits_2BlV[B:]
    t = cfg * si / (num_scales - 1) if num_scales > 1 else 0.0
    guided_BlV = uncond_BlV + (1 + t) * (cond_BlV - uncond_BlV)
    guided_BlV = top_k_top_p(guided_BlV, top_k, top_p)
    probs = guided_BlV.softmax(dim=-1).view(-1, V)
    return torch.multinomial(probs, num_samples=1, replacement=True, generator=generator).view(B, l)
