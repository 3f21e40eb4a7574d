"""Two kinds of sessions at once, checked after every step: does the page always show one scale?

    python bench/bench_app_sessions.py                       # 1 player + 1 uploader, 60 s, built-in cifar10
    python bench/bench_app_sessions.py --players 4 --uploaders 2 --seconds 120 --model builtin:shapes

Starts `streamlit run app/streamlit_app.py` on a free port and drives Debian's headless Chromium (Playwright):
- a *player* opens the Generate page (``?model=...``), sets a new seed, presses Reset, then Play, and after every
  scale the page shows checks that the slider, the heading ("Scale k of K") and the inspector's caption agree;
  then clicks Next / Previous in quick bursts and checks again once the page settled;
- an *uploader* opens the Encode page and uploads a new random image every ~4 s (work that competes with the
  player for the server's CPU).
Prints the plays and steps checked, every disagreement (with what was shown), errors, and the server's resident
memory (RSS) sampled every 5 s: with bounded caches it levels off.
"""
from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import re
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser_harness import CHROMIUM_ARGS, SETTLED_JS, chromium_path, rss_mib, streamlit_process  # noqa: E402

TIMEOUT_MS = 120_000
HEADING = re.compile(r"^Scale (\d+) of (\d+):")


async def shown(page) -> tuple[int, int, int]:
    """(heading k, K, slider value) as the page shows them now."""
    current = page.locator('[data-stale="false"]')        # elements of the last run (not yet replaced ones)
    text = await current.get_by_text(HEADING).first.inner_text()
    k, K = map(int, HEADING.match(text).groups())
    slider = int(await current.locator('input[type="range"][aria-label="Scale"]').first.input_value())
    return k, K, slider


async def settled(page) -> None:
    await page.wait_for_timeout(200)
    await page.wait_for_function(SETTLED_JS, timeout=TIMEOUT_MS)


async def check(page, results: dict, who: str, expected: int | None = None) -> int:
    """Count a disagreement only if it lasts: a run being drawn shows new and old elements for a moment."""
    for attempt in range(4):
        k, K, slider = await shown(page)
        if k == slider and expected in (None, k):
            break
        await page.wait_for_timeout(400)
    results["checks"] += 1
    if k != slider or expected not in (None, k):
        results["disagreements"].append(f"{who}: heading {k}, slider {slider}, expected {expected} (K={K})")
    return K


async def player(browser, url: str, idx: int, results: dict, seconds: float) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    rng = random.Random(idx)
    try:
        await page.goto(url, timeout=TIMEOUT_MS)
        await page.get_by_text(HEADING).first.wait_for(timeout=TIMEOUT_MS)
        await settled(page)
        stop_at = time.monotonic() + seconds            # the time counts from the first page drawn
        while time.monotonic() < stop_at:
            seed = page.get_by_label("Seed", exact=True).first
            await seed.fill(str(rng.randrange(1, 10**6)))
            await seed.press("Enter")
            await settled(page)
            await page.get_by_role("button", name="Reset").click()
            await settled(page)
            K = await check(page, results, f"player {idx} after Reset", 1)
            await page.get_by_role("button", name="Play", exact=True).click()
            for k in range(2, K + 1):                    # every scale the page shows while playing, once drawn
                await page.get_by_text(f"Scale {k} of {K}:").first.wait_for(timeout=TIMEOUT_MS)
                await page.wait_for_function(SETTLED_JS, timeout=TIMEOUT_MS)
                await check(page, results, f"player {idx} playing")
            await page.get_by_role("button", name="Play", exact=True).wait_for(timeout=TIMEOUT_MS)
            await settled(page)
            await check(page, results, f"player {idx} after Play", K)
            results["plays"] += 1
            clicks = rng.randrange(2, K)                 # a burst of Previous, then the same number of Next
            for name in ["Previous"] * clicks + ["Next"] * clicks:
                await page.get_by_role("button", name=name).click()
                await page.wait_for_timeout(rng.randrange(100, 400))
            await settled(page)
            await check(page, results, f"player {idx} after a burst of {clicks}+{clicks} clicks", K)
    except Exception as err:      # noqa: BLE001 -- a failed session is counted, the others go on
        results["errors"].append(f"player {idx}: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    finally:
        await context.close()


def random_png(rng: np.random.Generator) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


async def uploader(browser, url: str, idx: int, results: dict, seconds: float) -> None:
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    rng = np.random.default_rng(idx)
    try:
        await page.goto(url.replace("/?", "/encode?"), timeout=TIMEOUT_MS)
        await page.get_by_text("Upload", exact=True).click()
        stop_at = time.monotonic() + seconds
        while time.monotonic() < stop_at:
            await page.locator('input[type="file"]').set_input_files(
                files=[{"name": f"u{idx}.png", "mimeType": "image/png", "buffer": random_png(rng)}])
            await page.get_by_text("Rest left after this scale").first.wait_for(timeout=TIMEOUT_MS)
            results["uploads"] += 1
            await page.wait_for_timeout(4000)
    except Exception as err:      # noqa: BLE001
        results["errors"].append(f"uploader {idx}: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    finally:
        await context.close()


async def sample_rss(pid: int, results: dict, done: asyncio.Event) -> None:
    start = time.monotonic()
    while not done.is_set():
        results["rss"].append((time.monotonic() - start, rss_mib(pid)))
        await asyncio.sleep(5)


async def run(url: str, pid: int, args) -> dict:
    from playwright.async_api import async_playwright
    results = {"checks": 0, "plays": 0, "uploads": 0, "disagreements": [], "errors": [], "rss": []}
    url = f"{url}/?model={args.model}"
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        done = asyncio.Event()
        sampler = asyncio.create_task(sample_rss(pid, results, done))
        await asyncio.gather(*(player(browser, url, i, results, args.seconds) for i in range(args.players)),
                             *(uploader(browser, url, i, results, args.seconds) for i in range(args.uploaders)))
        done.set()
        await sampler
        await browser.close()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--players", type=int, default=1)
    parser.add_argument("--uploaders", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=60.0, help="per session, from its first page drawn")
    parser.add_argument("--model", default="builtin:cifar10")
    args = parser.parse_args(argv)
    if chromium_path() is None:
        print("Chromium is missing: apt-get install -y chromium", file=sys.stderr)
        return 2
    log = ROOT / "test-artifacts" / "bench-sessions-server.log"
    log.parent.mkdir(exist_ok=True)
    with streamlit_process(log_path=log) as (url, proc):
        results = asyncio.run(run(url, proc.pid, args))
    print(f"{args.players} player(s), {args.uploaders} uploader(s), {args.seconds:.0f} s, model {args.model}; "
          f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} (browsers share the machine)")
    print(f"plays: {results['plays']}, uploads: {results['uploads']}, checks of slider = heading: {results['checks']}")
    print(f"disagreements: {len(results['disagreements'])}")
    for line in results["disagreements"][:10]:
        print("  " + line)
    print("server RSS (MiB) every 5 s: " + ", ".join(f"{mib:.0f}" for _, mib in results["rss"]))
    print(f"errors: {len(results['errors'])}")
    for line in results["errors"][:10]:
        print("  " + line)
    return 1 if results["disagreements"] or results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
