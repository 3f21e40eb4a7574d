"""A tiny threaded HTTP server on 127.0.0.1 for the download tests: serves one payload, can misbehave on purpose."""
from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class PayloadServer:
    """Serve ``payload`` at ``http://127.0.0.1:<free port>/<name>``; every other path answers 404.

    Honours ``Range: bytes=N-`` with 206 (or 416 when N is past the end), unless ``ignore_range`` is set, in which
    case it always answers 200 with the whole payload. With ``cut_first_request_after=N`` the first request gets the
    full Content-Length header but only N body bytes before the connection is closed (a dropped connection).
    ``requests`` records the Range header (or None) of every request, in order.
    """

    def __init__(self, payload: bytes, name: str = "file.bin", *, ignore_range: bool = False,
                 cut_first_request_after: int | None = None):
        self.payload = payload
        self.path = "/" + name
        self.ignore_range = ignore_range
        self.cut_first_request_after = cut_first_request_after
        self.requests: list[str | None] = []
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
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        server: PayloadServer = self.server.payload_server
        range_header = self.headers.get("Range")
        server.requests.append(range_header)
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
        if server.cut_first_request_after is not None and len(server.requests) == 1:
            body = body[:server.cut_first_request_after]      # then return: HTTP/1.0 closes the connection
        self.wfile.write(body)

    def log_message(self, format, *args):
        """Keep the test output clean."""
