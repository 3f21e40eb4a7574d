"""Tiny threaded HTTP servers on 127.0.0.1 for the download tests (never the internet): one payload at one URL
(``PayloadServer``, for varlite's own client) and a Hugging Face Hub stand-in (``HubServer``, for huggingface_hub).
Both can misbehave on purpose."""
from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class PayloadServer:
    """Serve ``payload`` at ``http://127.0.0.1:<free port>/<name>``; every other path answers 404.

    Honours ``Range: bytes=N-`` with 206 (or 416 when N is past the end), unless ``ignore_range`` is set, in which
    case it always answers 200 with the whole payload. With ``cut_first_request_after=N`` the first request gets the
    full Content-Length header but only N body bytes before the connection is closed (a dropped connection). With
    ``hang=True`` it accepts every connection and never answers; with ``trickle_s=t`` it sends the headers, then one
    body byte every t seconds. ``requests`` records the Range header (or None) of every request, in order.
    """

    def __init__(self, payload: bytes, name: str = "file.bin", *, ignore_range: bool = False,
                 cut_first_request_after: int | None = None, hang: bool = False, trickle_s: float | None = None):
        self.payload = payload
        self.path = "/" + name
        self.ignore_range = ignore_range
        self.cut_first_request_after = cut_first_request_after
        self.hang, self.trickle_s = hang, trickle_s
        self.requests: list[str | None] = []
        self.stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self._httpd.daemon_threads = True
        self._httpd.payload_server = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{self.path}"

    def start(self) -> PayloadServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


def trickle(handler: BaseHTTPRequestHandler, body: bytes, every_s: float, stopping: threading.Event) -> None:
    """Send ``body`` one byte every ``every_s`` seconds (a server that stalls without closing), until the client
    gives up or the server stops."""
    for i in range(len(body)):
        if stopping.wait(every_s):
            return
        try:
            handler.wfile.write(body[i:i + 1])
            handler.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            return                                  # the client gave up, as it should


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        server: PayloadServer = self.server.payload_server
        range_header = self.headers.get("Range")
        server.requests.append(range_header)
        if server.hang:
            server.stopping.wait()
            return
        if self.path != server.path:
            self.send_error(404, "no such file")
            return
        data = server.payload
        start = 0
        if range_header is not None and not server.ignore_range:
            start = int(range_header.removeprefix("bytes=").removesuffix("-"))   # the client only sends "bytes=N-"
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if server.trickle_s is not None:
            trickle(self, body, server.trickle_s, server.stopping)
            return
        if server.cut_first_request_after is not None and len(server.requests) == 1:
            body = body[:server.cut_first_request_after]      # then return: HTTP/1.0 closes the connection
        self.wfile.write(body)

    def log_message(self, format, *args):
        """Keep the test output clean."""


class HubServer:
    """A stand-in for the Hugging Face Hub on 127.0.0.1: serves ``files`` ({filename: bytes}) of one repository at
    ``/{repo_id}/resolve/{revision}/{filename}`` with what ``hf_hub_download`` reads (huggingface_hub's
    file_download.py): HEAD and GET answer with ETag (the quoted sha256 of the bytes), X-Repo-Commit (a fixed 40-hex
    commit), Content-Length and Accept-Ranges; GET honours ``Range: bytes=N-`` with 206. A missing file answers 404
    with ``X-Error-Code: EntryNotFound``. Point huggingface_hub at it with ``endpoint`` (``HF_ENDPOINT``).

    Misbehaviour on purpose: ``cdn=True`` answers /resolve/ with a 302 to ``http://localhost:<port>/cdn/<sha256>``
    (another origin, as the Hub's CDN is) carrying X-Linked-Etag and X-Linked-Size, and serves the bytes there;
    ``cut_first_get_after=N`` sends the full Content-Length but only N body bytes on the first GET, then closes;
    ``hang=True`` accepts every connection and never answers; ``trickle_s=t`` answers GET with its headers, then one
    body byte every t seconds. ``requests`` records (method, path, Range header) of every request, in order
    (huggingface_hub also asks the endpoint for other things, e.g. /api/agent-harnesses: answered 404).
    """

    COMMIT = "0123456789abcdef0123456789abcdef01234567"

    def __init__(self, files: dict[str, bytes], repo_id: str = "FoundationVision/var", revision: str = "main", *,
                 cdn: bool = False, cut_first_get_after: int | None = None, hang: bool = False,
                 trickle_s: float | None = None):
        self.files = {f"/{repo_id}/resolve/{revision}/{name}": data for name, data in files.items()}
        self.blobs = {hashlib.sha256(data).hexdigest(): data for data in files.values()}
        self.cdn, self.cut_first_get_after, self.hang, self.trickle_s = cdn, cut_first_get_after, hang, trickle_s
        self.requests: list[tuple[str, str, str | None]] = []
        self.stopping = threading.Event()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), _HubHandler)
        self._httpd.daemon_threads = True
        self._httpd.hub = self
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)

    @property
    def endpoint(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def file_requests(self) -> list[tuple[str, str, str | None]]:
        """The requests for files (/resolve/ or /cdn/), leaving out huggingface_hub's other calls (/api/...)."""
        return [r for r in self.requests if "/resolve/" in r[1] or r[1].startswith("/cdn/")]

    def gets(self) -> list[tuple[str, str | None]]:
        """(path, Range header) of every GET of a file."""
        return [(path, range_header) for method, path, range_header in self.file_requests() if method == "GET"]

    def start(self) -> HubServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


class _HubHandler(BaseHTTPRequestHandler):
    def do_HEAD(self):
        self.answer(with_body=False)

    def do_GET(self):
        self.answer(with_body=True)

    def answer(self, with_body: bool):
        hub: HubServer = self.server.hub
        hub.requests.append((self.command, self.path, self.headers.get("Range")))
        if hub.hang:
            hub.stopping.wait()
            return
        if self.path.startswith("/cdn/") and self.path[len("/cdn/"):] in hub.blobs:
            self.send_bytes(hub, hub.blobs[self.path[len("/cdn/"):]], with_body)
            return
        data = hub.files.get(self.path)
        if data is None:
            self.send_response(404)
            self.send_header("X-Error-Code", "EntryNotFound")
            self.send_header("X-Repo-Commit", HubServer.COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        sha = hashlib.sha256(data).hexdigest()
        if hub.cdn:
            port = self.server.server_address[1]
            self.send_response(302)
            self.send_header("Location", f"http://localhost:{port}/cdn/{sha}")
            self.send_header("X-Linked-Etag", f'"{sha}"')
            self.send_header("X-Linked-Size", str(len(data)))
            self.send_header("X-Repo-Commit", HubServer.COMMIT)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_bytes(hub, data, with_body, etag=sha)

    def send_bytes(self, hub: HubServer, data: bytes, with_body: bool, etag: str | None = None):
        start = 0
        range_header = self.headers.get("Range") if with_body else None
        if range_header is not None:
            start = int(range_header.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
        body = data[start:]
        if etag is not None:
            self.send_header("ETag", f'"{etag}"')
            self.send_header("X-Repo-Commit", HubServer.COMMIT)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not with_body:
            return
        if hub.trickle_s is not None:
            trickle(self, body, hub.trickle_s, hub.stopping)
            return
        if hub.cut_first_get_after is not None and len(hub.gets()) == 1:
            body = body[:hub.cut_first_get_after]       # then return: HTTP/1.0 closes the connection
        self.wfile.write(body)

    def log_message(self, format, *args):
        """Keep the test output clean."""
