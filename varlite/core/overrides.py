"""Token overrides: some tokens of some scales chosen in advance, the rest sampled by the generation loop.

Dimension key: B batch, h,w one scale's side, l = h*w tokens of one scale, Cv latent channels, V vocabulary.

``Overrides`` = {scale si (0-based): (tokens (B, h, w), keep (B, h, w) bool)}. At scale si the loop replaces

    r_k[i] <- tokens[i]   and   e[r_k][i] <- e[tokens[i]]    wherever keep[i] is True,

and samples every other position as usual, conditioned on everything fixed so far. This is the whole primitive
behind token surgery and zero-shot editing (``varlite.editing`` builds the overrides; ``VAR.generate_steps``
checks them once with ``check_overrides`` and applies them with ``apply_overrides``).
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn as nn

Overrides = dict[int, tuple[torch.Tensor, torch.Tensor]]


def token_map(tokens, si: int, pn: int, V: int) -> torch.Tensor:
    """One scale's tokens as (B, h, w) int64, from (h, w), (B, h, w) or (B, h*w); checked against [0, V)."""
    tokens = torch.as_tensor(tokens)
    if tokens.is_floating_point() or tokens.dtype == torch.bool:
        raise TypeError(f"tokens of scale {si} must be integer codebook indices; got dtype {tokens.dtype}")
    if tokens.ndim == 2 and tuple(tokens.shape) == (pn, pn):
        tokens = tokens.unsqueeze(0)
    elif tokens.ndim == 2 and tokens.shape[1] == pn * pn:
        tokens = tokens.view(-1, pn, pn)
    elif not (tokens.ndim == 3 and tuple(tokens.shape[1:]) == (pn, pn)):
        raise ValueError(f"tokens of scale {si} must have shape ({pn}, {pn}), (B, {pn}, {pn}) or (B, {pn * pn}); "
                         f"got {tuple(tokens.shape)}")
    if bool(((tokens < 0) | (tokens >= V)).any()):
        raise ValueError(f"tokens of scale {si} must be codebook indices in [0, {V - 1}]; got values in "
                         f"[{int(tokens.min())}, {int(tokens.max())}]")
    return tokens.long()


def keep_map(keep, si: int, pn: int) -> torch.Tensor:
    """One scale's keep mask as (B, h, w) bool, from True/False (the whole map) or a bool / 0-1 (h, w) / (B, h, w)."""
    if isinstance(keep, bool):
        return torch.full((1, pn, pn), keep, dtype=torch.bool)
    keep = torch.as_tensor(keep)
    if keep.ndim == 2:
        keep = keep.unsqueeze(0)
    if keep.ndim != 3 or tuple(keep.shape[1:]) != (pn, pn):
        raise ValueError(f"keep mask of scale {si} must be True/False or have shape ({pn}, {pn}) or (B, {pn}, {pn}); "
                         f"got {tuple(keep.shape)}")
    if keep.dtype != torch.bool:
        if not bool(((keep == 0) | (keep == 1)).all()):
            raise ValueError(f"keep mask of scale {si} must be boolean (or exactly 0/1); for a soft mask on the final "
                             f"grid use scale_keep_masks, which applies the official 0.5 threshold")
        keep = keep.bool()
    return keep


def check_override(patch_nums: Sequence[int], V: int, si, tokens, keep) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens (B, h, w) int64, keep (B, h, w) bool) for scale ``si``, or a ValueError saying what is wrong."""
    K = len(patch_nums)
    if not (isinstance(si, int) and 0 <= si < K):
        raise ValueError(f"override scale {si!r} does not exist: this model has K={K} scales, numbered 0..{K - 1}")
    pn = patch_nums[si]
    tokens_Bhw, keep_Bhw = token_map(tokens, si, pn, V), keep_map(keep, si, pn)
    Bt, Bk = tokens_Bhw.shape[0], keep_Bhw.shape[0]
    if 1 not in (Bt, Bk) and Bt != Bk:
        raise ValueError(f"scale {si}: tokens have batch {Bt} but the keep mask has batch {Bk}; "
                         f"use the same batch size, or 1 for one map shared by the batch")
    return tokens_Bhw, keep_Bhw


def check_overrides(patch_nums: Sequence[int], V: int, overrides: Overrides, batch: int) -> Overrides:
    """The one check of ``generate_steps``' ``overrides`` for a batch of ``batch`` labels.

    ``overrides``: {scale si: (tokens, keep)} in any form ``make_overrides`` accepts per scale. Returns
    {si: (tokens (batch, l) int64, keep (batch, l) bool)}, row-major, a map of batch 1 repeated for every label.
    """
    checked = {}
    for si, (tokens, keep) in overrides.items():
        tokens_Bhw, keep_Bhw = check_override(patch_nums, V, si, tokens, keep)
        extra = sorted({tokens_Bhw.shape[0], keep_Bhw.shape[0]} - {1, batch})
        if extra:
            raise ValueError(f"scale {si}: the token map / keep mask has batch {extra[0]} but the generation has batch "
                             f"{batch} (one row per label); give one map per label, or a map of batch 1 for all")
        l = patch_nums[si] ** 2
        checked[si] = tokens_Bhw.reshape(-1, l).expand(batch, l), keep_Bhw.reshape(-1, l).expand(batch, l)
    return checked


def apply_overrides(overrides: Overrides, si: int, idx_Bl: torch.Tensor, emb_BlCv: torch.Tensor,
                    embedding: nn.Embedding) -> tuple[torch.Tensor, torch.Tensor]:
    """At scale ``si``, where keep is True, the given token and its codebook vector e[token] replace the sampled ones
    (unchanged when ``overrides`` has no entry for si).

    ``overrides``: ``check_overrides``' result; idx_Bl (B, l), emb_BlCv (B, l, Cv).
    """
    if si not in overrides:
        return idx_Bl, emb_BlCv
    tokens_Bl, keep_Bl = (t.to(idx_Bl.device) for t in overrides[si])
    return (torch.where(keep_Bl, tokens_Bl, idx_Bl),
            torch.where(keep_Bl.unsqueeze(-1), embedding(tokens_Bl), emb_BlCv))
