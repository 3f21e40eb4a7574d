"""Load test of the walkthrough from one light client: N sessions step through a generation at the same time.

    python bench/bench_app_load.py                       # 30 sessions, built-in shapes model, 1 s between clicks
    python bench/bench_app_load.py --sessions 5 --think 0
    python bench/bench_app_load.py --url http://host:8501 --model builtin:cifar10   # an already running server

No browser: each session is one websocket speaking Streamlit's own protocol (the protobuf ``BackMsg`` /
``ForwardMsg`` messages of ``streamlit.proto``, as the web page sends and receives them), plus one HTTP request
per image the page shows (the browser fetches every ``/media/...`` URL too). So the client costs little CPU and
the figures are the server's: thirty Chromium pages on the server's own cores would measure mostly the browsers.
(What only a browser shows -- that the page always agrees with itself under load -- is bench/bench_app_sessions.py.)

A session opens the Generate page (``?model=...``), waits until "Scale 1 of K" is drawn and every other session
has its page too, then clicks Next to the last scale and Previous back to the first, waiting ``--think`` seconds
on average between clicks (a person reading the page: each pause 0.5-1.5 x think, and a random start, so that the
sessions do not click in step; 0 = as fast as the server answers). A step's latency runs from sending the click
until the new scale's heading has arrived, the run has finished and every image it shows has been fetched. A
click inside the step viewer is a fragment rerun, exactly as the browser sends it. Errors: an exception or error
box in a page, a run that does not end in ``--timeout`` seconds, a closed connection. The server's resident
memory (RSS) is sampled every 2 s, its CPU time read before and after the steps.

``StreamlitSession`` is reused by bench/bench_app_d16.py.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import websockets
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser_harness import rss_mib, streamlit_process  # noqa: E402

HEADING = re.compile(r"^Scale (\d+) of (\d+):")
SERVER_MS = re.compile(r"step rendered in (\d+) ms")
FINISHED_OK = (ForwardMsg.FINISHED_SUCCESSFULLY, ForwardMsg.FINISHED_FRAGMENT_RUN_SUCCESSFULLY)


class SessionError(RuntimeError):
    """The page showed an exception or an error box, or the connection closed."""


@dataclass
class Button:
    id: str
    fragment_id: str          # '' for a button outside any fragment
    disabled: bool


@dataclass
class RunView:
    """What the server sent since a request: enough to tell when the page is settled and what it shows."""
    headings: list[str] = field(default_factory=list)
    captions: list[str] = field(default_factory=list)     # markdown bodies (captions included)
    images: list[str] = field(default_factory=list)       # /media/... URLs still to fetch
    finished: bool = False                                # a run ended successfully after the request


class StreamlitSession:
    """One browser tab as the server sees it: a websocket speaking Streamlit's protocol, and HTTP for images.

    ``rerun(...)`` sends what a click sends (the clicked button's trigger, in its fragment when it is in one) and
    returns once the page drew what ``until`` asks for and every image of those runs was fetched. ``auto_rerun``
    messages (``st.fragment(run_every=...)``) are honoured as the web page does: a timer per fragment that sends an
    automatic fragment rerun, cleared when a full-app run starts (a ``new_session`` without fragment ids) or the
    server says stop."""

    def __init__(self, url: str, query: str = ""):
        parts = urlsplit(url)
        self.host, self.port = parts.hostname, parts.port or 80
        self.ws_url = f"ws://{self.host}:{self.port}{parts.path.rstrip('/')}/_stcore/stream"
        self.query = query
        self.page_hash = ""
        self.buttons: dict[str, Button] = {}
        self.widget_ids: dict[str, str] = {}          # widget key -> id
        self.sliders: dict[str, float] = {}           # slider label -> the value it was last drawn with
        self.views: list[RunView] = []                # views waiting for a settled page
        self.errors: list[str] = []
        self.image_bytes = 0
        self.log: list[tuple[float, str]] = []        # (time.perf_counter(), text) of every heading and markdown
        self._ws = None
        self._reader: asyncio.Task | None = None
        self._timers: dict[str, asyncio.Task] = {}
        self._changed = asyncio.Event()
        self._closing = False

    # ---------------------------------------------------------------------------- connection
    async def open(self, timeout_s: float = 120.0) -> None:
        self._ws = await websockets.connect(self.ws_url, subprotocols=["streamlit"], max_size=None,
                                            open_timeout=timeout_s, ping_interval=None)
        self._reader = asyncio.create_task(self._read())

    async def close(self) -> None:
        self._closing = True
        for timer in self._timers.values():
            timer.cancel()
        if self._ws is not None:
            await self._ws.close()
        if self._reader is not None:
            self._reader.cancel()

    async def _send_rerun(self, widget_states: list | None = None, fragment_id: str = "",
                          auto: bool = False) -> None:
        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = self.query
        state.page_script_hash = self.page_hash
        state.fragment_id = fragment_id
        state.is_auto_rerun = auto
        for ws in widget_states or []:
            state.widget_states.widgets.append(ws)
        await self._ws.send(msg.SerializeToString())

    # ---------------------------------------------------------------------------- what the server sends
    async def _read(self) -> None:
        try:
            async for data in self._ws:
                msg = ForwardMsg()
                msg.ParseFromString(data)
                self._handle(msg)
        except websockets.ConnectionClosed:
            pass
        if not self._closing:
            self.errors.append("the server closed the connection")
        self._changed.set()

    def _handle(self, msg: ForwardMsg) -> None:
        kind = msg.WhichOneof("type")
        if kind == "new_session":                     # a run starts; a full run drops the fragment timers
            self.page_hash = msg.new_session.page_script_hash
            if not msg.metadata.run.fragment_ids:
                for timer in self._timers.values():
                    timer.cancel()
                self._timers.clear()
        elif kind == "auto_rerun":
            fid = msg.auto_rerun.fragment_id
            if fid in self._timers:
                self._timers[fid].cancel()
            self._timers[fid] = asyncio.create_task(self._auto_rerun(fid, msg.auto_rerun.interval))
        elif kind == "stop_auto_rerun":
            for fid in msg.stop_auto_rerun.fragment_ids:
                if fid in self._timers:
                    self._timers.pop(fid).cancel()
        elif kind == "script_finished":
            if msg.script_finished in FINISHED_OK:
                for view in self.views:
                    view.finished = True
        elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
            self._element(msg.delta.new_element, msg.delta.fragment_id)
        self._changed.set()

    def _element(self, el, fragment_id: str) -> None:
        kind = el.WhichOneof("type")
        if kind in ("heading", "markdown"):
            self.log.append((time.perf_counter(), getattr(el, kind).body))
        if kind == "heading":
            for view in self.views:
                view.headings.append(el.heading.body)
        elif kind == "markdown":
            for view in self.views:
                view.captions.append(el.markdown.body)
        elif kind == "imgs":
            for view in self.views:
                view.images += [img.url for img in el.imgs.imgs if img.url.startswith("/")]
        elif kind == "button":
            self.buttons[el.button.label] = Button(el.button.id, fragment_id, el.button.disabled)
        elif kind == "slider" and el.slider.default:
            self.sliders[el.slider.label] = el.slider.default[0]
        elif kind == "exception":
            self.errors.append(f"exception in the page: {el.exception.type}: {el.exception.message[:200]}")
        elif kind == "alert" and el.alert.format == el.alert.ERROR:
            self.errors.append(f"error box in the page: {el.alert.body[:200]}")
        widget = getattr(el, kind, None)
        widget_id = getattr(widget, "id", "") if widget is not None else ""
        if isinstance(widget_id, str) and widget_id.startswith("$$ID-"):
            self.widget_ids[widget_id.split("-", 2)[2]] = widget_id

    async def _auto_rerun(self, fragment_id: str, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self._send_rerun(fragment_id=fragment_id, auto=True)

    async def _fetch(self, path: str) -> None:
        """GET one image as the browser would (HTTP/1.1, one connection per image); raise unless 200."""
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(f"GET {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nConnection: close\r\n\r\n".encode())
            await writer.drain()
            data = await reader.read()
        finally:
            writer.close()
        status = data.split(b"\r\n", 1)[0]
        if b" 200 " not in status + b" ":
            raise SessionError(f"GET {path}: {status.decode(errors='replace')}")
        self.image_bytes += len(data)

    # ---------------------------------------------------------------------------- requests
    async def rerun(self, until, widget_states: list | None = None, fragment_id: str = "",
                    timeout_s: float = 120.0) -> RunView:
        """Send a rerun and wait until ``until(view)`` holds for what arrived since, a run has finished and the
        images drawn meanwhile are fetched; raise SessionError / TimeoutError otherwise."""
        view = RunView()
        self.views.append(view)
        fetched: set[str] = set()
        try:
            await self._send_rerun(widget_states, fragment_id)
            deadline = time.monotonic() + timeout_s
            while True:
                if self.errors:
                    raise SessionError("; ".join(self.errors))
                pending = [u for u in dict.fromkeys(view.images) if u not in fetched]
                if pending:
                    await asyncio.gather(*(self._fetch(u) for u in pending))
                    fetched.update(pending)
                    continue
                if view.finished and until(view):
                    return view
                self._changed.clear()
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"the page did not settle within {timeout_s:.0f} s "
                                       f"(last heading: {view.headings[-1] if view.headings else None})")
                try:
                    await asyncio.wait_for(self._changed.wait(), min(left, 1.0))
                except asyncio.TimeoutError:
                    pass
        finally:
            self.views.remove(view)

    async def click(self, label: str, until, timeout_s: float = 120.0) -> RunView:
        button = self.buttons[label]
        if button.disabled:
            raise SessionError(f"button {label!r} is disabled")
        trigger = BackMsg().rerun_script.widget_states.widgets.add()
        trigger.id, trigger.trigger_value = button.id, True
        return await self.rerun(until, [trigger], button.fragment_id, timeout_s)

    async def press(self, label: str) -> None:
        """Send a click and return at once, as a person clicking again before the page has answered."""
        button = self.buttons[label]
        if button.disabled:
            raise SessionError(f"button {label!r} is disabled")
        trigger = BackMsg().rerun_script.widget_states.widgets.add()
        trigger.id, trigger.trigger_value = button.id, True
        await self._send_rerun([trigger], button.fragment_id)

    async def set_int(self, key: str, value: int, until, timeout_s: float = 120.0) -> RunView:
        """Change a number input (by widget key), as typing a value and pressing Enter does."""
        return await self.rerun(until, [self._int_state(key, value)], "", timeout_s)

    async def send_int(self, key: str, value: int) -> None:
        """``set_int`` without waiting for the page."""
        await self._send_rerun([self._int_state(key, value)])

    def _int_state(self, key: str, value: int):
        state = BackMsg().rerun_script.widget_states.widgets.add()
        state.id, state.int_value = self.widget_ids[key], value
        return state


def shows_scale(k: int | None = None):
    """``until`` for a page that shows the heading of scale k (any scale when None)."""
    def until(view: RunView) -> bool:
        return any(HEADING.match(h) and (k is None or int(HEADING.match(h).group(1)) == k) for h in view.headings)
    return until


def scale_count(view: RunView) -> int:
    return int(HEADING.match(next(h for h in view.headings if HEADING.match(h))).group(2))


def server_ms(view: RunView) -> float | None:
    found = [SERVER_MS.search(c) for c in view.captions]
    found = [m for m in found if m]
    return float(found[-1].group(1)) if found else None


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))]


# -------------------------------------------------------------------------------------------------- the load
async def step_through(url: str, query: str, idx: int, args, results: dict,
                       all_open: asyncio.Barrier | None = None) -> None:
    """One session: open the page, wait at ``all_open`` until every session has opened it (so that the steps
    of all sessions overlap, and the page loads' cost is counted apart), then step through every scale."""
    await asyncio.sleep(idx * args.ramp)
    session = StreamlitSession(url, query)
    view = None
    try:
        t0 = time.perf_counter()
        await session.open(args.timeout)
        view = await session.rerun(shows_scale(1), timeout_s=args.timeout)
        results["load_s"].append(time.perf_counter() - t0)
    except Exception as err:      # noqa: BLE001 -- a failed session is counted, the others go on
        results["errors"].append(f"session {idx} (opening): {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    if all_open is not None:
        await all_open.wait()
    rng = random.Random(idx)             # people do not click in step: each pause is 0.5-1.5 x think, a random start
    try:
        if view is not None:
            K = scale_count(view)
            plan = [("Next", k) for k in range(2, K + 1)] + [("Previous", k) for k in range(K - 1, 0, -1)]
            await asyncio.sleep(rng.uniform(0, args.think))
            for label, k in plan:
                await asyncio.sleep(args.think * rng.uniform(0.5, 1.5))
                t = time.perf_counter()
                view = await session.click(label, shows_scale(k), args.timeout)
                results["step_ms"].append((time.perf_counter() - t) * 1000)
                ms = server_ms(view)
                if ms is not None:
                    results["server_ms"].append(ms)
            results["complete"] += 1
    except Exception as err:      # noqa: BLE001
        results["errors"].append(f"session {idx}: {type(err).__name__}: {str(err).splitlines()[0][:200]}")
    finally:
        results["image_bytes"] += session.image_bytes
        await session.close()


def cpu_s(pid: int | None) -> float:
    """User + system CPU seconds a process (all its threads) has used so far (Linux: /proc/<pid>/stat)."""
    if pid is None:
        return float("nan")
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sample_rss(pid: int | None, samples: list, done: asyncio.Event, every_s: float = 2.0) -> None:
    start = time.monotonic()
    while pid is not None and not done.is_set():
        samples.append((time.monotonic() - start, rss_mib(pid)))
        try:
            await asyncio.wait_for(done.wait(), every_s)
        except asyncio.TimeoutError:
            pass


async def run(url: str, pid: int | None, args) -> dict:
    query = f"model={args.model}"
    results = {"load_s": [], "step_ms": [], "server_ms": [], "errors": [], "complete": 0, "image_bytes": 0,
               "rss": []}
    warm = {"load_s": [], "step_ms": [], "server_ms": [], "errors": [], "complete": 0, "image_bytes": 0}
    t0 = time.perf_counter()
    await step_through(url, query, 0, argparse.Namespace(**{**vars(args), "think": 0.0}), warm)
    results["first_s"], results["warm_errors"] = time.perf_counter() - t0, warm["errors"]
    done = asyncio.Event()
    sampler = asyncio.create_task(sample_rss(pid, results["rss"], done))
    all_open = asyncio.Barrier(args.sessions + 1)          # the sessions, and this coroutine
    load_cpu0 = cpu_s(pid)
    sessions = asyncio.gather(*(step_through(url, query, i, args, results, all_open) for i in range(args.sessions)))
    await all_open.wait()
    t0 = time.perf_counter()
    cpu0, server_cpu0 = time.process_time(), cpu_s(pid)
    results["load_cpu_s"] = server_cpu0 - load_cpu0
    await sessions
    results["wall_s"], results["client_cpu_s"] = time.perf_counter() - t0, time.process_time() - cpu0
    results["server_cpu_s"] = cpu_s(pid) - server_cpu0
    done.set()
    await sampler
    return results


def report(results: dict, args, pid: int | None) -> None:
    steps, server = results["step_ms"], results["server_ms"]
    print(f"{args.sessions} sessions, model {args.model}, {args.think:g} s between clicks, one protocol-level "
          f"client; machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end")
    print(f"warm-up (one session, cold caches, full step-through): {results['first_s']:.1f} s"
          + (f"  [errors: {results['warm_errors']}]" if results["warm_errors"] else ""))
    rows = [("page load (open -> scale 1 drawn)", [s * 1000 for s in results["load_s"]]),
            ("step (click -> new scale drawn, images fetched)", steps),
            ("step render on the server (page's own timer)", server)]
    print(f"\n| {'':48} | {'n':>5} | {'p50 ms':>7} | {'p95 ms':>7} | {'max ms':>7} | {'mean ms':>7} |")
    print(f"|{'-' * 50}|{'-' * 7}|{'-' * 9}|{'-' * 9}|{'-' * 9}|{'-' * 9}|")
    for name, values in rows:
        if values:
            print(f"| {name:48} | {len(values):5d} | {percentile(values, 50):7.0f} | {percentile(values, 95):7.0f} "
                  f"| {max(values):7.0f} | {statistics.fmean(values):7.0f} |")
    print(f"\nsessions completed: {results['complete']} of {args.sessions}; steps (after all pages opened): {len(steps)} in "
          f"{results['wall_s']:.1f} s ({len(steps) / results['wall_s']:.1f} steps/s); images fetched: "
          f"{results['image_bytes'] / 2**20:.1f} MiB; client CPU {results['client_cpu_s']:.1f} s")
    if steps and pid is not None:
        print(f"server CPU (a figure that does not depend on the machine's load): {1000 * results['server_cpu_s'] / len(steps):.0f} ms "
              f"per step ({results['server_cpu_s']:.1f} s for the steps), "
              f"{1000 * results['load_cpu_s'] / max(1, len(results['load_s'])):.0f} ms per page load")
    print(f"errors: {len(results['errors'])}")
    for err in results["errors"][:10]:
        print("  " + err)
    if results["rss"]:
        rss = results["rss"]
        shown = rss[::max(1, len(rss) // 12)] + ([rss[-1]] if len(rss) > 12 else [])
        print("server RSS (MiB) over the run: " + ", ".join(f"{t:.0f}s {mib:.0f}" for t, mib in shown)
              + f"; max {max(m for _, m in rss):.0f}")
        hwm = next((int(l.split()[1]) / 1024 for l in Path(f"/proc/{pid}/status").read_text().splitlines()
                    if l.startswith("VmHWM:")), None)
        if hwm:
            print(f"server peak RSS since start (VmHWM): {hwm:.0f} MiB")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sessions", type=int, default=30, help="concurrent sessions (default 30)")
    parser.add_argument("--think", type=float, default=1.0, help="mean seconds between a session's clicks (default 1)")
    parser.add_argument("--ramp", type=float, default=0.1, help="seconds between session starts (default 0.1)")
    parser.add_argument("--model", default="builtin:shapes", help="model key (default builtin:shapes)")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a page may take to settle")
    parser.add_argument("--url", help="load an already running server instead of starting one (no RSS then)")
    args = parser.parse_args(argv)
    if args.url:
        results = asyncio.run(run(args.url.rstrip("/"), None, args))
        report(results, args, None)
    else:
        log = ROOT / "test-artifacts" / "bench-load-server.log"
        log.parent.mkdir(exist_ok=True)
        with streamlit_process(log_path=log) as (url, proc):
            results = asyncio.run(run(url, proc.pid, args))
            report(results, args, proc.pid)
    return 1 if results["errors"] or results["warm_errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
