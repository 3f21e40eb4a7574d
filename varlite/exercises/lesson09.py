"""Checks of lesson 9 -- the real thing: parameter and memory counts of the official VAR."""
from __future__ import annotations

import functools
import itertools

import torch

from .. import complexity
from ..configs import OFFICIAL_PATCH_NUMS, VARConfig, official_var, official_vqvae
from ..var import VAR
from ..vqvae import VQVAE
from ._check import CheckResult, _Case, _Mistake, _Mismatch, _compare_int, _run


@functools.lru_cache(maxsize=8)
def _meta_var(depth: int) -> VAR:
    with torch.device("meta"):
        return VAR(official_var(depth), VQVAE(official_vqvae()))


def _param_groups(depth: int) -> dict[str, int]:
    """Parameter counts of the official VAR-d{depth} by part (from the model itself, built on the meta device)."""
    var = _meta_var(depth)
    groups: dict[str, int] = {}
    for name, p in var.named_parameters():
        if name.startswith("blocks."):
            part = name.split(".")[2]
            key = {"attn": "attention (all blocks)", "ffn": "FFN (all blocks)", "ada_lin": "AdaLN (all blocks)"}.get(part, part)
        elif name.startswith("head_nm"):
            key = "the AdaLN before the head"
        elif name.startswith("head."):
            key = "the output head"
        else:
            key = "embeddings (class, position, level, word, start)"
        groups[key] = groups.get(key, 0) + p.numel()
    C = var.config.embed_dim
    groups["(buffer) attn_bias_for_masking"] = -var.L * var.L
    groups["(buffer) lvl_1L"] = -var.L
    groups["(buffers) zero_k_bias of every block"] = -depth * C
    return groups


def check_var_param_count(var_param_count, verbose: bool = True) -> CheckResult:
    """``var_param_count(depth) -> int``: the number of learned parameters of the official VAR-d{depth} (width
    C = 64 depth, V = 4096, Cv = 32, 1000 classes, patch_nums 1..16, L = 680). Reference: the model itself,
    ``sum(p.numel() for p in VAR(official_var(depth), ...).parameters())`` (built on the meta device: no memory)."""
    cases = [_Case(f"depth={d} (C={64 * d})", (d,)) for d in (16, 20, 24, 30)]

    def reference(depth):
        return sum(p.numel() for p in _meta_var(depth).parameters())

    def diagnose(got, expected, args):
        """Name the parts of the model whose parameter counts add up to the difference."""
        try:
            diff = expected - int(got)
        except (TypeError, ValueError):
            return None
        groups = _param_groups(int(args[0]))
        for r in range(1, 4):
            for combo in itertools.combinations(groups, r):
                if sum(groups[n] for n in combo) == diff:
                    return (f"the difference is exactly {' + '.join(combo)} "
                            f"({'missing' if diff > 0 else 'counted, but they are buffers, not parameters'}).")
        return None

    return _run("var_param_count", var_param_count, reference, cases,
                lambda got, exp: _compare_int(got, exp, "the parameter count"), diagnose=diagnose,
                hint="per block: attention 4C^2 + 3C + H, FFN 8C^2 + 5C, AdaLN 6C^2 + 6C; then the embeddings, the "
                     "head's AdaLN (2C^2 + 2C) and the head (C V + V).", verbose=verbose)


def check_attention_capture_bytes(attention_capture_bytes, verbose: bool = True) -> CheckResult:
    """``attention_capture_bytes(patch_nums, depth, num_heads, batch=1, bytes_per_value=4) -> [int per scale]``: the
    memory ``generate_steps(capture_attention=True)`` keeps: at scale k, depth x heads x l_k queries x L_k keys values
    per image. Reference: ``complexity.attention_capture_bytes``."""
    specs = [((1, 2, 3), 2, 2, 1, 4), (OFFICIAL_PATCH_NUMS, 16, 16, 1, 4), (OFFICIAL_PATCH_NUMS, 16, 16, 2, 2)]
    cases = [_Case(f"patch_nums={pn}, depth={d}, heads={h}, batch={b}, {nb} bytes", (pn, d, h, b, nb))
             for pn, d, h, b, nb in specs]

    def cfg(pn, d, h):
        return VARConfig(vocab_size=16, z_channels=4, patch_nums=tuple(pn), num_classes=1, depth=d, embed_dim=h,
                         num_heads=h)

    def reference(pn, d, h, b, nb):
        return complexity.attention_capture_bytes(cfg(pn, d, h), b, nb)

    def cum(pn):
        return list(itertools.accumulate(p * p for p in pn))

    mistakes = [
        _Mistake("L_k x L_k per scale (all queries so far, not just this scale's)",
                 lambda pn, d, h, b, nb: [d * h * Lk * Lk * b * nb for Lk in cum(pn)],
                 "Only this scale's l_k = pn_k^2 queries are computed at step k (the others are cached)."),
        _Mistake("the heads left out", lambda pn, d, h, b, nb: [d * p * p * Lk * b * nb for p, Lk in zip(pn, cum(pn))],
                 "Every head has its own weights: multiply by num_heads."),
        _Mistake("the layers left out", lambda pn, d, h, b, nb: [h * p * p * Lk * b * nb for p, Lk in zip(pn, cum(pn))],
                 "Every layer has its own weights: multiply by depth."),
    ]

    def compare(got, exp):
        if not isinstance(got, (list, tuple)) or len(got) != len(exp):
            raise _Mismatch(f"expected a list of {len(exp)} ints (one per scale), got {got!r:.80}")
        for k, (g, e) in enumerate(zip(got, exp)):
            _compare_int(g, e, f"scale {k + 1}")

    return _run("attention_capture_bytes", attention_capture_bytes, reference, cases, compare, mistakes,
                hint="for each scale: depth * num_heads * pn_k**2 * L_k * bytes_per_value * batch.", verbose=verbose)
