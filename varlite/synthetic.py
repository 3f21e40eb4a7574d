"""Synthetic weights: the deterministic rule used by the upstream reference sets (and by varlite's benchmarks).

Every tensor gets its own generator, seeded from the weights seed and the CRC32 of its key, so the value of a
key does not depend on which other keys exist or in which order they are made:

    g = torch.Generator().manual_seed(seed * 1_000_003 + crc32(key));  x = randn(shape, generator=g)

then the first matching branch: ``scale_mul_1H11`` -> log 4 + 0.1 x; 1-D norm weights -> 1 + 0.1 x; other 1-D ->
0.05 x; the codebook -> 0.5 x; class / position embeddings -> 0.2 x; level embedding and start position -> 0.02 x;
everything else -> x / sqrt(fan_in). Buffers take the values a freshly built model has (the token-to-scale
index, the block-causal mask, zeros). See varlite/reference/upstream_tiny/README.md for the full statement.
"""
from __future__ import annotations

import math
import zlib
from typing import Iterable, Sequence

import torch
import torch.nn as nn

from .core.var import block_causal_bias, scale_index_of_tokens


def layout_of(model: nn.Module) -> list[tuple[str, tuple[int, ...], str]]:
    """(key, shape, 'parameter' | 'buffer') for every state_dict entry, in state_dict order."""
    params = {name for name, _ in model.named_parameters()}
    return [(k, tuple(v.shape), "parameter" if k in params else "buffer") for k, v in model.state_dict().items()]


def synthetic_tensor(key: str, shape: Sequence[int], seed: int) -> torch.Tensor:
    """The synthetic value of one parameter (float32, CPU)."""
    shape = tuple(shape)
    g = torch.Generator().manual_seed(seed * 1_000_003 + zlib.crc32(key.encode()))
    x = torch.randn(shape, generator=g)
    if key.endswith("scale_mul_1H11"):
        return math.log(4.0) + 0.1 * x
    if len(shape) == 1 and "norm" in key and key.endswith(".weight"):
        return 1 + 0.1 * x
    if len(shape) == 1:
        return 0.05 * x
    if key == "quantize.embedding.weight":
        return 0.5 * x
    if key in ("class_emb.weight", "pos_1LC"):
        return 0.2 * x
    if key in ("lvl_embed.weight", "pos_start"):
        return 0.02 * x
    return x / math.sqrt(math.prod(shape[1:]))


def synthetic_buffer(key: str, shape: Sequence[int], patch_nums: Sequence[int] | None) -> torch.Tensor:
    """The value a freshly built model has for a persistent buffer."""
    name = key.rsplit(".", 1)[-1]
    if name == "lvl_1L":
        return scale_index_of_tokens(patch_nums)
    if name == "attn_bias_for_masking":
        return block_causal_bias(patch_nums)
    return torch.zeros(tuple(shape))


def synthetic_state_dict(layout: Iterable, seed: int, patch_nums: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """A full state_dict by the rule. ``layout`` rows are (key, shape, kind) tuples or dicts with those fields
    (``layout_of(model)`` or a reference set's ``config.json`` ``models.<name>.state_dict``)."""
    sd = {}
    for row in layout:
        key, shape, kind = (row["key"], row["shape"], row["kind"]) if isinstance(row, dict) else row
        sd[key] = synthetic_buffer(key, shape, patch_nums) if kind == "buffer" else synthetic_tensor(key, shape, seed)
    return sd
