"""Turning logits into tokens: classifier-free guidance, top-k / top-p filtering, sampling, Gumbel smoothing.

Dimension key: B batch, l tokens of the current scale, V vocabulary, k scale index (0-based), K scales.

- CFG with a linear ramp: t_k = cfg * k / (K - 1);  logits = (1 + t_k) * cond - t_k * uncond
  (no guidance on the first scale, full strength on the last).
- top-k keeps the k largest logits; top-p keeps the smallest set of tokens whose probability mass reaches p
  (the most likely token is always kept). Filtered logits become -inf.
- Sampling draws one token per position from softmax(filtered logits) with the caller's ``torch.Generator``.
- Gumbel smoothing ("more_smooth", for pictures, not for FID): instead of one codebook vector, use the mix
  softmax((logits * (1 + k/(K-1)) + g) / tau) @ codebook with Gumbel noise g and tau_k = max(0.27 (1 - 0.95 k/(K-1)), 0.005).
"""
from __future__ import annotations

import torch


def cfg_strength(cfg: float, si: int, num_scales: int) -> float:
    """t_k = cfg * k / (K - 1): the guidance strength used at scale k."""
    return cfg * (si / (num_scales - 1) if num_scales > 1 else 0.0)


def guide(logits_2BlV: torch.Tensor, t: float) -> torch.Tensor:
    """Mix conditional rows [:B] and unconditional rows [B:]: (1 + t) cond - t uncond."""
    B = logits_2BlV.shape[0] // 2
    return (1 + t) * logits_2BlV[:B] - t * logits_2BlV[B:]


def filter_top_k_top_p(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k (top_k > 0) and outside the top-p nucleus (top_p > 0)."""
    V = logits_BlV.shape[-1]
    if top_k > 0:
        kth_largest = logits_BlV.topk(min(top_k, V), dim=-1, largest=True, sorted=False)[0].amin(dim=-1, keepdim=True)
        logits_BlV = logits_BlV.masked_fill(logits_BlV < kth_largest, -torch.inf)
    if top_p > 0:
        sorted_logits, sorted_idx = logits_BlV.sort(dim=-1, descending=False)
        sorted_remove = sorted_logits.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)   # the low-probability tail
        sorted_remove[..., -1:] = False                                                   # keep the best token
        logits_BlV = logits_BlV.masked_fill(sorted_remove.scatter(-1, sorted_idx, sorted_remove), -torch.inf)
    return logits_BlV


def sample_tokens(logits_BlV: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """One token per position from softmax(logits): (B, l, V) -> (B, l)."""
    B, l, V = logits_BlV.shape
    return torch.multinomial(logits_BlV.softmax(dim=-1).view(-1, V), num_samples=1, replacement=True,
                             generator=generator).view(B, l)


def gumbel_softmax(logits: torch.Tensor, tau: float, generator: torch.Generator | None) -> torch.Tensor:
    """softmax((logits + g) / tau), g = -log(Exp(1)) i.i.d. Gumbel noise drawn from ``generator``."""
    gumbels = -torch.empty_like(logits, memory_format=torch.legacy_contiguous_format).exponential_(generator=generator).log()
    return ((logits + gumbels) / tau).softmax(dim=-1)


def smoothing_temperature(si: int, num_scales: int) -> float:
    """tau_k = max(0.27 (1 - 0.95 k/(K-1)), 0.005) (the MaskGIT-style schedule used upstream)."""
    ratio = si / (num_scales - 1) if num_scales > 1 else 0.0
    return max(0.27 * (1 - ratio * 0.95), 0.005)
