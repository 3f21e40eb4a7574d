"""The walkthrough in a real browser: the test starts `streamlit run app/streamlit_app.py` on a free port, drives
Debian's headless Chromium with Playwright (install: `apt-get install -y chromium`; never `playwright install`),
steps through a generation, uses compare mode and an edit, checks that images render and that no exception element
appears, and saves a full-page screenshot of every page to test-artifacts/screenshots/ (`make screenshots` runs
this file and copies them to docs/screenshots/ for the README; a plain test run never touches tracked files).
"""
from __future__ import annotations

import re

import pytest

from tests.browser_harness import ARTIFACTS, BROKEN_IMAGES_JS, CHROMIUM_ARGS, SETTLED_JS, checked_page, chromium_path, \
    full_page_screenshot, serve_app_for_tests

playwright_sync = pytest.importorskip("playwright.sync_api")

SCREENSHOTS = ARTIFACTS / "screenshots"
SETTLE_MS = 120_000      # the first page load imports torch and builds the first trace


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serve_app_for_tests(tmp_path_factory.mktemp("varlite_home"), "streamlit-server.log") as url:
        yield url


@pytest.fixture(scope="module")
def browser(server):
    with playwright_sync.sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser):
    with checked_page(browser, SETTLE_MS) as pg:
        yield pg


def settle(pg) -> None:
    pg.wait_for_timeout(250)               # let a rerun that was just triggered start
    pg.wait_for_function(SETTLED_JS, timeout=SETTLE_MS)
    pg.wait_for_timeout(150)
    pg.wait_for_function(SETTLED_JS, timeout=SETTLE_MS)


def check_page(pg) -> None:
    """No exception element, no broken image, at least one image or chart rendered."""
    assert pg.locator('[data-testid="stException"]').count() == 0, pg.locator('[data-testid="stException"]').first.inner_text()
    assert pg.evaluate(BROKEN_IMAGES_JS) == []


def open_page(pg, server: str, path: str, ready_text: str) -> None:
    pg.goto(f"{server}/{path}")
    pg.get_by_text(ready_text).first.wait_for()
    settle(pg)
    check_page(pg)


def screenshot(pg, name: str) -> None:
    full_page_screenshot(pg, SCREENSHOTS / f"{name}.png")


def current_scale(pg) -> tuple[int, int]:
    text = pg.get_by_text(re.compile(r"^Scale \d+ of \d+:")).first.inner_text()
    k, K = re.match(r"Scale (\d+) of (\d+)", text).groups()
    return int(k), int(K)


# The boxes of the panels' hover toolbars (one per chart or image, drawn above it) that overlap the box of the scale's
# heading's text.
TOOLBARS_ON_HEADING_JS = """() => {
  const heading = Array.from(document.querySelectorAll('h3')).find(h => /^Scale \\d+ of/.test(h.innerText));
  const text = document.createRange();
  text.selectNodeContents(heading);
  const h = text.getBoundingClientRect();
  return Array.from(document.querySelectorAll('.st-key-gen_panels [data-testid="stElementToolbar"]'))
    .map(t => t.getBoundingClientRect())
    .filter(r => r.height > 0 && r.bottom > h.top && r.top < h.bottom && r.right > h.left && r.left < h.right)
    .map(r => [r.left, r.top, r.width, r.height]);
}"""


