"""Helpers for driving the walkthrough in a real browser (tests/test_browser.py, bench/): start the
Streamlit server on a free port and stop it, launch Debian's headless Chromium through Playwright, and wait for a
Streamlit page to settle. Browsers come from the system (``apt-get install -y chromium``); never ``playwright
install``."""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import torch

from varlite import pretrained
from varlite.core.configs import OFFICIAL_PATCH_NUMS
from varlite.synthetic import synthetic_state_dict

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "app" / "streamlit_app.py"
ARTIFACTS = ROOT / "test-artifacts"      # server logs and screenshots of the browser tests
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", "--disable-quic", "--disable-dev-shm-usage"]


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
def streamlit_process(port: int | None = None, env: dict | None = None, log_path: Path | None = None,
                      timeout_s: float = 180.0):
    """Run ``streamlit run app/streamlit_app.py`` headless on a free port; yield (base URL, the server process);
    stop it afterwards."""
    port = port or free_port()
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.headless", "true",
           "--server.port", str(port), "--server.address", "127.0.0.1", "--browser.gatherUsageStats", "false",
           "--server.fileWatcherType", "none", "--server.runOnSave", "false"]
    log = open(log_path, "wb") if log_path else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=ROOT, env={**os.environ, **(env or {})}, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {proc.returncode} (see {log_path or 'its output'})")
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"streamlit did not answer on {url} within {timeout_s:.0f} s")
            time.sleep(0.3)
        yield url, proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)       # the server's own process group, started above
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        if log_path:
            log.close()


@contextlib.contextmanager
def streamlit_server(port: int | None = None, env: dict | None = None, log_path: Path | None = None,
                     timeout_s: float = 180.0):
    """``streamlit_process`` yielding only the base URL."""
    with streamlit_process(port, env, log_path, timeout_s) as (url, _):
        yield url


@contextlib.contextmanager
def serve_app_for_tests(home: Path, log_name: str):
    """The walkthrough served from the cache folder ``home`` for a browser test module, its log in
    test-artifacts/``log_name``. Skips the tests where Chromium is missing, and fails them under CI (where the
    browser tests must run)."""
    import pytest
    if chromium_path() is None:
        message = "Chromium is missing: run `apt-get install -y chromium` (Debian's package, /usr/bin/chromium)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    ARTIFACTS.mkdir(exist_ok=True)
    with streamlit_server(env={"VARLITE_HOME": str(home)}, log_path=ARTIFACTS / log_name) as url:
        yield url


@contextlib.contextmanager
def checked_page(browser, timeout_ms: int, **context_options):
    """A page (1400 x 1000) in a browser context of its own; a JavaScript error in it fails the test at the end."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, **context_options)
    page = context.new_page()
    page.set_default_timeout(timeout_ms)
    errors = []
    page.on("pageerror", lambda err: errors.append(str(err)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors in the page: {errors}"


def rss_mib(pid: int) -> float:
    """Resident memory of a process, in MiB (Linux: /proc/<pid>/status)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


# JavaScript run in the page: true once Streamlit has finished a (re)run and nothing is stale or running.
SETTLED_JS = """() => {
  const main = document.querySelector('[data-testid="stMain"]');
  if (!main) return false;
  if (document.querySelector('[data-stale="true"]')) return false;
  const status = document.querySelector('[data-testid="stStatusWidget"]');
  if (status && /running/i.test(status.innerText)) return false;
  if (document.querySelector('[data-testid="stSpinner"], [data-testid="stProgress"]')) return false;
  const imgs = Array.from(document.querySelectorAll('[data-testid="stImage"] img, [data-testid="stFullScreenFrame"] img'));
  return imgs.every(i => i.complete);
}"""

BROKEN_IMAGES_JS = """() => Array.from(document.querySelectorAll('[data-testid="stMain"] img'))
  .filter(i => i.complete && i.naturalWidth === 0).map(i => i.src)"""


def full_page_screenshot(page, path: Path) -> None:
    """Streamlit scrolls inside stMain: size the viewport to its scroll height, then take the picture."""
    width = page.viewport_size["width"] if page.viewport_size else 1400
    height = 0
    for _ in range(4):            # resizing can re-flow the page: repeat until the height is stable
        new_height = page.evaluate("""() => {
          const m = document.querySelector('[data-testid="stMain"]');
          return Math.max(m ? m.scrollHeight : 0, document.body.scrollHeight);
        }""")
        if new_height == height:
            break
        height = new_height
        page.set_viewport_size({"width": width, "height": int(min(max(height, 600), 8000))})
        page.wait_for_timeout(400)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(path), full_page=True)


def write_synthetic_official(home: Path) -> None:
    """The official vae and d16 files, synthetic weights in the official layout (seed 0)."""
    layouts = pretrained.official_layouts()
    for name in ("vae", "d16"):
        entry = pretrained.OFFICIAL_FILES[name]
        sd = synthetic_state_dict(layouts[entry.layout]["tensors"], seed=0, patch_nums=OFFICIAL_PATCH_NUMS)
        torch.save(sd, home / entry.filename)
        del sd
