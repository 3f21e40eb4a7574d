"""Checks of lesson 9 -- the real thing: the parameters of the official VAR and the memory of its KV cache."""
from __future__ import annotations

import functools
import itertools

import torch

from .. import complexity
from ..core.configs import OFFICIAL_PATCH_NUMS, official_var, official_vqvae
from ..core.var import VAR
from ..core.vqvae import VQVAE
from ._check import CheckResult, Shortcut, _Case, _Mistake, _compare_int, _run, exercise

exercise("var_param_count", "9.1",
         concept="Count what the model learns, part by part: the blocks (attention, FFN, AdaLN), the embeddings, the "
                 "head. Buffers (the mask, the level index, zero_k_bias) are not parameters.",
         approach="Per block with width C: attention qkv (3C^2, no key bias) + q and v biases (2C) + one logit scale "
                  "per head + the output projection (C^2 + C); FFN C -> 4C -> C with biases; AdaLN Linear C -> 6C. "
                  "Then the class embedding (classes + 1 rows), position (L rows) and level (K rows) embeddings, "
                  "pos_start, the word embedding Cv -> C (a Linear with bias), the head's AdaLN (C -> 2C) and the head "
                  "(C -> V).",
         code="per block 4C^2 + 3C + H (attention) + 8C^2 + 5C (FFN) + 6C^2 + 6C (AdaLN); embeddings C + L C + Cv C + C "
              "+ (classes + 1) C + K C; head 2C^2 + 2C + C V + V",
         shortcuts=[Shortcut(VAR, "__init__")])
exercise("kv_cache_bytes", "9.2",
         concept="During generation every block keeps the keys and values of every token produced so far, so that a "
                 "new scale's queries can attend to them; guidance runs two rows per image.",
         approach="Count the tensors left in the cache after the last scale: per block a key and a value tensor of "
                  "(rows, heads, L, head_dim), with heads x head_dim = C and rows = 2 x batch; multiply by the bytes "
                  "per value.",
         code="L = sum(pn * pn for pn in patch_nums); return 2 * depth * 2 * batch * L * embed_dim * bytes_per_value",
         shortcuts=[Shortcut(complexity, "attention_capture_bytes")])


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
    cases = [_Case(f"depth={d} (C={64 * d})", (d,), hidden=d == 12) for d in (16, 20, 24, 30, 12)]

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
                verbose=verbose)


def kv_cache_bytes_reference(patch_nums, depth, embed_dim, batch, bytes_per_value=4):
    """Bytes the KV cache holds after a guided generation: keys and values (2) of every block (depth) for the doubled
    batch (2 batch: conditional and unconditional rows) and all L tokens, C = embed_dim values each.
    ``tests/test_exercises.py`` checks this against the ``KVCache`` of a real ``VAR.generate_steps`` run."""
    L = sum(pn * pn for pn in patch_nums)
    return 2 * depth * 2 * batch * L * embed_dim * bytes_per_value


def check_kv_cache_bytes(kv_cache_bytes, verbose: bool = True) -> CheckResult:
    """``kv_cache_bytes(patch_nums, depth, embed_dim, batch, bytes_per_value=4) -> int``: the memory the KV cache
    holds at the end of one guided generation (cfg > 0) of ``batch`` images. Reference: the cache of a real
    generation (``kv_cache_bytes_reference``, verified against ``KVCache`` by the tests)."""
    specs = [((1, 2, 3), 2, 8, 1, 4, False), (OFFICIAL_PATCH_NUMS, 16, 1024, 1, 4, False),
             (OFFICIAL_PATCH_NUMS, 16, 1024, 8, 2, False), ((1, 2, 4, 6), 3, 96, 5, 4, True)]
    cases = [_Case(f"patch_nums={pn}, depth={d}, C={C}, batch={b}, {nb} bytes per value", (pn, d, C, b, nb),
                   hidden=hidden) for pn, d, C, b, nb, hidden in specs]

    def L(pn):
        return sum(p * p for p in pn)

    mistakes = [
        _Mistake("the batch not doubled for guidance", lambda pn, d, C, b, nb: 2 * d * b * L(pn) * C * nb,
                 "With cfg > 0 every step runs the conditional and the unconditional rows: the cache holds 2 x batch "
                 "sequences."),
        _Mistake("keys only (no values)", lambda pn, d, C, b, nb: d * 2 * b * L(pn) * C * nb,
                 "Attention needs the keys (for the scores) and the values (for the weighted sum) of every past token."),
        _Mistake("the tokens of all scales but the last",
                 lambda pn, d, C, b, nb: 2 * d * 2 * b * (L(pn) - pn[-1] ** 2) * C * nb,
                 "The last scale's keys and values are appended too (its queries attend to themselves)."),
        _Mistake("one layer only", lambda pn, d, C, b, nb: 2 * 2 * b * L(pn) * C * nb,
                 "Every block has its own attention and its own cache entry: multiply by depth."),
    ]
    return _run("kv_cache_bytes", kv_cache_bytes, kv_cache_bytes_reference, cases,
                lambda got, exp: _compare_int(got, exp, "the bytes"), mistakes, verbose=verbose)
