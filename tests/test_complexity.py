"""Cost counts of VAR against raster AR, checked against closed forms, and the timing table of a generation."""
import dataclasses

import pytest

from varlite import complexity
from varlite.core.configs import get_preset

D16 = get_preset("d16").var


def test_d16_counts_match_the_closed_forms():
    var, ar = complexity.var_cost(D16), complexity.raster_ar_cost(D16)
    n, C, depth = 16, 1024, 16
    assert (var.tokens, var.num_steps, ar.tokens, ar.num_steps) == (680, 10, 256, 256)
    assert [s.new_tokens for s in var.steps] == [pn * pn for pn in D16.patch_nums]
    assert [s.seen_tokens for s in var.steps] == [end for _, end in D16.begin_ends]
    # query-key pairs: VAR sum_k l_k L_k and sum_k L_k^2; AR sum_i i = n^2 (n^2 + 1) / 2 and sum_i i^2
    assert var.attention_flops_cached == 4 * C * depth * 286_434
    assert var.attention_flops_uncached == 4 * C * depth * 743_654
    N = n * n
    assert ar.attention_flops_cached == 4 * C * depth * N * (N + 1) // 2
    assert ar.attention_flops_uncached == 4 * C * depth * N * (N + 1) * (2 * N + 1) // 6
    # with a KV cache raster AR does less attention work; without one it does far more
    assert ar.attention_flops_cached < var.attention_flops_cached < var.attention_flops_uncached < ar.attention_flops_uncached
    per_token = 2 * 12 * C * C * depth + 2 * C * 4096
    assert (var.linear_flops, ar.linear_flops) == (680 * per_token, 256 * per_token)


def test_compare_gives_one_row_per_model():
    rows = complexity.compare(D16)
    assert [r["model"] for r in rows] == ["VAR (next-scale)", "AR (raster scan)"]
    assert rows[0]["steps"] == 10 and rows[1]["steps"] == 256 and rows[1]["tokens"] == 256
    text = complexity.format_table(rows)
    assert "attn FLOPs (KV cache)" in text and "286,434" not in text and f"{rows[0]['tokens']:,}" in text


def test_halving_schedule():
    assert complexity.halving_patch_nums(16) == (1, 2, 4, 8, 16)
    assert complexity.halving_patch_nums(24) == (1, 2, 3, 6, 12, 24)
    assert complexity.halving_patch_nums(1) == (1,)
    with pytest.raises(ValueError, match="must be >= 1"):
        complexity.halving_patch_nums(0)


def test_scaling_shows_n4_against_n6():
    """Doubling n multiplies AR's uncached attention by ~2^6 and every cached count (and VAR's uncached) by ~2^4."""
    rows = complexity.scaling_rows([32, 64], D16)
    ratio = {key: rows[1][key] / rows[0][key] for key in rows[0] if key != "side n"}
    assert ratio["AR attn (no cache)"] == pytest.approx(64, rel=0.01)
    for key in ("VAR attn (cache)", "AR attn (cache)", "VAR attn (no cache)"):
        assert ratio[key] == pytest.approx(16, rel=0.02)
    assert (rows[1]["VAR steps"], rows[1]["AR steps"]) == (7, 4096)


def test_attention_capture_memory_for_d16():
    per_scale = complexity.attention_capture_bytes(D16)
    assert per_scale[-1] == 16 * 16 * 256 * 680 * 4 == 178_257_920
    assert sum(per_scale) == 16 * 16 * 286_434 * 4 == 293_308_416
    assert complexity.attention_capture_bytes(D16, batch=4) == [4 * b for b in per_scale]


def test_capture_memory_formula_matches_a_real_capture(tiny_models):
    _, var = tiny_models
    steps = list(var.generate_steps([1, 2], seed=0, capture_attention=True))
    measured = [sum(w.numel() * w.element_size() for w in step.attention) for step in steps]
    assert measured == complexity.attention_capture_bytes(var.config, batch=2)


def test_timing_rows_of_a_generation(tiny_models):
    _, var = tiny_models
    steps = list(var.generate_steps([1], seed=0))
    rows = complexity.timing_rows(steps)
    assert [r["scale"] for r in rows] == [0, 1, 2, 3, "total"]
    assert [r["tokens"] for r in rows] == [1, 4, 9, 16, 30] and [r["keys"] for r in rows[:4]] == [1, 5, 14, 30]
    for row, step in zip(rows, steps):
        assert row["total ms"] == pytest.approx(1e3 * sum(step.timings.values()))
        assert row["transformer ms"] == pytest.approx(1e3 * step.timings["transformer"])
    assert rows[-1]["total ms"] == pytest.approx(sum(r["total ms"] for r in rows[:4]))
    assert sum(r["share %"] for r in rows[:4]) == pytest.approx(100)
    assert complexity.format_table(rows).count("\n") == len(rows) + 1


def test_counts_follow_the_config():
    narrow = dataclasses.replace(D16, embed_dim=512, num_heads=8)
    assert complexity.var_cost(narrow).attention_flops_cached * 2 == complexity.var_cost(D16).attention_flops_cached
