"""varlite.html_export: the step-through as one self-contained web page -- its contents checked in Python, then the
page driven in Debian's headless Chromium through Playwright, opened from disk (install: `apt-get install -y
chromium`; never `playwright install`); screenshots go to test-artifacts/html_export/."""
from __future__ import annotations

import base64
import io
import json
import os
import re

import numpy as np
import pytest
import torch
from PIL import Image

from tests.browser_harness import ARTIFACTS, CHROMIUM_ARGS, checked_page, chromium_path
from varlite import export
from varlite.builtin import load_builtin, sampling_defaults
from varlite.viz import codebook_colors

MAX_BYTES = 3 * 1024 * 1024      # a page a teacher can mail
FRAME_MS = 100                   # Play's pace in the browser test's page
DATA_RE = re.compile(r'<script type="application/json" id="step-data">(.*?)</script>', re.S)


@pytest.fixture(scope="module")
def shapes():
    """The shapes model's generation of class 3 (its recommended sampling), detached, and its codebook."""
    vqvae, var = load_builtin("shapes", "cpu")
    with torch.inference_mode():
        steps = [s.detached() for s in var.generate_steps([3], **sampling_defaults("shapes"), seed=0)]
    return steps, vqvae.quantize.embedding.weight


@pytest.fixture(scope="module")
def page_path(shapes, tmp_path_factory):
    steps, codebook_VCv = shapes
    path = tmp_path_factory.mktemp("html") / "step.html"
    return export.save_step_through(path, steps, codebook_VCv, title="shapes, class 3", frame_ms=FRAME_MS)


def embedded(text: str) -> dict:
    return json.loads(DATA_RE.search(text).group(1))


def percent(p: float) -> str:
    """The page's probability text."""
    return "<0.1%" if p < 0.001 else f"{100 * p:.1f}%"


def assert_self_contained(text: str) -> None:
    """No URL to anything outside the file: every src/href/url() is a data: URI, no script or style is fetched."""
    assert "http://" not in text and "https://" not in text and "//cdn" not in text
    assert not re.search(r"<script[^>]*\bsrc\s*=", text, re.I)
    assert not re.search(r"@import", text, re.I)
    for tag in re.findall(r"<link\b[^>]*>", text, re.I):
        assert re.search(r'href\s*=\s*"data:', tag, re.I), tag
    for value in re.findall(r'\b(?:src|href)\s*=\s*"([^"]*)"', text, re.I) + re.findall(r"url\(([^)]*)\)", text):
        assert value.strip("'\"").startswith("data:"), value


# ------------------------------------------------------------------------------------------------ the file
def test_the_page_is_one_self_contained_file_under_3_mb(page_path):
    text = page_path.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>")
    assert_self_contained(text)
    assert page_path.stat().st_size < MAX_BYTES


def test_embedded_data_is_the_trace(shapes, page_path):
    """Per scale: the token map, the chosen tokens' probabilities and candidates(5) exactly (float32), the mask's
    positions, the codebook palette of the exports and the export's contribution and image panels."""
    steps, codebook_VCv = shapes
    data = embedded(page_path.read_text(encoding="utf-8"))
    assert data["title"] == "shapes, class 3" and data["frame_ms"] == FRAME_MS
    assert data["total_tokens"] == steps[0].total_tokens == 155
    palette_V3 = np.round(codebook_colors(codebook_VCv) * 255).astype(int)
    assert data["palette"] == ["#%02x%02x%02x" % tuple(rgb) for rgb in palette_V3]
    panels = export.scale_panels(steps, codebook_VCv, panel_px=export.HTML_PANEL_PX)
    assert len(data["scales"]) == len(steps) == 7
    for record, step, (_, contribution, image) in zip(data["scales"], steps, panels):
        assert (record["scale"], record["pn"], record["begin"], record["end"]) == \
            (step.scale, step.pn, step.begin, step.end)
        assert record["cfg"] == step.cfg
        assert record["tokens"] == step.tokens[0].tolist()
        tokens_Bhwk, probs_Bhwk = step.candidates(5)
        assert record["candidates"]["tokens"] == tokens_Bhwk[0].tolist()
        np.testing.assert_array_equal(np.array(record["candidates"]["probs"], np.float32), probs_Bhwk[0].numpy())
        np.testing.assert_array_equal(np.array(record["chosen_prob"], np.float32), step.token_prob[0].numpy())
        for name, panel in (("contribution", contribution), ("image", image)):
            header, png = record[name].split(",", 1)
            assert header == "data:image/png;base64"
            np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(base64.b64decode(png)))), panel)


