"""docs/nginx-varlite.conf, the load balancer of docs/SCALING.md: nginx accepts it as shipped (``nginx -t``), and,
run in front of two stand-in processes, it keeps one browser on one process (the cookie), spreads browsers over
both, passes the websocket upgrade on, takes uploads up to the app's 10 MB and hides /_stcore/metrics.

Needs Debian's nginx (``apt-get install nginx-light``, as .ci/run does); nginx runs from a temporary prefix, as any
user, on free ports of 127.0.0.1."""
from __future__ import annotations

import getpass
import os
import re
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

CONF = Path(__file__).resolve().parents[1] / "docs" / "nginx-varlite.conf"
UPSTREAM_SERVERS = re.compile(r"^    server 127\.0\.0\.1:85\d\d;\n", re.MULTILINE)


@pytest.fixture(scope="module")
def nginx() -> str:
    found = shutil.which("nginx", path=os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"]))
    assert found, "nginx is not installed: these tests need it (Debian: apt-get install nginx-light; .ci/run does)"
    return found


def main_conf(prefix: Path, site: str) -> Path:
    """A whole nginx.conf in ``prefix`` around ``site`` (what /etc/nginx/nginx.conf does around conf.d/*.conf), with
    every file nginx writes inside ``prefix``. Its workers run as this user (started by root, nginx would run them as
    nobody, who cannot write there; started by another user, nginx ignores the line)."""
    (prefix / "varlite.conf").write_text(site)
    temp = "\n".join(f"    {kind}_temp_path {prefix / kind};" for kind in
                     ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    conf = prefix / "nginx.conf"
    conf.write_text(f"user {getpass.getuser()};\npid {prefix / 'nginx.pid'};\nerror_log {prefix / 'error.log'};\nevents {{}}\n"
                    f"http {{\n    access_log off;\n{temp}\n    include {prefix / 'varlite.conf'};\n}}\n")
    return conf


def test_nginx_accepts_the_shipped_config(nginx, tmp_path):
    result = subprocess.run([nginx, "-t", "-p", str(tmp_path), "-e", str(tmp_path / "error.log"),
                             "-c", str(main_conf(tmp_path, CONF.read_text()))],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "syntax is ok" in result.stderr


class Replica:
    """A stand-in for one walkthrough process: answers every request with its name and the Upgrade and Connection
    headers it received, after reading the whole body."""

    def __init__(self, name: str):
        replica = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self):
                self.rfile.read(int(self.headers.get("Content-Length") or 0))
                replica.paths.append(self.path)
                body = f"{name} {self.headers.get('Upgrade')} {self.headers.get('Connection')}".encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = answer

            def log_message(self, *args):
                pass

        self.paths: list[str] = []
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True).start()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def balanced(nginx, tmp_path_factory):
    """nginx running the shipped config, listening on a free port, in front of two replicas."""
    prefix = tmp_path_factory.mktemp("nginx")
    replicas = [Replica("a"), Replica("b")]
    port = free_port()
    site = CONF.read_text()
    assert len(UPSTREAM_SERVERS.findall(site)) == 4 and site.count("    listen 80;\n") == 1
    site = UPSTREAM_SERVERS.sub("", site, count=4).replace(
        "upstream varlite {\n", "upstream varlite {\n" + "".join(f"    server 127.0.0.1:{r.port};\n" for r in replicas))
    site = site.replace("    listen 80;\n", f"    listen 127.0.0.1:{port};\n")
    process = subprocess.Popen([nginx, "-p", str(prefix), "-e", str(prefix / "error.log"),
                                "-c", str(main_conf(prefix, site)), "-g", "daemon off;"],
                               stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 10
    while True:
        try:
            urllib.request.urlopen(url + "/", timeout=2).read()
            break
        except OSError:
            assert process.poll() is None, f"nginx stopped: {process.stderr.read()}"
            assert time.monotonic() < deadline, "nginx did not answer within 10 s"
            time.sleep(0.05)
    yield url, replicas
    process.terminate()
    process.wait(timeout=10)
    for replica in replicas:
        replica.httpd.shutdown()


def fetch(url: str, cookie: str | None = None, data: bytes | None = None, headers: dict | None = None):
    """(status, body, the varlite_replica cookie set) of one request."""
    request = urllib.request.Request(url, data=data, headers={**(headers or {}),
                                                              **({"Cookie": cookie} if cookie else {})})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            status, body, set_cookie = response.status, response.read().decode(), response.headers.get("Set-Cookie")
    except urllib.error.HTTPError as error:
        status, body, set_cookie = error.code, "", error.headers.get("Set-Cookie")
    match = re.match(r"varlite_replica=([^;]+);", set_cookie or "")
    return status, body, match.group(1) if match else None


def test_one_browser_stays_on_one_replica_and_browsers_spread(balanced):
    url, _ = balanced
    status, body, key = fetch(url + "/")
    assert status == 200 and key, "the first answer sets the replica cookie"
    first = body.split()[0]
    for path in ("/_stcore/health", "/media/x.png", "/_stcore/stream", "/?model=builtin:shapes"):
        status, body, again = fetch(url + path, cookie=f"varlite_replica={key}")
        assert (status, body.split()[0], again) == (200, first, key)
    reached = {fetch(url + "/")[1].split()[0] for _ in range(20)}          # 20 new browsers
    assert reached == {"a", "b"}


def test_the_websocket_upgrade_is_passed_on(balanced):
    url, _ = balanced
    _, body, _ = fetch(url + "/_stcore/stream", headers={"Upgrade": "websocket", "Connection": "Upgrade"})
    assert body.split()[1:] == ["websocket", "upgrade"]
    _, body, _ = fetch(url + "/")
    assert body.split()[1:] == ["None", "close"]


def test_uploads_up_to_10_mb_pass_and_metrics_are_hidden(balanced):
    url, replicas = balanced
    assert fetch(url + "/_stcore/upload_file/s/f", data=b"x" * (9 * 2**20))[0] == 200
    assert fetch(url + "/_stcore/upload_file/s/f", data=b"x" * (11 * 2**20))[0] == 413
    assert fetch(url + "/_stcore/metrics")[0] == 404
    assert not any("/_stcore/metrics" in path for r in replicas for path in r.paths)
