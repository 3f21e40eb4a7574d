"""The shipped models: they load, are small, have model cards, and generate deterministically."""
from __future__ import annotations

import pytest
import torch

from varlite.builtin import BuiltinError, list_builtin, load_builtin, model_card, weights_path
from varlite.core.var import VAR
from varlite.core.vqvae import VQVAE

SHIPPED = ["cifar10", "shapes"]
CARD_SECTIONS = ["## Config", "## Data", "## Command", "## Wall time and machine", "## Metrics"]


def test_both_models_are_listed():
    assert set(SHIPPED) <= set(list_builtin())


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_model_loads_in_eval_mode_and_is_small(name):
    assert weights_path(name).stat().st_size <= 15 * 2 ** 20
    vqvae, var = load_builtin(name)
    assert isinstance(vqvae, VQVAE) and isinstance(var, VAR) and var.vqvae is vqvae
    assert not vqvae.training and not var.training
    assert all(p.dtype == torch.float32 for p in var.parameters())
    assert var.num_classes == 10 and vqvae.config.image_size == 32


@pytest.mark.parametrize("name", SHIPPED)
def test_model_card_has_the_required_sections(name):
    card = model_card(name)
    for section in CARD_SECTIONS:
        assert section in card, f"{name}.md lacks {section!r}"
    assert "python -m varlite" in card            # the exact command
    assert "PSNR" in card and "class-consistency" in card.lower()


def test_shapes_generation_is_deterministic_by_seed():
    _, var = load_builtin("shapes")
    a = var.generate([0, 5, 9], cfg=1.5, seed=7)
    b = var.generate([0, 5, 9], cfg=1.5, seed=7)
    c = var.generate([0, 5, 9], cfg=1.5, seed=8)
    assert a.shape == (3, 3, 32, 32) and 0 <= a.min() and a.max() <= 1
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_unknown_name_lists_the_available_models():
    with pytest.raises(BuiltinError, match="available"):
        load_builtin("imagenet")


def test_recommended_sampling_is_stored_with_the_weights():
    from varlite.builtin import sampling_defaults
    settings = sampling_defaults("shapes")
    assert set(settings) == {"cfg", "top_k", "top_p"} and settings["top_k"] == 20
    _, var = load_builtin("shapes")
    assert var.generate([3], seed=0, **settings).shape == (1, 3, 32, 32)


def test_int8_storage_is_a_quarter_of_float32_and_loads_within_one_rounding_step(tmp_path, monkeypatch):
    from varlite import builtin
    vqvae, var = load_builtin("shapes")
    path = builtin.save_builtin(tmp_path / "tiny8.pth", "shapes", vqvae, var, {"cfg": 2.0}, storage="int8")
    params = sum(t.numel() for t in list(vqvae.state_dict().values()) + list(var.state_dict().values()))
    assert path.stat().st_size < 0.3 * 4 * params                      # int8 + per-row scales + small tensors
    monkeypatch.setattr(builtin, "WEIGHTS_DIR", tmp_path)
    vqvae8, var8 = builtin.load_builtin("tiny8")
    assert builtin.sampling_defaults("tiny8")["cfg"] == 2.0
    for name, w in var.state_dict().items():
        w8 = var8.state_dict()[name]
        assert w8.dtype == w.dtype
        if w.is_floating_point() and w.ndim >= 2 and w.numel() >= builtin.INT8_MIN_NUMEL and w.isfinite().all():
            # symmetric int8 per output row: |w - w8| <= scale / 2, scale = max|row| / 127 (float16-rounded)
            bound_row = w.flatten(1).abs().amax(1) / 127 / 2 * 1.01 + 1e-6
            assert ((w - w8).flatten(1).abs() <= bound_row[:, None]).all(), name
        else:
            assert torch.equal(w8, w.half().float() if w.is_floating_point() else w), name   # float16 or exact
    assert var8.generate([1], seed=0).shape == (1, 3, 32, 32)


def test_unknown_storage_is_refused(tmp_path):
    from varlite.builtin import save_builtin
    vqvae, var = load_builtin("shapes")
    with pytest.raises(ValueError, match="storage must be 'float16' or 'int8', got 'int4'"):
        save_builtin(tmp_path / "x.pth", "shapes", vqvae, var, storage="int4")
