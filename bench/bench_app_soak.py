"""The walkthrough for minutes on end with a new seed every time: is the server's memory a bounded sawtooth or does
it grow? And how long a student waits after another tab flooded the server with seed changes.

    python bench/bench_app_soak.py                          # 10 minutes, 3 sessions, then the flood figure
    python bench/bench_app_soak.py --minutes 1 --sessions 5
    python bench/bench_app_soak.py --minutes 0              # the flood figure alone

Starts `streamlit run app/streamlit_app.py` headless on a free 127.0.0.1 port with a temporary, empty
$VARLITE_HOME (the built-in models only) and drives Debian's headless Chromium (Playwright; ``apt-get install -y
chromium``, never ``playwright install``). Self-contained: nothing is imported from tests/.

1. The soak. ``--sessions`` browser sessions open the Generate page, one on each built-in model in turn
   (``--models``). Once every page is drawn, for ``--minutes`` each session repeats a cycle: a seed never used before
   (so that nothing comes from the server's run cache: every cycle is a new generation, a new run in the store),
   Reset, then Next to the last scale, each step waited for until its heading is drawn and the page has settled. A
   cycle that reached the last scale counts as one generation. Errors: a step that does not show within
   ``--timeout`` seconds, an exception or error box on the page, a JavaScript error; the session then reloads its
   page and goes on. The server's resident memory (RSS) is read every second. At the end: per minute, the lowest
   and highest RSS, the generations finished and the errors, and the line ``soak_minutes=... sessions=...
   generations=... rss_min_mib=... rss_max_mib=... rss_last_minute_max_mib=... errors=...``. The server keeps at
   most a fixed number of runs and bytes (app/traces.py), so with a new seed every time its memory should rise and
   fall between two levels (a sawtooth) and the last minute's peak should be no higher than the earlier ones.
2. The flood figure. Once the server is idle: a session on ``builtin:shapes`` sets a new seed and waits until the
   heading "Scale 1 of K" of that seed's generation is drawn (the quiet baseline). Then another tab, on
   ``--flood-model``, sends 20 seed changes within 10 s without waiting for any of them, and is closed; right after,
   the shapes session sets a new seed again and waits the same way. A new request supersedes its session's older
   ones and a closed tab's work is cancelled, so the two waits should be alike. Printed as ``flood_wait_s=...
   quiet_wait_s=...``, with the server CPU seconds each took (the flood's until the server was idle again: work of
   the closed tab that ran on shows there).

The machine's load average (``uptime``) and what its CPU offers (``varlite.device.cpu_features()``) are printed
first: the browsers share the server's cores, so the figures are only comparable on a quiet machine.
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from varlite.device import cpu_features  # noqa: E402

APP = ROOT / "app" / "streamlit_app.py"
LOG = ROOT / "test-artifacts" / "bench-soak-server.log"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]
FLOOD_CHANGES, FLOOD_S = 20, 10.0
USER_MODEL = "builtin:shapes"
IDLE_CPU_FRACTION = 0.02      # the server counts as idle below this share of one core ...
IDLE_WINDOWS = 3              # ... for this many seconds in a row

# true once Streamlit has finished its (re)run: nothing stale, not running, no spinner or progress bar, images loaded
SETTLED_JS = """() => {
  if (!document.querySelector('[data-testid="stMain"]')) return false;
  if (document.querySelector('[data-stale="true"]')) return false;
  const status = document.querySelector('[data-testid="stStatusWidget"]');
  if (status && /running/i.test(status.innerText)) return false;
  if (document.querySelector('[data-testid="stSpinner"], [data-testid="stProgress"]')) return false;
  return Array.from(document.querySelectorAll('[data-testid="stMain"] img')).every(i => i.complete);
}"""
# true once a heading of the last run starts with `prefix` (and, when `seed` is given, the address holds that seed:
# the Generate page writes its settings there when it draws a scale, app/links.py)
HEADING_JS = """([prefix, seed]) => {
  if (seed !== null && new URLSearchParams(location.search).get('seed') !== seed) return false;
  return Array.from(document.querySelectorAll('[data-testid="stMain"] [data-testid="stHeading"]'))
    .some(h => !h.closest('[data-stale="true"]') && h.innerText.trim().startsWith(prefix));
}"""
SCALE_COUNT_JS = """() => {
  for (const h of document.querySelectorAll('[data-testid="stMain"] [data-testid="stHeading"]')) {
    const m = h.innerText.trim().match(/^Scale \\d+ of (\\d+):/);
    if (m) return Number(m[1]);
  }
  return null;
}"""
# the first line of an exception or error box the last run drew, or null
ERROR_SHOWN_JS = """() => {
  const box = Array.from(document.querySelectorAll('[data-testid="stException"], [data-testid="stAlertContentError"]'))
    .find(b => !b.closest('[data-stale="true"]'));
  return box ? box.innerText.trim().split('\\n')[0].slice(0, 200) : null;
}"""


# ------------------------------------------------------------------------------------------------ the server
def chromium_path() -> str | None:
    """Debian's Chromium, or $CHROMIUM if set; None when there is none."""
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", shutil.which("chromium")):
        if candidate and Path(candidate).is_file():
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def streamlit_process(home: Path, timeout_s: float = 300.0):
    """Run the walkthrough headless on a free 127.0.0.1 port with $VARLITE_HOME = ``home``, its output in LOG;
    yield (base URL, process id); stop it (its whole process group) afterwards."""
    port = free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--server.runOnSave", "false"]
    LOG.parent.mkdir(exist_ok=True)
    with open(LOG, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, "VARLITE_HOME": str(home)}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + timeout_s
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"streamlit exited with code {proc.returncode} (see {LOG})")
                try:
                    with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                        if r.status == 200:
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline:
                    raise TimeoutError(f"streamlit did not answer on {url} within {timeout_s:.0f} s (see {LOG})")
                time.sleep(0.3)
            yield url, proc.pid
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB (Linux: /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (Linux: /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def progress(what: str) -> None:
    """A line on stderr, so that a long run shows where it is (the figures go to stdout)."""
    print(f"[{time.strftime('%H:%M:%S')}] {what}", file=sys.stderr, flush=True)


async def wait_idle(pid: int, timeout_s: float = 60.0) -> float:
    """Wait until the server used under IDLE_CPU_FRACTION of a core for IDLE_WINDOWS seconds in a row (or
    ``timeout_s`` passed: then say so); return the seconds waited."""
    t0, quiet = time.monotonic(), 0
    while quiet < IDLE_WINDOWS:
        if time.monotonic() - t0 > timeout_s:
            progress(f"the server still used CPU after {timeout_s:.0f} s of waiting for it to be idle; going on")
            break
        before = cpu_s(pid)
        await asyncio.sleep(1.0)
        quiet = quiet + 1 if cpu_s(pid) - before < IDLE_CPU_FRACTION else 0
    return time.monotonic() - t0


class RssSampler(threading.Thread):
    """Reads the server's RSS every second, in a thread of its own (the browsers' event loop may lag); each sample
    is (seconds since ``t0``, MiB)."""

    def __init__(self, pid: int, t0: float):
        super().__init__(daemon=True)
        self.pid, self.t0, self.samples, self.stop = pid, t0, [], threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.monotonic() - self.t0, rss_mib(self.pid)))
            self.stop.wait(1.0)


