"""An HTTP server on 127.0.0.1 serving real Flickr photos and the web's usual broken responses."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pytest
from PIL import Image

from curate.uid import derive_uid


def png_bomb(side: int = 30000) -> bytes:
    """A real PNG of side x side black 1-bit pixels: ~110 KB on the wire, 900 megapixels decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row * 1000) for _ in range(side // 1000)) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", body) + chunk(b"IEND", b"")


def tiny_gif() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (1, 1), (255, 255, 255)).save(buf, format="GIF")
    return buf.getvalue()


class ImageServer:
    """Routes (all GET):
    /img/<name>          the photo's bytes (image/jpeg)
    /missing             404
    /forbidden           403
    /truncated.jpg       the first 40% of a photo
    /page.html           an HTML page served as text/html
    /fake.jpg            an HTML page served as image/jpeg
    /slow.jpg            waits ``slow_seconds`` before answering
    /dribble.jpg         answers at once, then sends the body a few bytes at a time
    /bomb.png            a decompression bomb
    /tiny.gif            a 1x1 image
    /noai/<name>         the photo with X-Robots-Tag: noai
    /otherbot/<name>     the photo with X-Robots-Tag: googlebot: noimageai (does not apply to us)
    /ours/<name>         the photo with X-Robots-Tag: curate: noimageai
    /redirect/<name>     302 to /img/<name>
    /redirect-metadata   302 to http://169.254.169.254/latest/meta-data/
    /redirect-loopback   302 to http://127.0.0.2:<port>/img/<first photo>
    /flaky/<name>        500 the first time each name is asked for, the photo afterwards
    """

    def __init__(self, photos: list[Path], slow_seconds: float = 3.0):
        self.photos = {p.name: p.read_bytes() for p in photos}
        self.first = photos[0].name
        self.slow_seconds = slow_seconds
        self.bomb = png_bomb()
        self.gif = tiny_gif()
        self.requests: list[tuple[str, str]] = []  # (path, user agent)
        self.flaky_seen: set[str] = set()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def send(self, code, body=b"", ctype="image/jpeg", headers=()):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                for k, v in headers:
                    self.send_header(k, v)
                self.end_headers()
                if body:
                    self.wfile.write(body)

            def do_GET(self):  # noqa: C901 - a routing table
                with server._lock:
                    server.requests.append((self.path, self.headers.get("User-Agent", "")))
                path = self.path
                name = path.rsplit("/", 1)[-1]
                photo = server.photos.get(name)
                try:
                    if path.startswith("/img/") and photo:
                        self.send(200, photo)
                    elif path == "/missing":
                        self.send(404, b"not found", "text/plain")
                    elif path == "/forbidden":
                        self.send(403, b"forbidden", "text/plain")
                    elif path == "/truncated.jpg":
                        data = server.photos[server.first]
                        self.send(200, data[: len(data) * 2 // 5])
                    elif path == "/page.html":
                        self.send(200, b"<html><body>hello</body></html>", "text/html")
                    elif path == "/fake.jpg":
                        self.send(200, b"<!DOCTYPE html><html><body>captcha</body></html>")
                    elif path == "/slow.jpg":
                        time.sleep(server.slow_seconds)
                        self.send(200, server.photos[server.first])
                    elif path == "/dribble.jpg":
                        data = server.photos[server.first]
                        self.send_response(200)
                        self.send_header("Content-Type", "image/jpeg")
                        self.send_header("Content-Length", str(len(data)))
                        self.end_headers()
                        for i in range(0, len(data), 64):
                            self.wfile.write(data[i:i + 64])
                            self.wfile.flush()
                            time.sleep(0.05)
                    elif path == "/bomb.png":
                        self.send(200, server.bomb, "image/png")
                    elif path == "/tiny.gif":
                        self.send(200, server.gif, "image/gif")
                    elif path.startswith("/noai/") and photo:
                        self.send(200, photo, headers=[("X-Robots-Tag", "noai")])
                    elif path.startswith("/otherbot/") and photo:
                        self.send(200, photo, headers=[("X-Robots-Tag", "googlebot: noimageai")])
                    elif path.startswith("/ours/") and photo:
                        self.send(200, photo, headers=[("X-Robots-Tag", "curate: noimageai, nofollow")])
                    elif path.startswith("/redirect/") and photo:
                        self.send(302, b"", "text/plain", [("Location", f"/img/{name}")])
                    elif path == "/redirect-metadata":
                        self.send(302, b"", "text/plain", [("Location", "http://169.254.169.254/latest/meta-data/")])
                    elif path == "/redirect-loopback":
                        self.send(302, b"", "text/plain",
                                  [("Location", f"http://127.0.0.2:{server.port}/img/{server.first}")])
                    elif path.startswith("/flaky/") and photo:
                        with server._lock:
                            first_time = name not in server.flaky_seen
                            server.flaky_seen.add(name)
                        if first_time:
                            self.send(500, b"try again", "text/plain")
                        else:
                            self.send(200, photo)
                    else:
                        self.send(404, b"no route", "text/plain")
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def photos(shared_data) -> list[Path]:
    return sorted((shared_data / "flickr8k" / "images").glob("*.jpg"))[:24]


@pytest.fixture
def image_server(photos):
    with ImageServer(photos, slow_seconds=2.5) as server:
        yield server


def samples_table(rows: list[tuple[str, str]]) -> pa.Table:
    """A samples table (schemas/samples.yaml) for (url, text) rows."""
    return pa.table({
        "uid": [derive_uid(u, t) for u, t in rows],
        "url": [u for u, _ in rows],
        "text": [t for _, t in rows],
        "source_file": ["/test/pool.parquet"] * len(rows),
        "source_row": pa.array(range(len(rows)), pa.int64()),
        "original_width": pa.array([None] * len(rows), pa.int32()),
        "original_height": pa.array([None] * len(rows), pa.int32()),
        "extra": pa.array([None] * len(rows), pa.string()),
    })


class RouteServer:
    """A 127.0.0.1 HTTP/1.1 server whose routes are functions of the request handler.

    ``routes``: path (as received, percent-encoded) -> fn(handler). ``requests`` records
    (path, headers) of every request. Helpers on the handler: ``reply(body, headers)``.
    """

    def __init__(self, routes: dict):
        self.routes = routes
        self.requests: list[tuple[str, dict]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def reply(self, body: bytes, headers=(("Content-Type", "image/jpeg"),), code: int = 200,
                      length: int | None = None):
                self.send_response(code)
                for k, v in headers:
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                server.requests.append((self.path, dict(self.headers.items())))
                route = server.routes.get(self.path)
                try:
                    if route is None:
                        self.reply(b"no route", (("Content-Type", "text/plain"),), 404)
                    else:
                        route(self)
                except (BrokenPipeError, ConnectionResetError, TimeoutError):
                    pass
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.base = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
