"""What next-scale prediction costs, counted: tokens, sequential steps and attention FLOPs of VAR against a raster-scan
autoregressive (AR) transformer of the same width and depth on the same final token grid; and measured timings.

Dimension key: n final token-grid side (H = W = n), K scales, pn_k side of scale k, l_k = pn_k^2 tokens of scale k,
L_k = l_1 + ... + l_k tokens seen after scale k, L = L_K all tokens, C width, V vocabulary.

Counting rules (per image, one conditional pass; classifier-free guidance doubles every count for both models):
- VAR makes K forward steps; step k computes l_k new tokens that attend to L_k keys. Raster AR makes n^2 steps;
  step i computes 1 token that attends to i keys.
- Attention FLOPs of one step, one layer: q.k for queries x keys pairs (2C FLOPs each: C multiplies, C adds) plus
  the same again for the weighted sum of values: 4 C queries keys. Softmax and masking are not counted.
- With a KV cache, queries = the step's new tokens. Without a cache, every step recomputes the whole prefix
  seen so far (queries = keys = L_k), which is how the VAR paper counts (Sec. 3.1 and its appendix: O(n^6) for
  raster AR, O(n^4) for VAR).
- Linear-layer FLOPs per token: 2 x (4 C^2 attention projections + 2 mlp_ratio C^2 MLP) per layer, plus 2 C V
  for the head; AdaLN works on the class vector once per image and is not counted.

What the counts show (official d16 schedule, n = 16, L = 680, K = 10): VAR needs 10 sequential steps against 256.
Without a cache attention is sum_k L_k^2 = O(n^4) for VAR (L ~ n^2 and the last scale dominates) against
sum_i i^2 ~ n^6 / 3 for AR: 0.74 M against 5.6 M query-key pairs. With a KV cache, AR attention falls to
sum_i i ~ n^4 / 2 (33 k pairs) and is *smaller* than VAR's sum_k l_k L_k (286 k pairs): VAR processes 2.7x more
tokens (all coarse scales) and its queries see longer prefixes. VAR's advantage with a cache is the number of
sequential steps -- each a parallel batch of work -- not the FLOP count.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Sequence

from .core.configs import VARConfig


@dataclass(frozen=True)
class StepCost:
    """One forward step of generation."""
    step: int                      # 0-based
    new_tokens: int                # queries computed with a KV cache: l_k for VAR, 1 for raster AR
    seen_tokens: int               # keys visible at this step (cached + new): L_k for VAR, i for AR
    attention_flops_cached: int    # 4 C depth new_tokens seen_tokens
    attention_flops_uncached: int  # 4 C depth seen_tokens^2 (the whole prefix recomputed)


@dataclass(frozen=True)
class GenerationCost:
    """The cost of generating one image with one model; ``steps`` has one entry per forward step."""
    model: str
    side: int                      # n: the final token grid is n x n
    tokens: int                    # tokens the transformer processes (L for VAR, n^2 for AR)
    steps: list[StepCost]
    linear_flops: int              # tokens x linear-layer FLOPs per token

    @property
    def num_steps(self) -> int:
        return len(self.steps)

    @property
    def attention_flops_cached(self) -> int:
        return sum(s.attention_flops_cached for s in self.steps)

    @property
    def attention_flops_uncached(self) -> int:
        return sum(s.attention_flops_uncached for s in self.steps)

    def row(self) -> dict:
        """The totals as one table row."""
        return {"model": self.model, "side n": self.side, "tokens": self.tokens, "steps": self.num_steps,
                "attn FLOPs (KV cache)": self.attention_flops_cached,
                "attn FLOPs (no cache)": self.attention_flops_uncached, "linear FLOPs": self.linear_flops}


def attention_flops(queries: int, keys: int, width: int, depth: int) -> int:
    """4 C queries keys per layer (scores q.k and the weighted sum of values), times depth."""
    return 4 * width * queries * keys * depth


def linear_flops_per_token(config: VARConfig) -> int:
    """2 (4 + 2 mlp_ratio) C^2 per layer (q, k, v, out projections and the MLP) + 2 C V for the head."""
    C = config.embed_dim
    return 2 * round((4 + 2 * config.mlp_ratio) * C * C) * config.depth + 2 * C * config.vocab_size


def var_cost(config: VARConfig) -> GenerationCost:
    """VAR with ``config``: K steps, step k has l_k = pn_k^2 queries over L_k keys."""
    steps, seen = [], 0
    for si, pn in enumerate(config.patch_nums):
        new = pn * pn
        seen += new
        steps.append(StepCost(si, new, seen, attention_flops(new, seen, config.embed_dim, config.depth),
                              attention_flops(seen, seen, config.embed_dim, config.depth)))
    return GenerationCost("VAR (next-scale)", config.patch_nums[-1], config.L, steps,
                          config.L * linear_flops_per_token(config))


def raster_ar_cost(config: VARConfig) -> GenerationCost:
    """A raster-scan AR transformer of the same width/depth on the same n x n grid: n^2 steps, step i has 1 query
    over i keys."""
    n = config.patch_nums[-1]
    steps = [StepCost(i - 1, 1, i, attention_flops(1, i, config.embed_dim, config.depth),
                      attention_flops(i, i, config.embed_dim, config.depth)) for i in range(1, n * n + 1)]
    return GenerationCost("AR (raster scan)", n, n * n, steps, n * n * linear_flops_per_token(config))


def compare(config: VARConfig) -> list[dict]:
    """Two table rows, VAR and raster AR, for the same config: ``var_cost(config).row()``,
    ``raster_ar_cost(config).row()``."""
    return [var_cost(config).row(), raster_ar_cost(config).row()]


def halving_patch_nums(n: int) -> tuple[int, ...]:
    """A geometric schedule ending at side n: each scale has half the side of the next, rounded up, down to 1.

    Used to draw cost curves for any n (L <= 4/3 n^2 + K); the official schedules are finer (L = 680 for n = 16).
    """
    if n < 1:
        raise ValueError(f"the final side n must be >= 1; got {n}")
    sides = [n]
    while sides[-1] > 1:
        sides.append((sides[-1] + 1) // 2)
    return tuple(reversed(sides))


def scaling_rows(sides: Sequence[int], config: VARConfig) -> list[dict]:
    """For every final side n: VAR (on ``halving_patch_nums(n)``) and raster AR totals, one row per n, using the
    width, depth, MLP ratio and vocabulary of ``config``."""
    rows = []
    for n in sides:
        var = var_cost(dataclasses.replace(config, patch_nums=halving_patch_nums(n)))
        ar = raster_ar_cost(dataclasses.replace(config, patch_nums=(n,)))
        rows.append({"side n": n, "VAR tokens": var.tokens, "VAR steps": var.num_steps, "AR steps": ar.num_steps,
                     "VAR attn (cache)": var.attention_flops_cached, "AR attn (cache)": ar.attention_flops_cached,
                     "VAR attn (no cache)": var.attention_flops_uncached,
                     "AR attn (no cache)": ar.attention_flops_uncached})
    return rows


def attention_capture_bytes(config: VARConfig, batch: int = 1, bytes_per_value: int = 4,
                            queries: int | None = None) -> list[int]:
    """Memory an attention capture keeps per scale: depth x heads x q x L_k x bytes x B, where q = l_k for
    ``capture_attention=True`` (every query of the scale) and q = ``queries`` for a capture of chosen queries only
    (``capture_attention={si: [i, ...]}`` with that many indices at each scale).

    (Conditional rows only; the official d16 config totals 293 MB per image, 178 MB of it at the last scale; one
    query's row at d16's last scale is 696 kB.)
    """
    return [config.depth * config.num_heads * (s.new_tokens if queries is None else queries) * s.seen_tokens
            * bytes_per_value * batch for s in var_cost(config).steps]


def timing_rows(steps: Sequence) -> list[dict]:
    """A table of the measured per-scale times (milliseconds) of a finished generation (a list of ``ScaleStep``),
    with a final "total" row; ``share %`` is each scale's part of the total."""
    total_s = sum(sum(step.timings.values()) for step in steps)
    rows = []
    for step in steps:
        row = {"scale": step.scale, "side": step.pn, "tokens": step.pn * step.pn, "keys": step.end}
        row.update({f"{part} ms": seconds * 1e3 for part, seconds in step.timings.items()})
        row["total ms"] = sum(step.timings.values()) * 1e3
        row["share %"] = 100 * sum(step.timings.values()) / total_s if total_s > 0 else 0.0
        rows.append(row)
    total = {key: sum(r[key] for r in rows) if key.endswith("ms") else "" for key in rows[0]}
    total.update({"scale": "total", "tokens": sum(r["tokens"] for r in rows), "share %": 100.0})
    return rows + [total]


def format_table(rows: Sequence[dict]) -> str:
    """Rows of equal keys as an aligned text table (ints with thousands separators, floats with 2 decimals)."""
    def cell(value) -> str:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return str(value)
        return f"{value:,}" if isinstance(value, int) else f"{value:,.2f}"
    header = list(rows[0])
    cells = [[cell(row[key]) for key in header] for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in cells)) for i, h in enumerate(header)]
    lines = ["  ".join(str(h).rjust(w) for h, w in zip(header, widths)),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    return "\n".join(lines)