# ------------------------------------------------------------------------------------------------ one page
@dataclass
class Record:
    """What the soak's sessions did, each event with its time (seconds from the soak's start)."""
    t0: float = field(default_factory=time.monotonic)
    generations: list[float] = field(default_factory=list)
    errors: list[tuple[float, str]] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.t0


async def open_page(browser, url: str, model: str, timeout_s: float, errors: list):
    """A page (1400 x 1000, a browser context of its own) showing the Generate page of ``model``, settled; its
    JavaScript errors are appended to ``errors``."""
    context = await browser.new_context(viewport={"width": 1400, "height": 1000})
    page = await context.new_page()
    page.set_default_timeout(timeout_s * 1000)
    page.on("pageerror", lambda err: errors.append(f"JavaScript error: {str(err)[:200]}"))
    await load(page, url, model)
    return context, page


async def load(page, url: str, model: str) -> None:
    await page.goto(f"{url}/?model={model}")
    await page.wait_for_function(HEADING_JS, arg=["Scale ", None], polling=100)
    await settled(page)


async def settled(page) -> None:
    await page.wait_for_timeout(200)
    await page.wait_for_function(SETTLED_JS, polling=100)


async def shows(page, prefix: str, seed: int | None = None) -> None:
    """Wait until the last run's heading starts with ``prefix`` (for ``seed``, when given)."""
    await page.wait_for_function(HEADING_JS, arg=[prefix, None if seed is None else str(seed)], polling=100)


async def set_seed(page, seed: int) -> None:
    box = page.get_by_label("Seed", exact=True).first
    await box.fill(str(seed))
    await box.press("Enter")


