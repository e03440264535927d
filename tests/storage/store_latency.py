"""A store's round trip in front of the loopback S3 server, for tests and benchmarks.

moto's standalone server answers on 127.0.0.1 with no latency, and costs each ranged GET the
size of the whole object; S3 costs each request tens of milliseconds and a range only its
bytes. So a reader that sends its requests one after another looks as fast on the loopback
server as one that sends them together, though on a store it waits once per request.

``latency_proxy(upstream, delay_s)`` is an HTTP proxy on 127.0.0.1 that holds every request
``delay_s`` before answering it (the round trip) and answers ranged GETs of an object from the
object's bytes, fetched from the server once (what a store's range costs). Everything else
(listings, HEADs, writes) goes to the server. It counts requests and the most in flight at once:
what a reader's request pattern is, whatever the numbers.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

_RANGE = re.compile(r"bytes=(\d+)-(\d*)$")


class RequestStats:
    def __init__(self):
        self.lock = threading.Lock()
        self.requests = self.in_flight = self.most_in_flight = 0

    def enter(self) -> None:
        with self.lock:
            self.requests += 1
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)

    def leave(self) -> None:
        with self.lock:
            self.in_flight -= 1

    def reset(self) -> None:
        with self.lock:
            self.requests = self.most_in_flight = 0


@contextlib.contextmanager
def latency_proxy(upstream: str, delay_s: float):
    """Yields (proxy URL, ``RequestStats``)."""
    target = urlsplit(upstream)
    stats = RequestStats()
    objects: dict[str, tuple[bytes, list[tuple[str, str]]]] = {}
    path_locks: dict[str, threading.Lock] = {}
    locks_lock = threading.Lock()

    def path_lock(path: str) -> threading.Lock:
        with locks_lock:
            return path_locks.setdefault(path, threading.Lock())

    def send(method: str, path: str, body: bytes, headers: dict) -> tuple[int, str, list, bytes]:
        conn = http.client.HTTPConnection(target.hostname, target.port, timeout=600)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            return resp.status, resp.reason, resp.getheaders(), resp.read()
        finally:
            conn.close()

    class Forward(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, status: int, reason: str, headers: list, data: bytes, length: int | None = None,
                   content_range: str | None = None) -> None:
            self.send_response(status, reason)
            for k, v in headers:
                if k.lower() not in ("transfer-encoding", "connection", "content-length", "content-range"):
                    self.send_header(k, v)
            if content_range:
                self.send_header("Content-Range", content_range)
            self.send_header("Content-Length", str(len(data) if length is None else length))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))
            parts = []  # a streamed upload part: HTTP chunks, then trailers up to a blank line
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline().strip():
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()

        def _handle(self) -> None:
            stats.enter()
            try:
                time.sleep(delay_s)
                body = self._body()
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("transfer-encoding", "expect")}
                headers["Content-Length"] = str(len(body))
                ranged = _RANGE.match(self.headers.get("Range", "")) if self.command == "GET" else None
                if ranged is None:
                    with path_lock(self.path):  # a write ends what was cached under that path
                        objects.pop(self.path, None)
                    status, reason, rheaders, data = send(self.command, self.path, body, headers)
                    if self.command == "HEAD":
                        length = next((int(v) for k, v in rheaders if k.lower() == "content-length"), 0)
                        return self._reply(status, reason, rheaders, b"", length)
                    return self._reply(status, reason, rheaders, data)
                with path_lock(self.path):  # one fetch of an object, whoever asks first
                    cached = objects.get(self.path)
                    if cached is None:
                        headers.pop("Range", None)
                        status, reason, rheaders, data = send("GET", self.path, b"", headers)
                        if status != 200:
                            return self._reply(status, reason, rheaders, data)
                        cached = objects[self.path] = (data, rheaders)
                data, rheaders = cached
                lo = int(ranged.group(1))
                hi = min(int(ranged.group(2)) if ranged.group(2) else len(data) - 1, len(data) - 1)
                return self._reply(206, "Partial Content", rheaders, data[lo:hi + 1],
                                   content_range=f"bytes {lo}-{hi}/{len(data)}")
            finally:
                stats.leave()

        do_GET = do_PUT = do_POST = do_HEAD = do_DELETE = _handle

        def log_message(self, *args):  # quiet: the server logs every request it gets
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Forward)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", stats
    finally:
        server.shutdown()
        server.server_close()
