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

Per-row settings: cfg, top_k, top_p and the generator are either one value for the whole batch or a list / tuple
of B values, one per row (requests of several people run as one batch). Row b of such a call gets exactly what a
batch of one with row b's values gets: its own guidance strength, its own filters, and its random numbers from its
own generator, drawn in the same order.
"""
from __future__ import annotations

from typing import Sequence

import torch


def is_per_row(value) -> bool:
    """True for a list or tuple (one value per row), False for one value shared by every row."""
    return isinstance(value, (list, tuple))


def one_or_per_row(value):
    """A setting in its simplest form: one value stays one value; a list / tuple whose rows all agree becomes that one
    value (the batch then takes the one-value path); otherwise a tuple of the rows' values."""
    if not is_per_row(value):
        return value
    return value[0] if all(v == value[0] for v in value) else tuple(value)


def seeded_generator(seed: int | None, device: torch.device | str = "cpu") -> torch.Generator:
    """The one source of randomness of a generation: a ``torch.Generator`` seeded with ``seed`` (a fresh random
    seed if None), so equal seeds give equal samples."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed if seed is not None else int(torch.randint(0, 2 ** 62, ()).item()))
    return generator


def scale_fraction(si: int, num_scales: int) -> float:
    """si / (K - 1): how far scale si is along the schedule, 0 at the first scale, 1 at the last (0 if K = 1)."""
    return si / (num_scales - 1) if num_scales > 1 else 0.0


def cfg_strength(cfg: float | Sequence[float], si: int, num_scales: int) -> float | list[float]:
    """t = cfg * si / (K - 1): the guidance strength used at scale si (a list of B strengths for B per-row cfgs)."""
    fraction = scale_fraction(si, num_scales)
    return [c * fraction for c in cfg] if is_per_row(cfg) else cfg * fraction


def guide(logits_2BlV: torch.Tensor, t: float | Sequence[float]) -> torch.Tensor:
    """Mix conditional rows [:B] and unconditional rows [B:]: (1 + t) cond - t uncond, with one t for every row or
    a sequence of B (row b mixed with t_b). 1 + t_b is computed in float64, as Python computes 1 + t for one value,
    so that a row's logits equal the one-value call's bit for bit."""
    B = logits_2BlV.shape[0] // 2
    cond_BlV, uncond_BlV = logits_2BlV[:B], logits_2BlV[B:]
    if not is_per_row(t):
        return (1 + t) * cond_BlV - t * uncond_BlV
    t_B11 = torch.tensor(t, dtype=torch.float64, device=logits_2BlV.device).view(B, 1, 1)
    return (1 + t_B11).to(logits_2BlV.dtype) * cond_BlV - t_B11.to(logits_2BlV.dtype) * uncond_BlV


def kth_largest(logits_BlV: torch.Tensor, top_k: int | Sequence[int]) -> torch.Tensor:
    """(B, l, 1): the k-th largest logit of every position (k capped at V), with one k for every row or a sequence
    of B; a row with k = 0 (top-k off) gets -inf. Top-k keeps the logits >= this value (ties with it stay)."""
    V = logits_BlV.shape[-1]
    if not is_per_row(top_k):
        return logits_BlV.topk(min(top_k, V), dim=-1, largest=True, sorted=False)[0].amin(dim=-1, keepdim=True)
    k_B11 = torch.tensor(top_k, device=logits_BlV.device).clamp(max=V).view(-1, 1, 1)
    largest_BlK = logits_BlV.topk(max(int(k_B11.max()), 1), dim=-1, largest=True, sorted=True)[0]   # K: largest k
    kth_Bl1 = largest_BlK.gather(-1, (k_B11 - 1).clamp(min=0).expand(-1, logits_BlV.shape[1], 1))
    return kth_Bl1.masked_fill(k_B11 == 0, -torch.inf)


def outside_nucleus(logits_BlV: torch.Tensor, top_p: float | Sequence[float]) -> torch.Tensor:
    """(B, l, V) bool: True for the tokens outside the top-p nucleus, the unlikely tail whose probabilities sum to at
    most 1 - p (the most likely token always stays in), with one p for every row or a sequence of B (a row with p = 0
    loses nothing). 1 - p_b is computed in float64, as Python computes it for one value."""
    sorted_logits_BlV, sorted_idx_BlV = logits_BlV.sort(dim=-1, descending=False)
    cumulative_BlV = sorted_logits_BlV.softmax(dim=-1).cumsum_(dim=-1)
    if is_per_row(top_p):
        p_B11 = torch.tensor(top_p, dtype=torch.float64, device=logits_BlV.device).view(-1, 1, 1)
        remove_sorted_BlV = (cumulative_BlV <= (1 - p_B11).to(cumulative_BlV.dtype)) & (p_B11 > 0)
    else:
        remove_sorted_BlV = cumulative_BlV <= (1 - top_p)
    remove_sorted_BlV[..., -1:] = False                                                     # keep the best token
    return remove_sorted_BlV.scatter(-1, sorted_idx_BlV, remove_sorted_BlV)                # back to token order


def filter_top_k_top_p(logits_BlV: torch.Tensor, top_k: int | Sequence[int] = 0,
                       top_p: float | Sequence[float] = 0.0) -> torch.Tensor:
    """Set to -inf every logit outside the top-k (top_k > 0) and outside the top-p nucleus (top_p > 0). Each is one
    value for every row or a sequence of B (0 = off for that row); top-k is applied first."""
    if is_per_row(top_k) or top_k > 0:
        logits_BlV = logits_BlV.masked_fill(logits_BlV < kth_largest(logits_BlV, top_k), -torch.inf)
    if is_per_row(top_p) or top_p > 0:
        logits_BlV = logits_BlV.masked_fill(outside_nucleus(logits_BlV, top_p), -torch.inf)
    return logits_BlV


def is_greedy(top_k: int | Sequence[int], more_smooth: bool) -> bool | list[bool]:
    """Whether sampling may take the argmax instead of drawing: top-k 1 without smoothing leaves one token per
    position (one flag, or one per row for per-row top_k)."""
    if is_per_row(top_k):
        return [k == 1 and not more_smooth for k in top_k]
    return top_k == 1 and not more_smooth


def sample_tokens(logits_BlV: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None,
                  greedy: bool | Sequence[bool] = False) -> torch.Tensor:
    """One token per position from softmax(logits): (B, l, V) -> (B, l).

    ``generator``: one for the whole batch (one draw over all its rows), or a sequence of B, one per row: row b then
    draws from generator b exactly what a batch of one draws. ``greedy`` (top-k 1, where one token per position is
    left; for every row or per row) takes the argmax instead of drawing: the same token (between exactly tied
    logits, the first) without V random numbers per position. With anything per row, rows are sampled one by one.
    """
    B, l, V = logits_BlV.shape
    if is_per_row(generator) or is_per_row(greedy):
        generator_B = generator if is_per_row(generator) else [generator] * B
        greedy_B = greedy if is_per_row(greedy) else [greedy] * B
        return torch.cat([sample_tokens(logits_BlV[b:b + 1], generator_B[b], greedy_B[b]) for b in range(B)])
    if greedy:
        return logits_BlV.argmax(dim=-1)
    return torch.multinomial(logits_BlV.softmax(dim=-1).view(-1, V), num_samples=1, replacement=True,
                             generator=generator).view(B, l)


def gumbel_noise(like_BlV: torch.Tensor, generator: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
    """g = -log(Exp(1)), i.i.d. Gumbel noise shaped like ``like_BlV``, from one generator, or row b from generator b
    for a sequence of B (the numbers a batch of one would draw)."""
    if is_per_row(generator):
        return torch.cat([gumbel_noise(like_BlV[b:b + 1], row_generator) for b, row_generator in enumerate(generator)])
    exponential_BlV = torch.empty_like(like_BlV, memory_format=torch.legacy_contiguous_format)
    return -exponential_BlV.exponential_(generator=generator).log()


def gumbel_softmax(logits_BlV: torch.Tensor, tau: float,
                   generator: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
    """softmax((logits + g) / tau), g Gumbel noise drawn from ``generator`` (one, or one per row)."""
    return ((logits_BlV + gumbel_noise(logits_BlV, generator)) / tau).softmax(dim=-1)


def smoothing_temperature(si: int, num_scales: int) -> float:
    """tau = max(0.27 (1 - 0.95 si/(K-1)), 0.005) (the MaskGIT-style schedule used upstream)."""
    return max(0.27 * (1 - scale_fraction(si, num_scales) * 0.95), 0.005)


def smoothed_embedding(logits_BlV: torch.Tensor, si: int, num_scales: int, codebook_VCv: torch.Tensor,
                       generator: torch.Generator | Sequence[torch.Generator] | None) -> torch.Tensor:
    """Gumbel smoothing: (B, l, Cv) mixes of codebook vectors, softmax((logits * (1 + si/(K-1)) + g) / tau) @ codebook,
    instead of the sampled tokens' own vectors."""
    sharpen = 1 + scale_fraction(si, num_scales)
    weights_BlV = gumbel_softmax(logits_BlV.mul(sharpen), smoothing_temperature(si, num_scales), generator)
    return weights_BlV @ codebook_VCv.unsqueeze(0)
