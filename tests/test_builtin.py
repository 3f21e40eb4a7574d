"""The shipped models: they load, are small, have model cards, and generate deterministically."""
from __future__ import annotations

import pytest
import torch

from varlite.builtin import BuiltinError, list_builtin, load_builtin, model_card, weights_path
from varlite.var import VAR
from varlite.vqvae import VQVAE

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