# ------------------------------------------------------------------------------------------------ 1. the soak
async def soak_session(browser, url: str, model: str, idx: int, seeds, record: Record,
                       all_drawn: asyncio.Barrier, timeout_s: float) -> None:
    """Open the page, wait for every session to have its page, then cycle until cancelled: a new seed, Reset,
    Next to the last scale (see the module docstring)."""
    page_errors: list[str] = []
    try:
        context, page = await open_page(browser, url, model, timeout_s, page_errors)
        K = await page.evaluate(SCALE_COUNT_JS)
    finally:
        await all_drawn.wait()        # a session that could not open its page fails, and the others go on
    try:
        while True:
            try:
                seed = next(seeds)
                await set_seed(page, seed)
                await shows(page, "Scale ", seed)
                await settled(page)
                await page.locator(".st-key-gen_reset button:visible").click()   # its help adds a hidden copy
                await shows(page, f"Scale 1 of {K}:")
                await settled(page)
                for k in range(2, K + 1):
                    await page.locator(".st-key-gen_next button:visible").click()
                    await shows(page, f"Scale {k} of {K}:")
                    await settled(page)
                shown = await page.evaluate(ERROR_SHOWN_JS)
                if shown or page_errors:
                    raise RuntimeError(shown or page_errors[0])
                record.generations.append(record.now())
            except Exception as err:      # noqa: BLE001 -- counted; the session reloads its page and goes on
                record.errors.append((record.now(), f"session {idx} ({model}): {type(err).__name__}: "
                                                    f"{str(err).splitlines()[0][:200]}"))
                page_errors.clear()
                await load(page, url, model)
    finally:
        await context.close()


async def soak(browser, url: str, pid: int, seeds, args) -> tuple[Record, list]:
    """Run the soak; return what the sessions did and the RSS samples (both timed from the soak's start)."""
    all_drawn = asyncio.Barrier(args.sessions + 1)
    record = Record()
    tasks = [asyncio.create_task(soak_session(browser, url, args.models[i % len(args.models)], i, seeds, record,
                                              all_drawn, args.timeout)) for i in range(args.sessions)]
    await all_drawn.wait()            # every page drawn: the clock starts (page loads and model loads not counted)
    progress(f"every page drawn: the soak runs for {args.minutes:g} min")
    record.t0 = time.monotonic()
    stop_at = record.t0 + args.minutes * 60
    sampler = RssSampler(pid, record.t0)
    sampler.start()
    _, pending = await asyncio.wait(tasks, timeout=stop_at - time.monotonic())
    sampler.stop.set()
    sampler.join()
    for task in pending:              # a cycle under way at the end is not counted
        task.cancel()
    for result in await asyncio.gather(*tasks, return_exceptions=True):
        if isinstance(result, Exception):
            record.errors.append((args.minutes * 60, f"a session failed: {type(result).__name__}: "
                                                     f"{str(result).splitlines()[0][:200]}"))
    return record, [(t, mib) for t, mib in sampler.samples if t <= args.minutes * 60]


