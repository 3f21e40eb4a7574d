"""Load test of the walkthrough: N browser sessions step through a generation at the same time.

    python bench/bench_app.py                 # 10 sessions, the default (built-in) model
    python bench/bench_app.py --sessions 30
    python bench/bench_app.py --url http://host:8501 --model untrained:d16   # an already running server

Starts `streamlit run app/streamlit_app.py` on a free port (unless --url), loads the page once to warm the caches
(imports, model, trace: reported as "first load"), then opens N sessions in one headless Chromium (Debian's, via
Playwright) that all load the Generate page and step through every scale forward (Next) and back (Previous), as
fast as the page allows. A step's latency is measured in the browser: from the click until the new scale's heading
is shown and nothing on the page is stale or loading. The server-side render time of each step is read from the
page's own "step rendered in ... ms" caption. Prints p50 / p95 / max of both and the number of errors (exception
elements in a page, timeouts).

The browsers run on the same machine as the server and cost more CPU than it does: for many sessions use
bench/bench_app_load.py (one protocol-level client, no browser); this script checks what only a browser shows.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser_harness import CHROMIUM_ARGS, SETTLED_JS, chromium_path, streamlit_server  # noqa: E402

STEP_TIMEOUT_MS = 120_000


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


async def wait_settled(page, heading: str) -> None:
    await page.get_by_text(heading).first.wait_for(timeout=STEP_TIMEOUT_MS)
    await page.wait_for_function(SETTLED_JS, timeout=STEP_TIMEOUT_MS)


async def server_ms(page) -> float | None:
    text = await page.get_by_text(re.compile(r"step rendered in \d+ ms")).first.inner_text()
    match = re.search(r"(\d+) ms", text)
    return float(match.group(1)) if match else None


async def session(browser, url: str, idx: int, results: dict, delay_s: float = 0.0) -> None:
    await asyncio.sleep(delay_s)
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    try:
        t0 = time.perf_counter()
        await page.goto(url, timeout=STEP_TIMEOUT_MS)
        await page.get_by_text(re.compile(r"^Scale 1 of \d+:")).first.wait_for(timeout=STEP_TIMEOUT_MS)
        await page.wait_for_function(SETTLED_JS, timeout=STEP_TIMEOUT_MS)
        results["load_s"].append(time.perf_counter() - t0)
        heading = await page.get_by_text(re.compile(r"^Scale 1 of \d+:")).first.inner_text()
        K = int(re.match(r"Scale 1 of (\d+)", heading).group(1))
        plan = [("Next", k) for k in range(2, K + 1)] + [("Previous", k) for k in range(K - 1, 0, -1)]
        for button, k in plan:
            t = time.perf_counter()
            await page.get_by_role("button", name=button, exact=True).click(timeout=STEP_TIMEOUT_MS)
            await wait_settled(page, f"Scale {k} of {K}:")
            results["step_ms"].append((time.perf_counter() - t) * 1000)
            ms = await server_ms(page)
            if ms is not None:
                results["server_ms"].append(ms)
            if await page.locator('[data-testid="stException"]').count():
                results["errors"].append(f"session {idx}: exception element after {button} to scale {k}")
    except Exception as err:      # noqa: BLE001 -- a failed session is counted, the others go on
        results["errors"].append(f"session {idx}: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    finally:
        await context.close()


async def run(url: str, sessions: int, model: str | None, ramp_s: float) -> dict:
    from playwright.async_api import async_playwright
    if model:
        url = f"{url}/?model={model}"
    results = {"load_s": [], "step_ms": [], "server_ms": [], "errors": []}
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        warm = {"load_s": [], "step_ms": [], "server_ms": [], "errors": []}
        t0 = time.perf_counter()
        await session(browser, url, -1, warm)        # warms imports, the model and the trace
        results["first_load_s"] = time.perf_counter() - t0
        results["warm_errors"] = warm["errors"]
        t0 = time.perf_counter()
        await asyncio.gather(*(session(browser, url, i, results, i * ramp_s) for i in range(sessions)))
        results["wall_s"] = time.perf_counter() - t0
        await browser.close()
    return results


def report(results: dict, sessions: int) -> None:
    steps, server = results["step_ms"], results["server_ms"]
    print(f"sessions: {sessions}   machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} "
          f"(the browsers run on the same machine as the server)")
    print(f"first load (cold server, one session): {results['first_load_s']:.1f} s"
          + (f"  [errors: {results['warm_errors']}]" if results["warm_errors"] else ""))
    if results["load_s"]:
        print(f"page load under load: p50 {percentile(results['load_s'], 50):.1f} s, "
              f"p95 {percentile(results['load_s'], 95):.1f} s")
    print(f"steps measured: {len(steps)} in {results['wall_s']:.1f} s")
    if steps:
        print(f"step latency in the browser (click -> settled page): p50 {percentile(steps, 50):.0f} ms, "
              f"p95 {percentile(steps, 95):.0f} ms, max {max(steps):.0f} ms")
    if server:
        print(f"step render on the server (the fragment's own timer):  p50 {percentile(server, 50):.0f} ms, "
              f"p95 {percentile(server, 95):.0f} ms, mean {statistics.fmean(server):.0f} ms")
    print(f"errors: {len(results['errors'])}")
    for err in results["errors"][:10]:
        print("  " + err)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=10, help="concurrent browser sessions (default 10)")
    parser.add_argument("--ramp", type=float, default=0.5,
                        help="seconds between session starts (a class does not click at the same millisecond)")
    parser.add_argument("--url", help="benchmark an already running server instead of starting one")
    parser.add_argument("--model", help="model key to load, e.g. builtin:shapes, untrained:tiny, official:d16 "
                                        "(untrained:d16 needs VARLITE_APP_DEV=1 in the server's environment)")
    args = parser.parse_args(argv)
    if chromium_path() is None:
        print("Chromium is missing: apt-get install -y chromium", file=sys.stderr)
        return 2
    if args.url:
        results = asyncio.run(run(args.url.rstrip("/"), args.sessions, args.model, args.ramp))
    else:
        log = ROOT / "test-artifacts" / "bench-server.log"
        log.parent.mkdir(exist_ok=True)
        with streamlit_server(log_path=log, env={"VARLITE_APP_DEV": "1"} if args.model == "untrained:d16" else None) as url:
            results = asyncio.run(run(url, args.sessions, args.model, args.ramp))
    report(results, args.sessions)
    return 1 if results["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