def test_the_title_is_escaped_and_cannot_end_the_script(shapes, tmp_path):
    steps, codebook_VCv = shapes
    title = 'a <b>bold</b> & "quoted" </script><script>alert(1)</script>'
    text = export.save_step_through(tmp_path / "t.html", steps, codebook_VCv, title=title).read_text("utf-8")
    assert "<title>a &lt;b&gt;bold&lt;/b&gt; &amp; &quot;quoted&quot; &lt;/script&gt;" in text
    assert text.count("</script>") == 2 and "<script>alert" not in text      # only the page's own two scripts
    assert embedded(text)["title"] == title


def test_html_is_chosen_by_suffix():        # an encoding's page: tests/test_html_export_encoding.py
    assert export.check_export_path("Step.HTML") == "html"


@pytest.mark.parametrize("model", ["shapes", "cifar10"])
def test_figure_command_writes_a_page_under_3_mb(model, tmp_path):
    from varlite.cli import main as cli_main
    out = tmp_path / "step.html"
    assert cli_main(["figure", "--model", model, "--class", "0", "--device", "cpu", "--out", str(out)]) == 0
    text = out.read_text(encoding="utf-8")
    assert_self_contained(text)
    assert out.stat().st_size < MAX_BYTES
    assert len(embedded(text)["scales"]) == 7


# ------------------------------------------------------------------------------------------------ in a browser
@pytest.fixture(scope="module")
def browser():
    playwright_sync = pytest.importorskip("playwright.sync_api")
    if chromium_path() is None:
        message = "Chromium is missing: run `apt-get install -y chromium` (Debian's package, /usr/bin/chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


def open_from_disk(pg, path) -> list[str]:
    """Load the file and return every URL the page requested but data: ones (kept up to date as it runs)."""
    requests: list[str] = []
    pg.on("request", lambda request: None if request.url.startswith("data:") else requests.append(request.url))
    pg.goto(path.as_uri())
    return requests


def shown_scale(pg) -> str:
    return pg.locator("#scale-title").inner_text()


def mask_row_shown(pg, total: int) -> np.ndarray:
    """(L,) bool: the positions the page's mask row draws as may-attend."""
    row = np.zeros(total, bool)
    for block in pg.locator("#mask div").all():
        if "seen" in block.get_attribute("class").split():
            row[int(block.get_attribute("data-begin")):int(block.get_attribute("data-end"))] = True
    return row


def candidates_shown(pg) -> list[tuple[int, np.float32, str, str, bool]]:
    """The candidate table's rows: (token, probability, token text, probability text, marked chosen)."""
    return [(int(tr.get_attribute("data-token")), np.float32(float(tr.get_attribute("data-prob"))),
             tr.locator("td.token").inner_text(), tr.locator("td.prob").inner_text(),
             "chosen" in (tr.get_attribute("class") or ""))
            for tr in pg.locator("#candidate-table tr[data-token]").all()]


