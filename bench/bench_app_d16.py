"""The official d16 model in the walkthrough: how soon the first scale shows, how the later ones stream in, memory.

    python bench/bench_app_d16.py                    # synthetic official-layout d16 files in a temporary cache
    python bench/bench_app_d16.py --home ~/.cache/varlite    # a cache folder that holds the official files
    python bench/bench_app_d16.py --home DIR --sessions 5    # and five students pressing Generate together

Writes official-layout vae + d16 files with synthetic weights (``varlite.synthetic``, seed 0; ~5 s, 1.7 GB) into a
temporary $VARLITE_HOME unless --home is given, starts `streamlit run app/streamlit_app.py` on it and drives it with
bench/bench_app_load.py's protocol-level client (no browser on the machine):

1. session 1 opens the Generate page on official:d16 (cold: the weights are loaded) and steps to the last scale
   as fast as the page allows: the model is loaded and one trace is cached, every prefix decoded;
2. "Generate" alone (the solo time): Reset to scale 1, then a new seed, and Next until the last scale is asked for,
   a click every CLICK_GAP_S without waiting for the scales (a click on a scale not computed yet counts, and the
   page moves on when it is there). Per scale: when the server had computed it (the page's own progress caption)
   and when its heading arrived; then back to scale 1 with Previous (everything computed);
3. with ``--sessions N`` (N > 1): N more sessions open the page, then press Generate within one second (each at a
   random moment of that second, each with its own seed) and step as in 2; for each, when scale 1's heading and
   the last scale's heading arrived after its press;
4. session 2 opens the same page: it must reuse the loaded model (its RSS does not grow by the weights' size).

The server's RSS is read after each phase, with its peak (VmHWM). The last lines are the machine's ``uptime`` and
``sessions=N first_scale_max_s=... last_scale_max_s=... solo_last_scale_s=...`` (the slowest of the N sessions, and
phase 2's solo time, all from this one run; with N = 1 the solo figures).
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import torch  # noqa: E402

from bench_app_load import SessionError, StreamlitSession, cpu_s, percentile, shows_scale  # noqa: E402
from tests.browser_harness import rss_mib, streamlit_process, write_synthetic_official  # noqa: E402
from varlite.core.configs import OFFICIAL_PATCH_NUMS  # noqa: E402

COMPUTED = re.compile(r"computed (\d+) of (\d+) scales \(([\d.]+) s\)")
CLICK_GAP_S = 0.4        # between two clicks on Next while the scales are still being computed
LOST_AFTER_S = 5.0       # a slider still below the last scale this long after the clicks: clicks were lost
HOSTILE_CHANGES, HOSTILE_S = 20, 10.0
PRESS_WITHIN_S = 1.0     # the N sessions press Generate within this


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


def heading_after(session: StreamlitSession, k: int, since: float) -> float | None:
    return next((t for t, text in session.log if t >= since and text.startswith(f"Scale {k} of ")), None)


async def generate_and_step(session: StreamlitSession, seed: int, K: int, timeout_s: float) -> tuple[float, int]:
    """Press Generate (a new seed: the page goes back to scale 1), then Next K - 1 times, CLICK_GAP_S apart, without
    waiting for the scales, and wait until scale K's heading arrived. A click the server did not count shows as a
    slider (the scale asked for) that stays below K: such clicks are counted as lost and sent again. Returns
    (time.perf_counter() at the press, clicks lost)."""
    t0 = time.perf_counter()
    await session.set_int("gen_seed", seed, shows_scale(1), timeout_s)
    for _ in range(K - 1):
        await session.press("Next")
        await asyncio.sleep(CLICK_GAP_S)
    lost, settled = 0, time.perf_counter()
    while heading_after(session, K, t0) is None:
        if session.errors:
            raise SessionError("; ".join(session.errors))
        if time.perf_counter() - t0 > timeout_s:
            raise TimeoutError(f"scale {K} was not shown within {timeout_s:.0f} s of Generate")
        asked = int(session.sliders.get("Scale", 1))
        if asked < K and time.perf_counter() - settled > LOST_AFTER_S:     # the page answered: clicks were lost
            lost += K - asked
            for _ in range(K - asked):
                await session.press("Next")
                await asyncio.sleep(CLICK_GAP_S)
            settled = time.perf_counter()
        await asyncio.sleep(0.1)
    return t0, lost


async def hostile_then_user(url: str, K: int, args) -> tuple[float, float]:
    """Phase 4: a tab sends HOSTILE_CHANGES seed changes in HOSTILE_S seconds and closes; then another user presses
    Generate. Seconds from that press until the user's scale 1 and scale K were shown."""
    hostile, user = StreamlitSession(url, "model=official:d16"), StreamlitSession(url, "model=official:d16")
    for session in (hostile, user):
        await session.open(args.timeout)
        await session.rerun(shows_scale(None), timeout_s=args.timeout)
    for i in range(HOSTILE_CHANGES):
        await hostile.send_int("gen_seed", 1000 + i)
        await asyncio.sleep(HOSTILE_S / HOSTILE_CHANGES)
    await hostile.close()
    t0, _ = await generate_and_step(user, 2000, K, args.timeout)
    await user.close()
    return heading_after(user, 1, t0) - t0, heading_after(user, K, t0) - t0


