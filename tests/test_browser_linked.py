"""Linked views and paint-to-edit in a real browser (issue 12 sections 1 and 2): a click on a token map moves the
picked position on every panel, a dragged box and clicks paint an edit region, and token surgery replaces a clicked
token. Uses the server and browser of tests/test_browser.py; saves screenshots of each interaction to
test-artifacts/screenshots/ (generate-linked.png, encode-linked.png, edit-paint.png, edit-surgery.png)."""
from __future__ import annotations

import re

import pytest

from tests.test_browser import browser, check_page, open_page, page, screenshot, server, settle  # noqa: F401

pytest.importorskip("playwright.sync_api")


def cell_xy(pg, chart: int, row: int, col: int) -> tuple[float, float]:
    """The page coordinates of the centre of cell (row, col) of the chart-th Altair chart of the page, found by the
    rect's own label (Vega labels every mark with its fields: "col: 1; row: 0; ...")."""
    svg = pg.locator('[data-testid="stVegaLiteChart"] svg').nth(chart)
    svg.wait_for()
    svg.scroll_into_view_if_needed()
    box = svg.evaluate("""(svg, [row, col]) => {
      const rect = Array.from(svg.querySelectorAll('path[aria-label]'))
        .find(p => p.getAttribute('aria-label').startsWith(`col: ${col}; row: ${row};`));
      const b = rect.getBoundingClientRect();
      return {x: b.x + b.width / 2, y: b.y + b.height / 2};
    }""", [row, col])
    return box["x"], box["y"]


def picked(pg) -> tuple[int, int]:
    text = pg.get_by_text(re.compile(r"^Position \(\d+, \d+\): chosen token")).first.inner_text()
    return tuple(int(v) for v in re.match(r"Position \((\d+), (\d+)\)", text).groups())


CAPTIONED_SRC_JS = """caption => {
  for (const fig of document.querySelectorAll('[data-testid="stImage"]')) {
    if (fig.innerText.trim() === caption) return fig.querySelector('img').src;
  }
  return null;
}"""


def captioned_src(pg, caption: str) -> str:
    """The address of the image whose caption is ``caption`` (images are served by address; a new picture gets a
    new one)."""
    pg.get_by_text(caption, exact=True).first.wait_for()
    return pg.evaluate(CAPTIONED_SRC_JS, caption)


def wait_for_new_image(pg, caption: str, old_src: str) -> None:
    """Wait until the image captioned ``caption`` is a new picture (a selection is sent up to 150 ms after the
    gesture, then the page reruns)."""
    pg.wait_for_function(f"([caption, old]) => {{ const src = ({CAPTIONED_SRC_JS})(caption); "
                         f"return src !== null && src !== old; }}", arg=[caption, old_src])
    settle(pg)


def image_sources(pg, at_least: int = 3) -> list[str]:
    pg.wait_for_function(f"() => document.querySelectorAll('[data-testid=\"stImage\"] img').length >= {at_least}")
    return pg.locator('[data-testid="stImage"] img').evaluate_all("imgs => imgs.map(i => i.src)")


def test_click_a_token_and_the_highlight_moves_on_every_panel(page, server):  # noqa: F811
    open_page(page, server, "", "Scale 1 of")
    page.get_by_role("button", name="Next").click()
    page.get_by_text(re.compile(r"^Scale 2 of \d+:")).first.wait_for()
    settle(page)
    assert picked(page) == (1, 1)                          # the centre of the image
    before = image_sources(page)
    page.mouse.click(*cell_xy(page, 0, 0, 1))      # the token map (the first chart)
    page.get_by_text(re.compile(r"^Position \(0, 1\)")).wait_for()
    settle(page)
    check_page(page)
    after = image_sources(page)
    assert after[0] == before[0]                            # the overview strip does not change
    assert all(a != b for a, b in zip(after[1:4], before[1:4]))    # contribution, decoded image, mask: re-framed
    page.get_by_role("button", name="Next").click()        # 3x3: the same area is cell (0, 2)
    page.get_by_text(re.compile(r"^Scale 3 of \d+:")).first.wait_for()
    settle(page)
    assert picked(page) == (0, 2)
    page.mouse.click(*cell_xy(page, 2, 2, 0))      # the entropy map (the third chart)
    page.get_by_text(re.compile(r"^Position \(2, 0\)")).wait_for()
    settle(page)
    check_page(page)
    screenshot(page, "generate-linked")


