"""The official d16 model in the walkthrough: how soon the first scale shows, how the later ones stream in, memory.

    python bench/bench_app_d16.py                    # synthetic official-layout d16 files in a temporary cache
    python bench/bench_app_d16.py --home ~/.cache/varlite    # a cache folder that holds the official files

Writes official-layout vae + d16 files with synthetic weights (``varlite.synthetic``, seed 0; ~5 s, 1.7 GB) into a
temporary $VARLITE_HOME unless --home is given, starts `streamlit run app/streamlit_app.py` on it and drives it with
bench/bench_app_load.py's protocol-level client (no browser on the machine):

1. session 1 opens the Generate page on official:d16 (cold: the weights are loaded) and steps to the last scale
   as fast as the page allows: the model is loaded and one trace is cached, every prefix decoded;
2. "Generate" with the weights loaded: Reset to scale 1, then a new seed, and the session steps to the last scale as fast as the
   page allows. Per scale: when the server had computed it (the page's own progress caption), when its heading
   arrived and when the page settled (run finished, images fetched); then back to scale 1 with Previous
   (everything computed and decoded);
3. session 2 opens the same page: it must reuse the loaded model (its RSS does not grow by the weights' size).

The server's RSS is read after each phase, with its peak (VmHWM).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from bench_app_load import StreamlitSession, percentile, shows_scale  # noqa: E402
from tests.browser_harness import rss_mib, streamlit_process, write_synthetic_official  # noqa: E402
from varlite.core.configs import OFFICIAL_PATCH_NUMS  # noqa: E402

COMPUTED = re.compile(r"computed (\d+) of (\d+) scales \(([\d.]+) s\)")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def heading_at(session: StreamlitSession, k: int, since: float) -> float:
    """When the heading of scale k first arrived after ``since`` (time.perf_counter())."""
    return next(t for t, text in session.log if t >= since and text.startswith(f"Scale {k} of "))


async def step_to_last(session: StreamlitSession, K: int, t0: float, timeout_s: float) -> list[tuple[float, float]]:
    """Next until scale K, each click sent as soon as the previous scale is shown; for scales 2..K, seconds from
    t0 until its heading arrived and until it was shown (the run finished, its images fetched)."""
    times = []
    for k in range(2, K + 1):
        clicked = time.perf_counter()
        await session.click("Next", shows_scale(k), timeout_s)
        times.append((heading_at(session, k, clicked) - t0, time.perf_counter() - t0))
    return times


def computed_at(session: StreamlitSession, since: float, K: int) -> dict[int, float]:
    """{n: seconds from the generation's start until scale n was computed}, from the progress captions the page
    showed after ``since`` (the server's own clock; scales computed between two captions are missing)."""
    out = {}
    for t, text in session.log:
        m = COMPUTED.search(text)
        if t >= since and m and int(m.group(2)) == K:
            out.setdefault(int(m.group(1)), float(m.group(3)))
    return out


async def run(url: str, pid: int, args) -> dict:
    r = {"rss": []}

    def rss(what: str) -> None:
        r["rss"].append((what, rss_mib(pid), peak_rss_mib(pid)))

    rss("server started, nothing loaded")
    one = StreamlitSession(url, "model=official:d16")
    await one.open(args.timeout)
    t0 = time.perf_counter()
    view = await one.rerun(shows_scale(1), timeout_s=args.timeout)
    r["cold_first_s"] = time.perf_counter() - t0
    K = int(re.match(r"Scale 1 of (\d+)", next(h for h in view.headings if h.startswith("Scale 1 of"))).group(1))
    await step_to_last(one, K, t0, args.timeout)
    r["cold_all_s"] = time.perf_counter() - t0
    rss("d16 loaded, one trace cached (10 prefixes decoded)")

    await one.click("Reset", shows_scale(1), args.timeout)  # back to scale 1 (a new seed keeps the scale shown)
    t0 = time.perf_counter()                                 # "Generate" with the weights loaded: a new seed
    await one.set_int("gen_seed", 1, shows_scale(1), args.timeout)
    r["first_s"] = time.perf_counter() - t0
    r["shown_s"] = [(heading_at(one, 1, t0) - t0, r["first_s"])] + await step_to_last(one, K, t0, args.timeout)
    r["computed_s"] = computed_at(one, t0, K)
    back = []
    for k in range(K - 1, 0, -1):
        t = time.perf_counter()
        await one.click("Previous", shows_scale(k), args.timeout)
        back.append((time.perf_counter() - t) * 1000)
    r["cached_step_ms"] = back
    rss("two traces cached (seeds 0 and 1)")

    two = StreamlitSession(url, "model=official:d16")
    await two.open(args.timeout)
    t0 = time.perf_counter()
    await two.rerun(shows_scale(1), timeout_s=args.timeout)
    r["second_session_s"] = time.perf_counter() - t0
    rss("a second session on the same model")
    r["errors"] = one.errors + two.errors
    await one.close()
    await two.close()
    return r


def report(r: dict, args, K_sides: tuple[int, ...]) -> None:
    print(f"official d16 in the app ({'synthetic weights' if not args.home else args.home}); machine: "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; torch threads "
          f"{torch.get_num_threads()} (this process)")
    print(f"cold (server just started): scale 1 shown after {r['cold_first_s']:.1f} s (weights loaded), "
          f"all {len(K_sides)} scales stepped through after {r['cold_all_s']:.1f} s")
    print(f"\nGenerate with the weights loaded (new seed, Next pressed as soon as each scale is shown): "
          f"first scale shown after {r['first_s']:.2f} s\n")
    print("| scale | side | tokens | computed (server clock) s | heading shown s | settled s |")
    print("|------:|-----:|-------:|--------------------------:|----------------:|----------:|")
    for k, (side, (heading, shown)) in enumerate(zip(K_sides, r["shown_s"]), start=1):
        computed = r["computed_s"].get(k)
        print(f"| {k:5d} | {side:4d} | {side * side:6d} | {'-' if computed is None else f'{computed:.1f}':>25} "
              f"| {heading:15.1f} | {shown:9.1f} |")
    print("(seconds from Generate; 'settled': the run finished and its images were fetched, the decoded prefix "
          "included)")
    back = r["cached_step_ms"]
    print(f"\nstepping back through computed and decoded scales: p50 {percentile(back, 50):.0f} ms, "
          f"max {max(back):.0f} ms, mean {statistics.fmean(back):.0f} ms")
    print(f"second session on the same model: scale 1 shown after {r['second_session_s']:.2f} s\n")
    print("| server memory after                                  | RSS MiB | peak RSS MiB |")
    print("|------------------------------------------------------|--------:|-------------:|")
    for what, now, peak in r["rss"]:
        print(f"| {what:52} | {now:7.0f} | {peak:12.0f} |")
    print(f"\nerrors: {len(r['errors'])}")
    for err in r["errors"][:10]:
        print("  " + err)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--home", help="a cache folder holding the official vae and d16 files (default: synthetic "
                                       "files in a temporary folder)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds a page may take to settle")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="varlite-d16-") as tmp:
        home = Path(args.home) if args.home else Path(tmp)
        if not args.home:
            t = time.perf_counter()
            write_synthetic_official(home)
            print(f"synthetic official files written in {time.perf_counter() - t:.1f} s")
        log = ROOT / "test-artifacts" / "bench-d16-server.log"
        log.parent.mkdir(exist_ok=True)
        with streamlit_process(env={"VARLITE_HOME": str(home)}, log_path=log) as (url, proc):
            r = asyncio.run(run(url, proc.pid, args))
    report(r, args, OFFICIAL_PATCH_NUMS)
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
