"""d36-s (512 px, L = 2,240 tokens) in the walkthrough, with a small-width stand-in of its config (the same
patch_nums and shared AdaLN, depth 2, width 64, untrained): the Generate page renders every scale, the block-causal
mask is drawn at most MASK_MAX_PX wide, and the attention inspector lists the heaviest keys at every scale, the last
included (the picked token's row only, captured by generating again)."""
import io

import numpy as np
import pytest
import torch
from PIL import Image

pytest.importorskip("streamlit")
from app import figures, position_inspector, registry  # noqa: E402
from tests.test_app import assert_clean, new_app, scale_slider  # noqa: E402
from varlite import pretrained  # noqa: E402
from varlite.core import configs  # noqa: E402
from varlite.core.configs import OFFICIAL_PATCH_NUMS_512, Preset, VARConfig, VQVAEConfig, official_vqvae  # noqa: E402
from varlite.core.var import VAR  # noqa: E402
from varlite.core.vqvae import VQVAE  # noqa: E402
from varlite.synthetic import layout_of, synthetic_state_dict  # noqa: E402

STAND_IN = "d36-standin"
KEY = f"untrained:{STAND_IN}"


@pytest.fixture
def d36_stand_in(tmp_path, monkeypatch):
    vq = VQVAEConfig(vocab_size=64, z_channels=8, ch=32, ch_mult=(1, 1), num_res_blocks=1, using_sa=False,
                     using_mid_sa=False, patch_nums=OFFICIAL_PATCH_NUMS_512)
    var = VARConfig(vocab_size=64, z_channels=8, patch_nums=OFFICIAL_PATCH_NUMS_512, num_classes=10, depth=2,
                    embed_dim=64, num_heads=2, shared_aln=True)
    monkeypatch.setitem(configs.PRESETS, STAND_IN, Preset(STAND_IN, vq, var, "d36-s stand-in"))
    monkeypatch.setattr(registry, "DEV_PRESETS", (STAND_IN,))
    monkeypatch.setenv("VARLITE_APP_DEV", "1")
    monkeypatch.setenv("VARLITE_HOME", str(tmp_path))
    return var


def png_shape(data: bytes) -> tuple[int, ...]:
    return np.asarray(Image.open(io.BytesIO(data))).shape


def test_the_mask_of_2240_tokens_is_drawn_within_the_cap():
    L = sum(p * p for p in OFFICIAL_PATCH_NUMS_512)
    assert L == 2240
    for si in (0, 1, 5, 9):
        mask = np.asarray(Image.open(io.BytesIO(figures.block_mask(OFFICIAL_PATCH_NUMS_512, si, 0))))
        assert mask.shape == (figures.MASK_MAX_PX, figures.MASK_MAX_PX + 16, 3)      # + the ticks' margins
        blue_rows = (mask[:, 8:-8] == (20, 90, 220)).all(-1).any(1)
        assert blue_rows.sum() == 1                                # the picked token's row stays visible
        if si > 0:                                                 # the scale's rows too (orange)
            assert (mask == (240, 120, 20)).all(-1).any(1).sum() >= 1
    shown = figures.mask_rows_shown(L, figures.MASK_MAX_PX, 1, 5, None)
    assert set(shown) & {1, 2, 3, 4} and np.all(np.diff(shown) >= 0)


def test_top_keys_name_scale_and_position():
    patch_nums = (1, 2, 3)
    weights = np.zeros(14)
    weights[[0, 6, 13]] = (0.2, 0.5, 0.3)                          # scale 1; scale 3 (0, 1); scale 3 (2, 2)
    table = position_inspector.top_keys(weights, patch_nums, k=3)
    assert table.to_dict("records") == [{"scale": 3, "position": "(0, 1)", "weight": 0.5},
                                        {"scale": 3, "position": "(2, 2)", "weight": 0.3},
                                        {"scale": 1, "position": "(0, 0)", "weight": 0.2}]


def test_the_stand_in_renders_every_scale_and_its_attention(d36_stand_in):
    at = new_app(model_key=KEY)
    assert_clean(at)
    scale_slider(at).set_value(10).run()
    assert_clean(at)
    assert any(h.value.startswith("Scale 10 of 10") for h in at.subheader)
    assert any(caption.startswith("attention mask, L=2240") for image in at.image for caption in image.captions)
    at.toggle(key="gen_show_att").set_value(True).run()
    assert_clean(at)
    assert any(c.value.startswith("The 10 of its 2,240 keys it weighs most") for c in at.caption)
    assert any(c.value.startswith("This is the picked token's row of attention only") for c in at.caption)


def test_d36_files_load_through_the_official_path_and_generate_at_512_px(synthetic_official_home, tmp_path):
    """A stand-in var_d36.pth (d36-s's scales and shared AdaLN, depth 2, width 64) beside the official-layout vae:
    `load_official(36)` builds the 512-px tokenizer from the VAR file's scales and generates every scale."""
    vae = pretrained.OFFICIAL_FILES["vae"].filename
    (tmp_path / vae).symlink_to(synthetic_official_home / vae)
    config = VARConfig(patch_nums=OFFICIAL_PATCH_NUMS_512, depth=2, embed_dim=64, num_heads=2, shared_aln=True)
    with torch.device("meta"):
        stand_in = VAR(config, VQVAE(official_vqvae(OFFICIAL_PATCH_NUMS_512)))
    torch.save(synthetic_state_dict(layout_of(stand_in), seed=0, patch_nums=OFFICIAL_PATCH_NUMS_512),
               tmp_path / pretrained.OFFICIAL_FILES["d36"].filename)
    vqvae, var = pretrained.load_official(36, tmp_path, device="cpu")
    assert vqvae.config.image_size == 512 and var.L == 2240 and var.config.shared_aln
    steps = list(var.generate_steps([207], cfg=4.0, top_k=1, seed=0))
    assert [step.pn for step in steps] == list(OFFICIAL_PATCH_NUMS_512)