async def builtin_during(url: str, delay_s: float, args) -> float:
    """A built-in-model user who presses Generate ``delay_s`` after the d16 sessions: seconds until scale 1 shows."""
    session = StreamlitSession(url, "model=builtin:shapes")
    await session.open(args.timeout)
    await session.rerun(shows_scale(None), timeout_s=args.timeout)
    await asyncio.sleep(delay_s)
    t0 = time.perf_counter()
    await session.set_int("gen_seed", 77, shows_scale(1), args.timeout)
    await session.close()
    return time.perf_counter() - t0


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
    cpu0 = cpu_s(pid)
    t0, r["lost_clicks"] = await generate_and_step(one, 1, K, args.timeout)   # "Generate" alone: a new seed
    r["solo_cpu_s"] = cpu_s(pid) - cpu0
    r["shown_s"] = [heading_after(one, k, t0) for k in range(1, K + 1)]
    r["shown_s"] = [None if t is None else t - t0 for t in r["shown_s"]]
    r["first_s"], r["solo_last_s"] = r["shown_s"][0], r["shown_s"][-1]
    r["computed_s"] = computed_at(one, t0, K)
    back = []
    for k in range(K - 1, 0, -1):
        t = time.perf_counter()
        await one.click("Previous", shows_scale(k), args.timeout)
        back.append((time.perf_counter() - t) * 1000)
    r["cached_step_ms"] = back
    rss("two traces cached (seeds 0 and 1)")

    cpu0 = cpu_s(pid)
    if args.sessions > 1:
        r["together"], r["builtin_s"] = await asyncio.gather(together(url, K, args, r), builtin_during(url, 3.0, args))
        rss(f"{args.sessions} more sessions, {args.sessions} more traces")
    else:
        r["together"], r["builtin_s"] = [], None
    r["together_cpu_s"] = cpu_s(pid) - cpu0
    r["hostile"] = await hostile_then_user(url, K, args)

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


async def together(url: str, K: int, args, r: dict) -> list[tuple[float, float]]:
    """Phase 3: ``args.sessions`` sessions open the page, then each presses Generate at a random moment of the same
    second (its own seed) and steps to the last scale; (seconds to scale 1's heading, to scale K's) per session."""
    sessions = [StreamlitSession(url, "model=official:d16") for _ in range(args.sessions)]
    for session in sessions:
        await session.open(args.timeout)
        await session.rerun(shows_scale(None), timeout_s=args.timeout)
    rng = random.Random(0)

    async def student(i: int, session: StreamlitSession) -> tuple[float, float]:
        await asyncio.sleep(rng.uniform(0, PRESS_WITHIN_S))
        t0, lost = await generate_and_step(session, 100 + i, K, args.timeout)
        r["lost_clicks"] += lost
        return heading_after(session, 1, t0) - t0, heading_after(session, K, t0) - t0

    try:
        return list(await asyncio.gather(*(student(i, s) for i, s in enumerate(sessions))))
    finally:
        for session in sessions:
            await session.close()


def report(r: dict, args, K_sides: tuple[int, ...]) -> None:
    print(f"official d16 in the app ({'synthetic weights' if not args.home else args.home}); machine: "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; torch threads "
          f"{torch.get_num_threads()} (this process)")
    print(f"cold (server just started): scale 1 shown after {r['cold_first_s']:.1f} s (weights loaded), "
          f"all {len(K_sides)} scales stepped through after {r['cold_all_s']:.1f} s")
    print(f"\nGenerate alone, with the weights loaded (a new seed, then Next every {CLICK_GAP_S} s until the last "
          f"scale is asked for): first scale shown after {r['first_s']:.2f} s, the last after "
          f"{r['solo_last_s']:.1f} s; server CPU {r['solo_cpu_s']:.0f} s\n")
    print("| scale | side | tokens | computed (server clock) s | heading shown s |")
    print("|------:|-----:|-------:|--------------------------:|----------------:|")
    for k, (side, heading) in enumerate(zip(K_sides, r["shown_s"]), start=1):
        computed = r["computed_s"].get(k)
        print(f"| {k:5d} | {side:4d} | {side * side:6d} | {'-' if computed is None else f'{computed:.1f}':>25} "
              f"| {'-' if heading is None else f'{heading:.1f}':>15} |")
    print("(seconds from Generate; the page shows a scale as soon as it is computed once it has been asked for; "
          "'-': computed between two of the page's looks, or skipped)")
    if r["together"]:
        print(f"\n{args.sessions} sessions pressing Generate within {PRESS_WITHIN_S:.0f} s (own seeds), stepping as "
              f"above; server CPU {r['together_cpu_s']:.0f} s (the sessions' page loads included):\n")
        print("| session | scale 1 shown s | last scale shown s |")
        print("|--------:|----------------:|-------------------:|")
        for i, (first, last) in enumerate(r["together"]):
            print(f"| {i:7d} | {first:15.1f} | {last:18.1f} |")
        print(f"\na built-in-model user pressing Generate 3 s after them: scale 1 shown after {r['builtin_s']:.2f} s")
    first, last = r["hostile"]
    print(f"a tab sending {HOSTILE_CHANGES} seed changes in {HOSTILE_S:.0f} s, then closed; the next user's scale 1 "
          f"shown after {first:.1f} s, the last scale after {last:.1f} s")
    print(f"Next clicks lost (sent again): {r['lost_clicks']}")
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
    parser.add_argument("--sessions", type=int, default=1, help="students pressing Generate together (default 1: "
                                                                "the solo measurement only)")
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
    firsts, lasts = ([f for f, _ in r["together"]], [t for _, t in r["together"]]) if r["together"] else \
        ([r["first_s"]], [r["solo_last_s"]])
    print("uptime: " + subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip())
    print(f"sessions={args.sessions} first_scale_max_s={max(firsts):.1f} last_scale_max_s={max(lasts):.1f} "
          f"solo_last_scale_s={r['solo_last_s']:.1f}")
    return 1 if r["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
