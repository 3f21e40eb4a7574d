"""The shipped models: they load, are small, have model cards, generate deterministically, and hold no pickle."""
from __future__ import annotations

import json
import struct

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
    assert path == tmp_path / "tiny8.safetensors" and not (tmp_path / "tiny8.pth").exists()
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


@pytest.mark.parametrize("name", SHIPPED)
def test_a_shipped_file_is_safetensors_with_its_metadata_and_loads_without_unpickling(name, monkeypatch):
    data = weights_path(name).read_bytes()
    header_len = struct.unpack("<Q", data[:8])[0]
    metadata = json.loads(data[8:8 + header_len])["__metadata__"]
    assert metadata["format"] == "varlite-builtin" and metadata["version"] == "3"
    assert metadata["storage"] == {"shapes": "float16", "cifar10": "int8"}[name]
    assert set(json.loads(metadata["sampling"])) == {"cfg", "top_k", "top_p"}

    def no_pickle(*args, **kwargs):
        raise AssertionError("a built-in model was unpickled")
    monkeypatch.setattr(torch, "load", no_pickle)
    monkeypatch.setattr("pickle.loads", no_pickle)
    vqvae, var = load_builtin(name)
    assert var.generate([1], seed=0).shape == (1, 3, 32, 32)


def test_float16_storage_round_trips_exactly_and_keeps_the_decoder_channels_last(tmp_path, monkeypatch):
    from varlite import builtin
    vqvae, var = load_builtin("shapes")                       # float16 storage: its float32 weights are float16 values
    path = builtin.save_builtin(tmp_path / "again.safetensors", "shapes", vqvae, var, {"top_k": 20})
    monkeypatch.setattr(builtin, "WEIGHTS_DIR", tmp_path)
    vqvae2, var2 = builtin.load_builtin("again")
    for before, after in ((vqvae, vqvae2), (var, var2)):
        for (key, a), b in zip(before.state_dict().items(), after.state_dict().values()):
            assert torch.equal(a, b) and a.stride() == b.stride(), key
    assert builtin.sampling_defaults("again") == {"cfg": 1.5, "top_k": 20, "top_p": 0.0}
    assert path.read_bytes()[8:].lstrip().startswith(b"{")


def test_a_damaged_or_foreign_file_is_a_builtin_error(tmp_path, monkeypatch):
    from safetensors.torch import save_file
    from varlite import builtin
    (tmp_path / "cut.safetensors").write_bytes(weights_path("shapes").read_bytes()[:1000])
    monkeypatch.setattr(builtin, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(BuiltinError, match="cut.safetensors cannot be read .*reinstall varlite"):
        load_builtin("cut")
    save_file({"w": torch.zeros(2)}, tmp_path / "other.safetensors", metadata={"format": "something-else"})
    with pytest.raises(BuiltinError, match="is not a varlite built-in weights file"):
        load_builtin("other")