def test_in_a_browser_the_page_steps_to_the_last_scale_and_shows_the_trace_candidates(browser, shapes, page_path):
    steps, _ = shapes
    K = len(steps)
    with checked_page(browser, 20_000) as pg:
        requests = open_from_disk(pg, page_path)
        assert shown_scale(pg).startswith(f"Scale 1 of {K}: 1\u00d71 = 1 token")
        for k in range(K):
            if k:
                pg.keyboard.press("ArrowRight")
            assert shown_scale(pg).startswith(f"Scale {k + 1} of {K}: {steps[k].pn}\u00d7{steps[k].pn}")
            assert pg.locator("#grid button").count() == steps[k].pn ** 2
            rows_lL = steps[k].mask_rows()
            np.testing.assert_array_equal(np.broadcast_to(mask_row_shown(pg, rows_lL.shape[1]), rows_lL.shape),
                                          rows_lL.numpy())
        pg.keyboard.press("ArrowRight")                  # past the last scale: it stays there
        assert shown_scale(pg).startswith(f"Scale {K} of {K}") and pg.locator("#next").is_disabled()

        step, (r, c) = steps[-1], (5, 2)
        pg.locator(f'#grid button[data-row="{r}"][data-col="{c}"]').click()
        tokens_Bhwk, probs_Bhwk = step.candidates(5)
        chosen = int(step.tokens[0, r, c])
        want = [(int(t), np.float32(p), str(int(t)), percent(float(p)), int(t) == chosen)
                for t, p in zip(tokens_Bhwk[0, r, c], probs_Bhwk[0, r, c])]
        assert [(t, p, text.split()[0], ptext, marked) for t, p, text, ptext, marked in candidates_shown(pg)] == want
        summary = pg.locator("#candidates p").inner_text()
        assert f"row {r}, column {c}: the sampler chose token {chosen} " in summary
        assert percent(float(step.token_prob[0, r, c])) in summary
        (ARTIFACTS / "html_export").mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / "html_export" / "desktop.png"), full_page=True)

        pg.keyboard.press("ArrowLeft")                   # a new scale clears the choice
        assert shown_scale(pg).startswith(f"Scale {K - 1} of {K}") and pg.locator("#candidate-table").count() == 0
        pg.locator("#play").click()                      # Play runs from here to the last scale, then stops
        pg.wait_for_function(f"document.querySelector('#scale-title').textContent.startsWith('Scale {K} of')")
        pg.wait_for_function("document.querySelector('#play').textContent === 'Play'")
    assert requests == [page_path.as_uri()]             # nothing but the file itself: no network, no CDN


def test_on_a_phone_the_page_fits_and_answers_taps_and_swipes(browser, shapes, page_path):
    steps, _ = shapes
    with checked_page(browser, 20_000, device_scale_factor=2, is_mobile=True, has_touch=True) as pg:
        pg.set_viewport_size({"width": 390, "height": 844})     # checked_page opens a laptop's viewport
        requests = open_from_disk(pg, page_path)
        assert pg.evaluate("document.documentElement.scrollWidth") <= 390      # no sideways scrolling
        pg.locator("#next").tap()
        assert shown_scale(pg).startswith("Scale 2 of 7")
        swipe_left = """() => {
          const panels = document.getElementById('panels');
          const touch = x => new Touch({identifier: 1, target: panels, clientX: x, clientY: 400});
          panels.dispatchEvent(new TouchEvent('touchstart', {changedTouches: [touch(320)], bubbles: true}));
          panels.dispatchEvent(new TouchEvent('touchend', {changedTouches: [touch(80)], bubbles: true}));
        }"""
        pg.evaluate(swipe_left)
        step = steps[2]
        assert shown_scale(pg).startswith("Scale 3 of 7: 3\u00d73")
        pg.locator('#grid button[data-row="1"][data-col="2"]').tap()
        tokens_Bhwk, _ = step.candidates(5)
        assert [row[0] for row in candidates_shown(pg)] == tokens_Bhwk[0, 1, 2].tolist()
        grid_box = pg.locator("#grid").bounding_box()
        assert grid_box["width"] >= 300                  # the token map spans the phone's width: cells easy to tap
        (ARTIFACTS / "html_export").mkdir(parents=True, exist_ok=True)
        pg.screenshot(path=str(ARTIFACTS / "html_export" / "phone.png"), full_page=True)
    assert requests == [page_path.as_uri()]
