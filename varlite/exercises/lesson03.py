"""Checks of lesson 3 -- next-scale prediction: the block-causal mask."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ..core import var as var_module
from ..core.configs import OFFICIAL_PATCH_NUMS
from ..core.quantizer import MultiScaleQuantizer
from ..core.var import block_causal_bias, scale_index_of_tokens
from ..core.vqvae import VQVAE
from ._check import CheckResult, Shortcut, _Case, _Mistake, _compare_tensor, _gen, _quantizer, _run, exercise

exercise("teacher_forcing_input", "3.1",
         concept="In training the transformer sees, for every scale after the first, what the tokenizer had built "
                 "*before* that scale (f_hat after the coarser scales), brought down to that scale's size: the same "
                 "input it will have at generation time.",
         approach="Run the decoder loop of exercise 2.2 (lookup, bicubic up, phi, running sum); after scale si "
                  "(si = 0..K-2), area-downsample f_hat to patch_nums[si + 1], flatten to (B, Cv, l), transpose to "
                  "(B, l, Cv); concatenate the K - 1 pieces along the token axis.",
         code="for si in range(K - 1): f_hat = f_hat + q.phi(up(q.lookup(maps[si], pn[si])), si); "
              "x = F.interpolate(f_hat, size=(pn[si+1],) * 2, mode='area'); out.append(x.flatten(2).transpose(1, 2)); "
              "return torch.cat(out, dim=1)",
         shortcuts=[Shortcut(MultiScaleQuantizer, a) for a in ("idx_to_var_input", "idx_to_f_hats", "upsample_and_phi")]
         + [Shortcut(VQVAE, "idx_to_var_input")])
exercise("block_causal_mask", "3.2",
         concept="A token may look at every token whose scale is not finer than its own: its own scale and all "
                 "coarser ones. Rows are the tokens that look (queries), columns the tokens looked at (keys).",
         approach="Make the (L,) vector of the 0-based scale of every token (scale k repeated pn_k^2 times), then "
                  "compare it as a column (queries) with itself as a row (keys): broadcasting gives (L, L).",
         code="lvl = torch.cat([torch.full((p * p,), k) for k, p in enumerate(patch_nums)]); "
              "return lvl[:, None] >= lvl[None, :]",
         shortcuts=[Shortcut(var_module, "block_causal_bias"), Shortcut(var_module, "scale_index_of_tokens")])


_MASK_CASES = [(1, 2), (1, 2, 3), (1, 2, 3, 4), (1, 3, 5, 8)]


def _tf_variant(token_maps, q, *, leak=False, mode="area", channels_last=True):
    """The teacher-forcing input with one step changed (for diagnosing mistakes); defaults reproduce the library."""
    pns, H = q.patch_nums, q.patch_nums[-1]
    B, Cv, K = token_maps[0].shape[0], q.Cv, len(q.patch_nums)
    f_hats = q.idx_to_f_hats(token_maps)
    out = []
    with torch.no_grad():
        for si in range(K - 1):
            src = f_hats[si + 1] if leak else f_hats[si]
            x = F.interpolate(src, size=(pns[si + 1],) * 2, mode=mode).reshape(B, Cv, -1)
            out.append(x.transpose(1, 2) if channels_last else x)
    return torch.cat(out, dim=1 if channels_last else 2)


def check_teacher_forcing_input(teacher_forcing_input, verbose: bool = True) -> CheckResult:
    """``teacher_forcing_input(token_maps, quantizer) -> (B, L - pn_1^2, Cv)``: the transformer's input during
    training. The tokens of scale k+1 are predicted from f_hat after scales 1..k, area-downsampled to pn_{k+1} x
    pn_{k+1} and flattened row-major; the inputs of scales 2..K, concatenated (scale 1's input is the class token).
    Reference: ``MultiScaleQuantizer.idx_to_var_input``."""
    specs = [(1, (1, 2, 3, 4, 6), False), (2, (1, 2, 3, 4, 6), False), (2, (1, 3, 5, 8), True)]
    cases = []
    for n, (B, pn, hidden) in enumerate(specs):
        q = _quantizer(64, 8, pn, seed=n)
        g = _gen(300 + n)
        cases.append(_Case(f"B={B}, Cv=8, V=64, patch_nums={pn}",
                           ([torch.randint(0, 64, (B, p * p), generator=g) for p in pn], q), hidden=hidden))

    def reference(token_maps, q):
        with torch.no_grad():
            return q.idx_to_var_input(token_maps)

    mistakes = [
        _Mistake("the input of scale k+1 built from f_hat *including* scale k+1 (the answer leaks into the input)",
                 lambda t, q: _tf_variant(t, q, leak=True),
                 "Scale k+1 is predicted from what is known before it: f_hat after scales 1..k only. At generation "
                 "time scale k+1's tokens do not exist yet."),
        _Mistake("bilinear downsampling instead of area averaging", lambda t, q: _tf_variant(t, q, mode="bilinear"),
                 "Downsample f_hat with mode='area' (each coarse position is the mean of its patch), as the tokenizer."),
        _Mistake("(B, Cv, l) blocks (channels not moved last)", lambda t, q: _tf_variant(t, q, channels_last=False),
                 "Each token's input is a Cv-vector: flatten the map to (B, Cv, l), then transpose to (B, l, Cv) "
                 "before concatenating along the token axis."),
    ]
    return _run("teacher_forcing_input", teacher_forcing_input, reference, cases,
                lambda got, exp: _compare_tensor(got, exp, "the input", atol=1e-5, rtol=1e-5,
                                                 names=("b", "token", "channel")),
                mistakes, success="This is the x_BLCv_wo_first_l that VAR.forward takes during training.",
                verbose=verbose)


def _call_with_a_list(fn, patch_nums):
    """The learner's mask of ``patch_nums`` given as a list (module level: in grading it travels by name)."""
    return fn(list(patch_nums))


def check_block_causal_mask(block_causal_mask, verbose: bool = True) -> CheckResult:
    """``block_causal_mask(patch_nums) -> (L, L) bool``: True where query token i may attend to key token j, i.e.
    scale(j) <= scale(i). Reference: ``varlite.core.var.block_causal_bias`` (0 where allowed, -inf elsewhere)."""
    cases = [_Case(f"patch_nums={pn}", (pn,)) for pn in _MASK_CASES + [OFFICIAL_PATCH_NUMS]] + \
        [_Case("", (pn,), hidden=True) for pn in ((2, 3, 7), (1, 2, 4, 6, 9, 12))]

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
                mistakes,
                success="This is exactly the buffer VAR registers as attn_bias_for_masking (as 0 / -inf).",
                verbose=verbose, call=_call_with_a_list)
