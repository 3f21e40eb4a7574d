"""varlite.html_export for an encoding: the step-through page of ``VQVAE.encode_steps`` (token map, contribution, rest
and reconstruction per scale, the nearest codebook entries of a clicked token) -- its contents checked in Python, then
stepped through in headless Chromium opened from disk (the browser fixture of tests/test_html_export.py)."""
from __future__ import annotations

import base64
import io

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_html_export import (MAX_BYTES, assert_self_contained, browser, embedded,  # noqa: F401 (fixture)
                                    open_from_disk, shown_scale)
from tests.browser_harness import checked_page
from varlite import export, html_export
from varlite.builtin import load_builtin
from varlite.data.shapes import Shapes
from varlite.images import prepare_image


@pytest.fixture(scope="module")
def encoding():
    """The shapes tokenizer's encoding of a test image of the Shapes dataset, detached, and its codebook."""
    vqvae, _ = load_builtin("shapes", "cpu")
    image_hw3 = Shapes(n=4, image_size=32, split="test").images_u8[3].permute(1, 2, 0).numpy()
    x_13HW, _ = prepare_image(image_hw3, 32)
    with torch.inference_mode():
        steps = [step.detached() for step in vqvae.encode_steps(x_13HW)]
    return steps, vqvae.quantize.embedding.weight


@pytest.fixture(scope="module")
def page_path(encoding, tmp_path_factory):
    steps, codebook_VCv = encoding
    path = tmp_path_factory.mktemp("html") / "encoding.html"
    return export.save_step_through(path, steps, codebook_VCv, title="shapes, an encoding")


def png_panel(uri: str) -> np.ndarray:
    header, png = uri.split(",", 1)
    assert header == "data:image/png;base64"
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(png))))


def test_an_encoding_exports_as_one_self_contained_page(page_path):
    text = page_path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<title>shapes, an encoding</title>" in text
    assert_self_contained(text)
    assert page_path.stat().st_size < MAX_BYTES
    assert 'id="rest"' in text and "Nearest codebook entries" in text
    assert 'id="mask"' not in text            # no transformer, no attention mask


def test_one_record_per_scale_holds_the_encoding(encoding, page_path):
    """Per scale: its index and side, the token map, the rest's share of ||f||, the PSNR, the contribution, rest and
    image panels of the exports, and the 5 nearest codebook entries of every position with their distances."""
    steps, codebook_VCv = encoding
    data = embedded(page_path.read_text(encoding="utf-8"))
    assert data["kind"] == "encoding" and data["title"] == "shapes, an encoding"
    assert [(r["scale"], r["pn"]) for r in data["scales"]] == [(k, pn) for k, pn in enumerate((1, 2, 3, 4, 5, 6, 8))]
    panels = export.scale_panels(steps, codebook_VCv, panel_px=export.HTML_PANEL_PX)
    rests = export.rest_panels(steps, panel_px=export.HTML_PANEL_PX)
    for record, step, (_, contribution, image), rest in zip(data["scales"], steps, panels, rests):
        assert record["tokens"] == step.tokens[0].tolist()
        assert record["rest_share"] == float(step.rest_norm[0]) and record["psnr"] == float(step.psnr()[0])
        for name, panel in (("contribution", contribution), ("rest", rest), ("image", image)):
            np.testing.assert_array_equal(png_panel(record[name]), panel)
        tokens_hwk = torch.tensor(record["candidates"]["tokens"])
        distances_hwk = torch.tensor(record["candidates"]["distances"])
        target_hwCv = step.target[0].permute(1, 2, 0)
        expected_hwk = (target_hwCv[:, :, None, :] - codebook_VCv.detach()[tokens_hwk]).norm(dim=-1)
        torch.testing.assert_close(distances_hwk, expected_hwk, rtol=1e-5, atol=1e-6)
        assert bool((distances_hwk.diff(dim=-1) >= 0).all())          # nearest first
        chosen_hw = (target_hwCv - codebook_VCv.detach()[step.tokens[0]]).norm(dim=-1)
        torch.testing.assert_close(chosen_hw, distances_hwk[..., 0], rtol=1e-5, atol=1e-6)   # the chosen is nearest
    assert data["scales"][-1]["rest_share"] < data["scales"][0]["rest_share"]


def test_the_rest_panels_darken_and_a_page_needs_a_whole_encoding_or_generation(encoding):
    steps, codebook_VCv = encoding
    rests = export.rest_panels(steps, panel_px=16)
    assert len(rests) == len(steps) and rests[0].shape == (16, 16, 3)
    assert rests[-1].astype(int).sum() < rests[0].astype(int).sum()      # viridis: smaller is darker
    panels = export.scale_panels(steps, codebook_VCv, panel_px=16)
    with pytest.raises(ValueError, match="also shows the rest after each scale"):
        export.step_through_html(steps, codebook_VCv, panels)
    assert html_export.page_kind(steps) == "encoding"
    with pytest.raises(ValueError, match="one generation .* or one encoding"):
        html_export.page_kind(list(steps) + ["not a step"])


def test_step_through_the_encoding_in_a_browser(browser, encoding, page_path):  # noqa: F811 (fixture)
    """Every scale's heading, rest and reconstruction; a click shows the nearest entries of the embedded data."""
    steps, _ = encoding
    data = embedded(page_path.read_text(encoding="utf-8"))
    K = len(steps)
    with checked_page(browser, 20_000) as pg:
        requests = open_from_disk(pg, page_path)
        assert [chip.inner_text().split("\n")[0] for chip in pg.locator("#chips button").all()] == \
            [str(k + 1) for k in range(K)]
        for k, record in enumerate(data["scales"]):
            pn = record["pn"]
            heading = shown_scale(pg)
            assert heading.startswith(f"Scale {k + 1} of {K}: {pn}\u00d7{pn} = ")
            assert f"rest left {100 * record['rest_share']:.1f}%" in heading
            assert f"PSNR {record['psnr']:.1f} dB" in heading
            assert pg.locator("#rest").get_attribute("src") == record["rest"]
            assert pg.locator("#image").get_attribute("src") == record["image"]
            assert pg.locator("#grid button").count() == pn * pn
            pg.keyboard.press("ArrowRight")
        r, c = 5, 2
        pg.locator(f'#grid button[data-row="{r}"][data-col="{c}"]').click()
        rows = pg.locator("#candidate-table tr[data-token]").all()
        last = data["scales"][-1]
        assert [int(row.get_attribute("data-token")) for row in rows] == last["candidates"]["tokens"][r][c]
        assert [float(row.get_attribute("data-distance")) for row in rows] == last["candidates"]["distances"][r][c]
        assert f"chose token {last['tokens'][r][c]}," in pg.locator("#candidates p").inner_text()
    assert requests == [page_path.as_uri()]
