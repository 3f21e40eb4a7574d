"""Turning logits into tokens: classifier-free guidance, top-k / top-p filtering, sampling, Gumbel smoothing.

Dimension key: B batch, l tokens of the current scale, V vocabulary, Cv latent channels, K scales; si is the 0-based
scale index of the code (the paper's scale k = si + 1), so si / (K - 1) runs from 0 (first scale) to 1 (last).

- CFG with a linear ramp: t = cfg * si / (K - 1);  logits = (1 + t) * cond - t * uncond
  (no guidance on the first scale, full strength on the last).
- top-k keeps the k largest logits; top-p keeps the smallest set of tokens whose probability mass reaches p
  (the most likely token is always kept). Filtered logits become -inf.
- Sampling draws one token per position from softmax(filtered logits) with the caller's ``torch.Generator``.
- Gumbel smoothing ("more_smooth", for pictures, not for FID): instead of one codebook vector, use the mix
  softmax((logits * (1 + si/(K-1)) + g) / tau) @ codebook with Gumbel noise g and
  tau = max(0.27 (1 - 0.95 si/(K-1)), 0.005).
"""
from __future__ import annotations

import torch


def seeded_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """The one source of randomness of a generation: a ``torch.Generator`` seeded with ``seed`` (a fresh random
    seed if None), so equal seeds give equal samples."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2 ** 62, ()).item()))
    return generator


def scale_fraction(si: int, num_scales: int) -> float:
    """si / (K - 1): how far scale si is along the schedule, 0 at the first scale, 1 at the last (0 if K = 1)."""
    return si / (num_scales - 1) if num_scales > 1 else 0.0


def cfg_strength(cfg: float, si: int, num_scales: int) -> float:
    """t = cfg * si / (K - 1): the guidance strength used at scale si."""
    return cfg * scale_fraction(si, num_scales)


def guide(logits_2BlV: torch.Tensor, t: float) -> torch.Tensor:
    """Mix conditional rows [:B] and unconditional rows [B:]: (1 + t) cond - t uncond."""
    B = logits_2BlV.shape[0] // 2
    return (1 + t) * logits_2BlV[:B] - t * logits_2BlV[B:]


def filter_top_k_top_p(logits_BlV: torch.Tensor, top_k: int = 0, top_p: float = 0.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k (top_k > 0) and outside the top-p nucleus (top_p > 0)."""
    V = logits_BlV.shape[-1]
    if top_k > 0:
        kth_Bl1 = logits_BlV.topk(min(top_k, V), dim=-1, largest=True, sorted=False)[0].amin(dim=-1, keepdim=True)
        logits_BlV = logits_BlV.masked_fill(logits_BlV < kth_Bl1, -torch.inf)
    if top_p > 0:
        sorted_logits_BlV, sorted_idx_BlV = logits_BlV.sort(dim=-1, descending=False)
        remove_sorted_BlV = sorted_logits_BlV.softmax(dim=-1).cumsum_(dim=-1) <= (1 - top_p)   # the unlikely tail
        remove_sorted_BlV[..., -1:] = False                                                     # keep the best token
        remove_BlV = remove_sorted_BlV.scatter(-1, sorted_idx_BlV, remove_sorted_BlV)          # back to token order
        logits_BlV = logits_BlV.masked_fill(remove_BlV, -torch.inf)
    return logits_BlV


def sample_tokens(logits_BlV: torch.Tensor, generator: torch.Generator | None, greedy: bool = False) -> torch.Tensor:
    """One token per position from softmax(logits): (B, l, V) -> (B, l).

    ``greedy`` (top-k 1, where one token per position is left) takes the argmax instead of drawing: the same token
    (between exactly tied logits, the first) without V random numbers per position.
    """
    if greedy:
        return logits_BlV.argmax(dim=-1)
    B, l, V = logits_BlV.shape
    return torch.multinomial(logits_BlV.softmax(dim=-1).view(-1, V), num_samples=1, replacement=True,
                             generator=generator).view(B, l)


def gumbel_softmax(logits_BlV: torch.Tensor, tau: float, generator: torch.Generator | None) -> torch.Tensor:
    """softmax((logits + g) / tau), g = -log(Exp(1)) i.i.d. Gumbel noise drawn from ``generator``."""
    exponential_BlV = torch.empty_like(logits_BlV, memory_format=torch.legacy_contiguous_format)
    gumbel_BlV = -exponential_BlV.exponential_(generator=generator).log()
    return ((logits_BlV + gumbel_BlV) / tau).softmax(dim=-1)


def smoothing_temperature(si: int, num_scales: int) -> float:
    """tau = max(0.27 (1 - 0.95 si/(K-1)), 0.005) (the MaskGIT-style schedule used upstream)."""
    return max(0.27 * (1 - scale_fraction(si, num_scales) * 0.95), 0.005)


def smoothed_embedding(logits_BlV: torch.Tensor, si: int, num_scales: int, codebook_VCv: torch.Tensor,
                       generator: torch.Generator | None) -> torch.Tensor:
    """Gumbel smoothing: (B, l, Cv) mixes of codebook vectors, softmax((logits * (1 + si/(K-1)) + g) / tau) @ codebook,
    instead of the sampled tokens' own vectors."""
    sharpen = 1 + scale_fraction(si, num_scales)
    weights_BlV = gumbel_softmax(logits_BlV.mul(sharpen), smoothing_temperature(si, num_scales), generator)
    return weights_BlV @ codebook_VCv.unsqueeze(0)
