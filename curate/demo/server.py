"""A static file server on 127.0.0.1 in a background thread (the demo's "web")."""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002  (the base class's name)
        pass


class StaticServer:
    """``with StaticServer(folder) as url:`` serves ``folder`` at ``url`` (a free port)."""

    def __init__(self, folder: str | Path, host: str = "127.0.0.1", port: int = 0):
        self.folder = Path(folder)
        handler = functools.partial(_QuietHandler, directory=str(self.folder))
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> str:
        self._thread.start()
        return self.url

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
