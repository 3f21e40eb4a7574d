"""The official family before loading: exact sizes from the configs, the memory to generate, a rough time, and the
refusal when the machine has too little memory free (varlite.family)."""
import math

import pytest

from varlite import family, pretrained
from varlite.core.configs import official_var


def official_parameter_count(layout: str) -> int:
    return sum(math.prod(shape) for _, shape, kind in pretrained.official_layouts()[layout]["tensors"]
               if kind == "parameter")


@pytest.mark.parametrize("depth, layout", [(16, "var_d16"), (20, "var_d20"), (24, "var_d24"), (30, "var_d30"),
                                           (36, "var_d36_s512_UNVERIFIED")])
def test_parameter_counts_equal_the_official_layouts(depth, layout):
    footprint = family.official_footprint(depth)
    assert footprint.var_params == official_parameter_count(layout)
    assert footprint.vqvae_params == official_parameter_count("vae_ch160v4096z32")


def test_d16_memory_lies_in_the_measured_range():
    """docs/BENCHMARKS.md: the walkthrough's peak RSS with d16 loaded, 2.65-3.1 GB (2^30 bytes)."""
    assert 2.65 <= family.official_footprint(16).memory_bytes / 2**30 <= 3.1


def test_memory_grows_with_depth_batch_and_image_size():
    gb = [family.official_footprint(d).memory_bytes for d in (16, 20, 24, 30, 36)]
    assert gb == sorted(gb)
    one, two = family.official_footprint(16, 1), family.official_footprint(16, 2)
    kv_per_image = 4 * 2 * 16 * 2 * 680 * 1024      # keys and values, 16 layers, 2 rows, L = 680, C = 1024
    assert two.memory_bytes - one.memory_bytes > family.ALLOCATOR_SLACK * kv_per_image
    assert family.official_footprint(36).image_size == 512


def test_transformer_flops_match_the_counted_d16_figure():
    """bench_d16.py counted 1,120 GFLOP in the transformer (scales 1-10) for 2 images with guidance."""
    assert family.transformer_flops_per_image(official_var(16)) / 1e9 == pytest.approx(560, rel=0.1)


def test_time_is_d16s_measured_time_scaled_by_flops():
    d16, d36 = family.official_footprint(16), family.official_footprint(36)
    assert d16.seconds_per_image == pytest.approx(family.D16_TRANSFORMER_S_PER_IMAGE
                                              + family.D16_DECODE_S_PER_IMAGE)
    ratio = family.transformer_flops_per_image(official_var(36)) / family.transformer_flops_per_image(
        official_var(16))
    assert d36.seconds_per_image == pytest.approx(family.D16_TRANSFORMER_S_PER_IMAGE * ratio
                                              + 4 * family.D16_DECODE_S_PER_IMAGE)


def test_unknown_depth_is_refused():
    with pytest.raises(ValueError, match="official depths are 16, 20, 24, 30, 36"):
        family.official_footprint(18)


def test_available_memory_is_read_here():
    free = family.available_memory_bytes()
    assert free is not None and free > 0


def test_refusal_says_needed_free_and_what_to_do(monkeypatch):
    d16, d30 = family.official_footprint(16), family.official_footprint(30)
    assert family.memory_refusal(d30, d30.memory_bytes) is None
    assert family.memory_refusal(d30, None) is None
    text = family.memory_refusal(d30, d16.memory_bytes + 1)
    assert f"needs ~{d30.memory_bytes / 2**30:.1f} GB" in text
    assert f"only {(d16.memory_bytes + 1) / 2**30:.1f} GB free" in text
    assert "smaller depth (d16)" in text and "close other programs" in text
    assert "no official depth fits" in family.memory_refusal(d16, 2**30)

    monkeypatch.setattr(family, "available_memory_bytes", lambda: 2**30)
    with pytest.raises(family.NotEnoughMemoryError, match="VAR-d20 needs"):
        family.check_fits(20)
    monkeypatch.setattr(family, "available_memory_bytes", lambda: 2**40)
    assert family.check_fits(20).depth == 20