def soak_report(record: Record, samples: list, args) -> int:
    """Print the per-minute table and the summary line; return the number of errors."""
    minutes = max(1, round(args.minutes))

    def minute(t: float) -> int:
        return min(int(t // 60), minutes - 1)

    print(f"\nsoak: {args.sessions} sessions ({', '.join(args.models)} in turn), a new seed every cycle, "
          f"{args.minutes:g} min\n")
    print("| minute | RSS min MiB | RSS max MiB | generations | errors |")
    print("|-------:|------------:|------------:|------------:|-------:|")
    for m in range(minutes):
        rss = [mib for t, mib in samples if minute(t) == m]
        gens = sum(1 for t in record.generations if minute(t) == m)
        errs = sum(1 for t, _ in record.errors if minute(t) == m)
        low, high = (f"{min(rss):.0f}", f"{max(rss):.0f}") if rss else ("-", "-")
        print(f"| {m + 1:6d} | {low:>11} | {high:>11} | {gens:11d} | {errs:6d} |")
    for _, line in record.errors[:10]:
        print("  " + line)
    rss = [mib for _, mib in samples]
    last = [mib for t, mib in samples if minute(t) == minutes - 1] or [float("nan")]
    print(f"soak_minutes={args.minutes:g} sessions={args.sessions} generations={len(record.generations)} "
          f"rss_min_mib={min(rss):.0f} rss_max_mib={max(rss):.0f} rss_last_minute_max_mib={max(last):.0f} "
          f"errors={len(record.errors)}")
    return len(record.errors)


# ------------------------------------------------------------------------------------------------ 2. the flood
async def seconds_to_scale_1(page, seed: int) -> float:
    """Set ``seed`` (the page is at scale 1) and return the seconds until its generation's scale 1 heading shows."""
    box = page.get_by_label("Seed", exact=True).first
    await box.fill(str(seed))
    t0 = time.perf_counter()
    await box.press("Enter")
    await shows(page, "Scale 1 of ", seed)
    return time.perf_counter() - t0


async def flood_figure(browser, url: str, pid: int, seeds, args) -> dict:
    """The quiet baseline, then the flood and the wait right after it (see the module docstring)."""
    errors: list[str] = []
    await wait_idle(pid)             # the soak's last work (cancelled cycles) ends first
    progress("the flood figure: the quiet baseline")
    r = {}
    user_context, user = await open_page(browser, url, USER_MODEL, args.timeout, errors)
    try:
        await wait_idle(pid)
        cpu0 = cpu_s(pid)
        r["quiet_s"] = await seconds_to_scale_1(user, next(seeds))
        await settled(user)
        r["quiet_cpu_s"] = cpu_s(pid) - cpu0
        await wait_idle(pid)

        progress(f"the flood: {FLOOD_CHANGES} seed changes in {FLOOD_S:.0f} s")
        flood_context, flood = await open_page(browser, url, args.flood_model, args.timeout, errors)
        await wait_idle(pid)
        cpu0, t0 = cpu_s(pid), time.monotonic()
        for i in range(FLOOD_CHANGES):            # the i-th change at i * FLOOD_S / FLOOD_CHANGES, never waited for
            await asyncio.sleep(max(0.0, t0 + i * FLOOD_S / FLOOD_CHANGES - time.monotonic()))
            await set_seed(flood, next(seeds))
        r["flood_sent_s"] = time.monotonic() - t0
        await flood_context.close()
        r["flood_s"] = await seconds_to_scale_1(user, next(seeds))
        progress("the flood's user saw scale 1; waiting for the server to be idle")
        await settled(user)
        r["flood_idle_after_s"] = await wait_idle(pid)
        r["flood_cpu_s"] = cpu_s(pid) - cpu0
        r["errors"] = errors + ([shown] if (shown := await user.evaluate(ERROR_SHOWN_JS)) else [])
    finally:
        await user_context.close()
    return r


# ------------------------------------------------------------------------------------------------ main
async def run(url: str, pid: int, args) -> int:
    from playwright.async_api import async_playwright
    seeds = itertools.count(args.first_seed)       # shared by every session: no seed is ever asked for twice
    failures = 0
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS, headless=True)
        if args.minutes > 0:
            record, samples = await soak(browser, url, pid, seeds, args)
            failures += soak_report(record, samples, args)
        r = await flood_figure(browser, url, pid, seeds, args)
        await browser.close()
    print(f"\nflood: a tab on {args.flood_model} sent {FLOOD_CHANGES} seed changes in {r['flood_sent_s']:.1f} s "
          f"(none waited for) and was closed; right after, a {USER_MODEL} session set a new seed")
    print(f"its scale 1 heading showed after {r['flood_s']:.2f} s; on the quiet server {r['quiet_s']:.2f} s")
    print(f"server CPU: quiet generation {r['quiet_cpu_s']:.1f} s; from the flood's first change until the server "
          f"was idle again {r['flood_cpu_s']:.1f} s (idle {r['flood_idle_after_s']:.0f} s after the user's scale 1, "
          f"counting the {IDLE_WINDOWS} s of the idle check)")
    for line in r["errors"][:10]:
        print("  error: " + line)
    print(f"flood_wait_s={r['flood_s']:.2f} quiet_wait_s={r['quiet_s']:.2f}")
    return failures + len(r["errors"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the soak (0: the flood figure alone)")
    parser.add_argument("--sessions", type=int, default=3, help="browser sessions in the soak")
    parser.add_argument("--models", default="builtin:shapes,builtin:cifar10",
                        help="comma-separated models the soak's sessions use in turn")
    parser.add_argument("--flood-model", default=USER_MODEL,
                        help=f"the flooding tab's model (default {USER_MODEL}: the same queue as the waiting user)")
    parser.add_argument("--first-seed", type=int, default=1_000_000, help="the seeds used count up from this")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds a step may take to show")
    args = parser.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if chromium_path() is None:
        print("Chromium is missing: apt-get install -y chromium", file=sys.stderr)
        return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))     # killed (e.g. by `timeout`): still stop the server
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"uptime: {uptime}")
    print(f"CPU: {os.cpu_count()} cores; {cpu_features()}")
    with tempfile.TemporaryDirectory(prefix="varlite-soak-") as home, streamlit_process(Path(home)) as (url, pid):
        progress(f"server up at {url} (its log: {LOG.relative_to(ROOT)})")
        failures = asyncio.run(run(url, pid, args))
    print("uptime at the end: " + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
