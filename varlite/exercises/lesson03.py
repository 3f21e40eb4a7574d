"""Checks of lesson 3 -- next-scale prediction: the block-causal mask."""
from __future__ import annotations

import torch

from ..configs import OFFICIAL_PATCH_NUMS
from ..var import block_causal_bias, scale_index_of_tokens
from ._check import CheckResult, _Case, _Mistake, _compare_tensor, _run


_MASK_CASES = [(1, 2), (1, 2, 3), (1, 2, 3, 4), (1, 3, 5, 8)]


def check_scale_of_tokens(scale_of_tokens, verbose: bool = True) -> CheckResult:
    """``scale_of_tokens(patch_nums) -> (L,) int64``: the 0-based scale of every token of the flattened sequence.
    Reference: ``varlite.var.scale_index_of_tokens``."""
    cases = [_Case(f"patch_nums={pn}", (pn,)) for pn in _MASK_CASES + [OFFICIAL_PATCH_NUMS]]
    mistakes = [_Mistake("pn_k tokens per scale instead of pn_k^2",
                         lambda pn: torch.cat([torch.full((p,), k) for k, p in enumerate(pn)]),
                         "Scale k is a pn_k x pn_k map: it has pn_k ** 2 tokens.")]
    return _run("scale_of_tokens", scale_of_tokens, lambda pn: scale_index_of_tokens(pn)[0], cases,
                lambda got, exp: _compare_tensor(got, exp, "the scale index", names=("token",)),
                mistakes, hint="repeat scale index k pn_k ** 2 times, for k = 0, 1, ..., K-1.", verbose=verbose,
                call=lambda fn, pn: fn(list(pn)))


def check_block_causal_mask(block_causal_mask, verbose: bool = True) -> CheckResult:
    """``block_causal_mask(patch_nums) -> (L, L) bool``: True where query token i may attend to key token j, i.e.
    scale(j) <= scale(i). Reference: ``varlite.var.block_causal_bias`` (0 where allowed, -inf elsewhere)."""
    cases = [_Case(f"patch_nums={pn}", (pn,)) for pn in _MASK_CASES + [OFFICIAL_PATCH_NUMS]]

    def lvl(pn):
        return scale_index_of_tokens(pn)[0]

    mistakes = [
        _Mistake("a token-by-token causal mask (lower triangle)",
                 lambda pn: torch.ones(len(lvl(pn)), len(lvl(pn)), dtype=torch.bool).tril(),
                 "That is next-*token* prediction: a token could not see the later tokens of its own scale. In VAR a "
                 "token sees *all* tokens of its own scale (their inputs are known) and of every coarser scale."),
        _Mistake("a strict mask (only coarser scales, not the own scale: scale(j) < scale(i))",
                 lambda pn: lvl(pn).view(-1, 1) > lvl(pn).view(1, -1),
                 "Off by one scale: a token also attends to the tokens of its own scale. Use <=, not <. (The first "
                 "scale would otherwise see nothing at all.)"),
        _Mistake("the transposed mask (rows and columns swapped: scale(j) >= scale(i))",
                 lambda pn: lvl(pn).view(-1, 1) <= lvl(pn).view(1, -1),
                 "Rows are queries (the token that looks), columns are keys (the token looked at). Row i may look at "
                 "column j when scale(j) <= scale(i): coarse scales are visible to fine ones, not the reverse."),
        _Mistake("the inverted mask (True where attention is forbidden)",
                 lambda pn: lvl(pn).view(-1, 1) < lvl(pn).view(1, -1),
                 "Return True where attention is *allowed* (torch's boolean attn_mask convention)."),
    ]
    return _run("block_causal_mask", block_causal_mask, lambda pn: block_causal_bias(pn)[0, 0] == 0, cases,
                lambda got, exp: _compare_tensor(got, exp, "the mask", names=("query", "key"),
                                                 kind_hint="Return a bool mask (True = may attend); the additive bias "
                                                           "is torch.where(mask, 0.0, -inf)."),
                mistakes, hint="compare the scale index of every query (a column vector) with that of every key "
                               "(a row vector): broadcasting gives the (L, L) mask in one line.",
                success="This is exactly the buffer VAR registers as attn_bias_for_masking (as 0 / -inf).",
                verbose=verbose, call=lambda fn, pn: fn(list(pn)))
