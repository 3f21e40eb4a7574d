"""Checks of lesson 4 -- inside the transformer: AdaLN and L2-normalised attention."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..core import transformer
from ..core.transformer import AdaLNBeforeHead, AdaLNSelfAttn, SelfAttention
from ..core.var import block_causal_bias
from ._check import CheckResult, Shortcut, _Case, _Mistake, _compare_tensor, _gen, _run, exercise

exercise("adaln", "4.1",
         concept="Adaptive LayerNorm: normalise every token's features without learned weights, then let the class "
                 "condition choose a per-channel scale and shift. With a zero condition the layer must reduce to a "
                 "plain LayerNorm.",
         approach="ada_lin(cond) gives (B, 2C): split it into scale and shift (scale first), give them a token axis "
                   "to broadcast over L, and combine them with F.layer_norm(x, (C,), eps=1e-6) so that scale = 0 "
                   "leaves the normalised x unchanged.",
         code="scale, shift = ada_lin(cond_BD).view(B, 1, 2, C).unbind(2); "
              "return F.layer_norm(x_BLC, (C,), eps=1e-6) * (1 + scale) + shift",
         shortcuts=[Shortcut(AdaLNBeforeHead, "forward"), Shortcut(AdaLNSelfAttn, "forward")])
exercise("l2_attention_weights", "4.2",
         concept="VAR compares queries and keys by their *direction* only (cosine similarity, in [-1, 1]) and lets "
                 "every head learn how sharp its softmax is: a logit scale exp(s_h), capped at 100. The mask is "
                 "added before the softmax; each query's weights over the keys sum to 1.",
         approach="F.normalize q and k over the head dimension; cosine scores q_hat @ k_hat^T; multiply by the logit "
                  "scale (exp of scale_mul_1H11 after clamping it at log 100); add attn_bias if given; softmax over "
                  "the keys.",
         code="q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1); "
              "scores = scale_mul_1H11.clamp_max(math.log(100)).exp() * (q @ k.transpose(-2, -1)); "
              "return (scores if attn_bias is None else scores + attn_bias).softmax(dim=-1)",
         shortcuts=[Shortcut(SelfAttention, "forward"), Shortcut(SelfAttention, "attention_probabilities"),
                    Shortcut(transformer, "attention_weights")])


def _adaln_case(seed: int, B: int, L: int, C: int):
    g = _gen(seed)
    head_nm = AdaLNBeforeHead(C, 1e-6)
    with torch.no_grad():
        lin = head_nm.ada_lin[1]
        lin.weight.copy_(torch.randn(lin.weight.shape, generator=g) / math.sqrt(C))
        lin.bias.copy_(torch.randn(lin.bias.shape, generator=g) * 0.5)
    x = torch.randn(B, L, C, generator=g) * 2 + 0.5
    cond = torch.randn(B, C, generator=g)
    with torch.no_grad():
        expected = head_nm(x, cond)                      # the library's AdaLN, computed once
    return (x, cond, head_nm.ada_lin), expected


def check_adaln(adaln, verbose: bool = True) -> CheckResult:
    """``adaln(x_BLC, cond_BD, ada_lin) -> (B, L, C)``: LN(x) * (1 + scale) + shift with (scale, shift) =
    ada_lin(cond) split in two along the last axis (scale first) and LN a LayerNorm *without* learned weights
    (eps 1e-6). Reference: ``AdaLNBeforeHead`` (the AdaLN before VAR's output head)."""
    cases = []
    for n, (B, L, C, hidden) in enumerate([(1, 1, 4, False), (2, 5, 8, False), (3, 7, 32, False), (2, 9, 24, True)]):
        args, expected = _adaln_case(n, B, L, C)
        cases.append(_Case(f"B={B}, L={L}, C={C}", args, expected=expected, hidden=hidden))

    def variant(x, cond, ada_lin, *, plus_one=True, swap=False):
        with torch.no_grad():
            C = x.shape[-1]
            a, b = ada_lin(cond).view(-1, 1, 2, C).unbind(2)
            scale, shift = (b, a) if swap else (a, b)
            return F.layer_norm(x, (C,), eps=1e-6) * ((1 + scale) if plus_one else scale) + shift

    mistakes = [
        _Mistake("LN(x) * scale + shift (without the 1 +)",
                 lambda x, c, m: variant(x, c, m, plus_one=False),
                 "AdaLN multiplies by (1 + scale): with a zero condition the block starts as a plain LayerNorm."),
        _Mistake("scale and shift swapped",
                 lambda x, c, m: variant(x, c, m, swap=True),
                 "ada_lin(cond) is (scale, shift) in that order: .view(B, 1, 2, C).unbind(2) gives scale first."),
        _Mistake("the plain LayerNorm (the condition ignored)",
                 lambda x, c, m: F.layer_norm(x, (x.shape[-1],), eps=1e-6),
                 "The class condition enters through ada_lin(cond): (scale, shift) per sample, broadcast over L."),
    ]
    return _run("adaln", adaln, None, cases,
                lambda got, exp: _compare_tensor(got, exp, "the output", atol=1e-4, rtol=1e-4, names=("b", "token", "channel")),
                mistakes,
                verbose=verbose)


def _attention_case(seed: int, B: int, H: int, L: int, c: int, big_scale: bool, patch_nums=None):
    """Raw per-head q, k (before normalisation), the log-scale parameter and a mask, from a seeded SelfAttention."""
    g = _gen(seed)
    C = H * c
    attn = SelfAttention(0, C, H)
    with torch.no_grad():
        attn.mat_qkv.weight.copy_(torch.randn(attn.mat_qkv.weight.shape, generator=g) / math.sqrt(C))
        attn.q_bias.copy_(torch.randn(C, generator=g) * 0.1)
        logs = math.log(4.0) + torch.randn(H, generator=g) * 0.3
        if big_scale:
            logs[0] = math.log(300.0)          # above the clamp at log(100)
        attn.scale_mul_1H11.copy_(logs.view(1, H, 1, 1))
    x = torch.randn(B, L, C, generator=g)
    bias = block_causal_bias(patch_nums) if patch_nums else None
    with torch.no_grad():
        raw = F.linear(x, attn.mat_qkv.weight, torch.cat((attn.q_bias, attn.zero_k_bias, attn.v_bias)))
        q, k, _ = raw.view(B, L, 3, H, c).permute(2, 0, 3, 1, 4).unbind(0)
    return (q.contiguous(), k.contiguous(), attn.scale_mul_1H11.detach().clone(), bias), (attn, x, bias)


def check_l2_attention_weights(l2_attention_weights, verbose: bool = True) -> CheckResult:
    """``l2_attention_weights(q_BHLc, k_BHLc, scale_mul_1H11, attn_bias) -> (B, H, L, L)``: VAR's attention
    probabilities softmax(exp(min(s_h, log 100)) q_hat k_hat^T + bias) with q_hat, k_hat the L2-normalised q, k,
    ``scale_mul_1H11`` the learned log logit scale s_h (exp(s_h) multiplies the scores: an inverse temperature),
    and ``attn_bias`` (0 / -inf, or None).
    Reference: ``SelfAttention.attention_probabilities``."""
    specs = [(1, 1, 3, 4, False, None), (2, 2, 5, 8, False, (1, 2)), (1, 4, 14, 8, True, (1, 2, 3)),
             (2, 3, 21, 4, True, (1, 2, 4))]
    cases = []
    for n, (B, H, L, c, big, pn) in enumerate(specs):
        args, (attn, x, bias) = _attention_case(n, B, H, L, c, big, pn)
        with torch.no_grad():
            expected = attn.attention_probabilities(x, bias)     # the probabilities the library computes
        label = (f"B={B}, H={H}, L={L}, c={c}" + (", a head with s_h > log 100" if big else "")
                 + (", block-causal bias" if pn else ""))
        cases.append(_Case(label, args, expected=expected, hidden=n == len(specs) - 1))

    def variant(q, k, s, bias, *, normalise=True, clamp=True, exp=True, sqrt_scale=False, dim=-1):
        if normalise:
            q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        if sqrt_scale:
            scores = q @ k.transpose(-2, -1) / math.sqrt(q.shape[-1])
        else:
            t = s.clamp_max(math.log(100)) if clamp else s
            scores = (t.exp() if exp else t) * (q @ k.transpose(-2, -1))
        if bias is not None:
            scores = scores + bias
        return scores.softmax(dim=dim)

    mistakes = [
        _Mistake("plain dot products (q and k not L2-normalised)",
                 lambda q, k, s, b: variant(q, k, s, b, normalise=False),
                 "Normalise q and k to unit length over the head dimension first: F.normalize(q, dim=-1)."),
        _Mistake("standard attention scaling 1/sqrt(c)",
                 lambda q, k, s, b: variant(q, k, s, b, sqrt_scale=True),
                 "With unit-length q and k the scores lie in [-1, 1]; VAR multiplies them by a learned per-head "
                 "logit scale exp(s_h) instead of 1/sqrt(c)."),
        _Mistake("the logit scale without the clamp at log(100)",
                 lambda q, k, s, b: variant(q, k, s, b, clamp=False),
                 "Clamp the log logit scale first: s.clamp_max(math.log(100)).exp(), so no head sharper than 100."),
        _Mistake("the log logit scale used without exp",
                 lambda q, k, s, b: variant(q, k, s, b, exp=False),
                 "scale_mul_1H11 stores the log of the logit scale: multiply the scores by its exp()."),
        _Mistake("the mask ignored",
                 lambda q, k, s, b: variant(q, k, s, None),
                 "Add attn_bias (0 where allowed, -inf where not) to the scores before the softmax."),
        _Mistake("the softmax over the query axis",
                 lambda q, k, s, b: variant(q, k, s, b, dim=-2),
                 "Each query's weights over the keys sum to 1: softmax over the last axis (dim=-1)."),
    ]
    return _run("l2_attention_weights", l2_attention_weights, None, cases,
                lambda got, exp: _compare_tensor(got, exp, "the attention weights", atol=1e-5, rtol=1e-4,
                                                 names=("b", "head", "query", "key")),
                mistakes,
                verbose=verbose)