def test_step_through_a_generation(page, server):
    open_page(page, server, "", "Scale 1 of")
    k, K = current_scale(page)
    assert k == 1
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 4")
    images = page.locator('[data-testid="stImage"] img')
    assert images.count() == 4                        # overview strip, contribution, decoded image, mask
    page.locator('.st-key-gen_panels [data-testid="stVegaLiteChart"]').first.hover()     # its toolbar shows
    page.wait_for_function("() => Array.from(document.querySelectorAll('.st-key-gen_panels "
                           "[data-testid=\"stElementToolbar\"]')).some(t => getComputedStyle(t).opacity === '1')")
    assert page.evaluate(TOOLBARS_ON_HEADING_JS) == [], "a hover toolbar covers the 'Scale k' heading"
    for expected in range(2, K + 1):
        page.get_by_role("button", name="Next").click()
        page.get_by_text(f"Scale {expected} of {K}:").wait_for()
        settle(page)
        check_page(page)
    assert page.get_by_role("button", name="Next").is_disabled()
    page.get_by_role("button", name="Previous").click()
    page.get_by_text(f"Scale {K - 1} of {K}:").wait_for()
    settle(page)
    page.get_by_text("Show its attention over the scales it can see").click()
    page.get_by_text("where token").or_(page.get_by_text("Layer")).first.wait_for()
    settle(page)
    check_page(page)
    screenshot(page, "generate")


def slider_value(pg) -> int:
    return int(pg.locator('input[type="range"][aria-label="Scale"]').input_value())


def test_every_click_counts(page, server):
    """Issue 14 item 1: clicks faster than the page redraws are all applied, and slider and heading agree."""
    open_page(page, server, "", "Scale 1 of")
    _, K = current_scale(page)
    for _ in range(K - 1):
        page.get_by_role("button", name="Next").click()
        page.wait_for_timeout(300)
    page.get_by_text(f"Scale {K} of {K}:").wait_for()
    settle(page)
    assert current_scale(page) == (K, K) and slider_value(page) == K
    for _ in range(3):
        page.get_by_role("button", name="Previous").click()
        page.wait_for_timeout(100)
    page.get_by_text(f"Scale {K - 3} of {K}:").wait_for()
    settle(page)
    assert current_scale(page) == (K - 3, K) and slider_value(page) == K - 3


def test_play_steps_by_itself_and_stops_at_the_last_scale(page, server):
    open_page(page, server, "", "Scale 1 of")
    _, K = current_scale(page)
    page.get_by_role("button", name="Play", exact=True).click()
    page.get_by_role("button", name="Pause", exact=True).wait_for()
    page.get_by_text(f"Scale {K} of {K}:").wait_for(timeout=(K + 20) * 1000)     # one scale per second
    page.get_by_role("button", name="Play", exact=True).wait_for()                # stopped by itself
    settle(page)
    check_page(page)
    assert current_scale(page) == (K, K) and slider_value(page) == K


def test_compare_mode_is_step_locked(page, server):
    open_page(page, server, "", "Scale 1 of")
    _, K = current_scale(page)
    page.wait_for_function("() => document.querySelectorAll('[data-testid=\"stImage\"] img').length >= 4")
    single = page.locator('[data-testid="stImage"] img').count()
    page.get_by_text("Compare with a second setting").click()
    page.get_by_text("Setting B").wait_for()
    settle(page)
    assert page.locator('[data-testid="stImage"] img').count() == single + 1 + 4      # A's token map: a picture
    page.get_by_role("button", name="Next").click()
    page.get_by_text(f"Scale 2 of {K}:").wait_for()
    settle(page)
    check_page(page)
    screenshot(page, "generate-compare")


def test_edit_outpainting(page, server):
    open_page(page, server, "edit", "Before / after")
    page.get_by_text("Out-painting: keep the region").click()
    settle(page)
    check_page(page)
    captions = page.locator('[data-testid="stImageCaption"], [data-testid="stCaptionContainer"]').all_inner_texts()
    assert any(c.strip() == "after" for c in captions), captions
    screenshot(page, "edit")


@pytest.mark.parametrize("path,ready", [("encode", "Rest left after this scale"),
                                        ("cost", "Measured, on this machine"),
                                        ("models", "Official weights")])
def test_other_pages_render(page, server, path, ready):
    open_page(page, server, path, ready)
    if path == "encode":             # a middle scale shows more than the first
        page.get_by_role("slider").first.focus()
        for _ in range(3):
            page.keyboard.press("ArrowRight")
        page.get_by_text(re.compile(r"^Scale 4 of \d+:")).wait_for()
        settle(page)
        check_page(page)
    screenshot(page, path)