def test_click_a_token_on_encode_and_the_frame_moves_on_every_panel(page, server):  # noqa: F811
    open_page(page, server, "encode", "Rest left after this scale")
    page.get_by_role("slider").first.focus()
    page.keyboard.press("ArrowRight")                       # scale 2 (2x2): the centre point is token (1, 1)
    page.get_by_text(re.compile(r"^Scale 2 of \d+:")).wait_for()
    settle(page)
    page.get_by_text(re.compile(r"^Picked position \(1, 1\)")).wait_for()
    before = image_sources(page, 6)
    page.mouse.click(*cell_xy(page, 2, 0, 1))               # the token map (after the two line charts)
    page.get_by_text(re.compile(r"^Picked position \(0, 1\)")).wait_for()
    settle(page)
    check_page(page)
    after = image_sources(page, 6)
    assert after[0] == before[0]                            # the input image does not change
    assert all(a != b for a, b in zip(after[1:6], before[1:6]))    # the five picture panels: re-framed
    screenshot(page, "encode-linked")
    for width in (1000, 1400):                              # the map fits its column: it does not cover the next panel
        page.set_viewport_size({"width": width, "height": 1000})
        settle(page)
        map_right = page.locator('[data-testid="stVegaLiteChart"] svg').nth(2).bounding_box()
        next_panel = page.locator('[data-testid="stImage"] img').nth(2).bounding_box()   # the contribution
        assert map_right["x"] + map_right["width"] <= next_panel["x"], (width, map_right, next_panel)


def test_paint_a_mask_and_run_an_edit_then_replace_a_token(page, server):  # noqa: F811
    open_page(page, server, "edit", "Before / after")
    after_default = captioned_src(page, "after")
    (x0, y0), (x1, y1) = cell_xy(page, 0, 0, 5), cell_xy(page, 0, 2, 7)     # shapes: an 8x8 grid
    page.mouse.move(x0, y0)                                # drag a box over rows 0..2, columns 5..7
    page.mouse.down()
    for step in range(1, 6):
        page.mouse.move(x0 + (x1 - x0) * step / 5, y0 + (y1 - y0) * step / 5)
    page.mouse.up()
    page.get_by_text("Painted by hand.", exact=False).wait_for()
    wait_for_new_image(page, "after", after_default)       # the edit ran again with the painted region
    check_page(page)
    region_before = captioned_src(page, "the region")
    page.mouse.click(*cell_xy(page, 0, 7, 0))   # a click switches one painted cell off
    wait_for_new_image(page, "the region", region_before)
    check_page(page)
    captions = page.locator('[data-testid="stImageCaption"], [data-testid="stCaptionContainer"]').all_inner_texts()
    assert any(c.strip() == "after" for c in captions)
    screenshot(page, "edit-paint")

    page.get_by_text("Token surgery: replace tokens").click()
    page.get_by_text("Replace with").wait_for()
    settle(page)
    page.mouse.click(*cell_xy(page, 0, 3, 3))      # add token (3, 3) of the 4x4 scale
    page.get_by_text(re.compile(r"^5 tokens of scale 4 become token")).wait_for()
    settle(page)
    options = page.get_by_text(re.compile(r"^\d+ \(\d+%\)( ← now)?$"))     # the candidates, most likely first
    third = int(options.nth(2).inner_text().split()[0])
    options.nth(2).click()
    page.get_by_text(re.compile(rf"^5 tokens of scale 4 become token {third} ")).wait_for()
    settle(page)
    check_page(page)
    screenshot(page, "edit-surgery")
