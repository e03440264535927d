"""The downloader against hostile servers (issue 15, items 7-9): a server that drips its
headers or body cannot hold a thread past --max-seconds, an allow-list entry with a port
allows only that port (every redirect hop is checked), and IPv6 forms that embed a private
IPv4 address are refused without a packet sent. Servers run on 127.0.0.1 only."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from curate.download.safety import BlockedAddressError, FetchPolicy, build_opener

DRIP_SECONDS = 30  # how long a dripping server keeps going; the deadline must end it long before


class _Server:
    """127.0.0.1 server. /ok: an image body; /to?u=URL: 302 to URL; /drip-status, /drip-headers,
    /drip-body: one byte every 0.2 s for DRIP_SECONDS; /slow-hop/N: waits 0.5 s, then 302 to
    /slow-hop/N-1 (/ok at 0)."""

    def __init__(self):
        self.paths: list[str] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def _drip(self, data: bytes):
                end = time.monotonic() + DRIP_SECONDS
                for i in range(len(data)):
                    if time.monotonic() > end:
                        return
                    self.wfile.write(data[i:i + 1])
                    self.wfile.flush()
                    time.sleep(0.2)

            def do_GET(self):
                rec.paths.append(self.path)
                body = b"\xff\xd8\xff\xe0 not really a jpeg"
                path = self.path.split("?")[0]
                try:
                    if self.path.startswith("/to?u="):
                        self.send_response(302)
                        self.send_header("Location", self.path[len("/to?u="):])
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    elif path == "/drip-status":
                        self._drip(b"HTTP/1.1 200 OK" + b" " * 1000 + b"\r\nContent-Length: 0\r\n\r\n")
                    elif path == "/drip-headers":
                        self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n")
                        self._drip(b"X-Pad: " + b"a" * 1000 + b"\r\nContent-Length: 0\r\n\r\n")
                    elif path == "/drip-body":
                        self.send_response(200)
                        self.send_header("Content-Type", "image/jpeg")
                        self.send_header("Content-Length", "1000")
                        self.end_headers()
                        self._drip(b"\xff" * 1000)
                    elif self.path.startswith("/slow-hop/"):
                        n = int(self.path.rsplit("/", 1)[1])
                        time.sleep(0.5)
                        self.send_response(302)
                        self.send_header("Location", f"/slow-hop/{n - 1}" if n > 1 else "/ok")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                    else:
                        self.send_response(200)
                        self.send_header("Content-Type", "image/jpeg")
                        self.send_header("Content-Length", str(len(body)))
                        self.end_headers()
                        self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass
                self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    s = _Server()
    yield s
    s.close()


@pytest.fixture
def other_server():
    s = _Server()
    yield s
    s.close()


# ---------------------------------------------------------------- item 7: one deadline per request
@pytest.mark.parametrize("path", ["/drip-status", "/drip-headers", "/drip-body", "/slow-hop/6"])
def test_the_deadline_covers_the_whole_request(server, path):
    # the per-operation timeout (5 s) never fires: each byte comes within 0.2 s
    opener = build_opener(FetchPolicy(allow_networks=["127.0.0.1/32"], max_seconds=1.0))
    start = time.monotonic()
    with pytest.raises(Exception) as info:
        with opener.open(f"http://127.0.0.1:{server.port}{path}", timeout=5) as r:
            r.read()
    elapsed = time.monotonic() - start
    assert "timed out" in str(info.value)
    assert elapsed < 1.0 + 9.0 < DRIP_SECONDS, elapsed  # ended by the deadline, not by the server


def test_each_request_gets_its_own_deadline(server):
    opener = build_opener(FetchPolicy(allow_networks=["127.0.0.1/32"], max_seconds=1.0))
    for _ in range(3):  # a request after a timed-out one starts a fresh clock
        with pytest.raises(Exception, match="timed out"):
            opener.open(f"http://127.0.0.1:{server.port}/drip-headers", timeout=5).read()
        assert opener.open(f"http://127.0.0.1:{server.port}/ok", timeout=5).read().startswith(b"\xff\xd8")


def test_a_download_with_dripping_servers_finishes_on_time(tmp_path, server):
    from curate.download import DownloadOptions, run_download
    from curate.engine import LocalExecutor
    from curate.tables import Dataset
    from tests.download.conftest import samples_table

    b = f"http://127.0.0.1:{server.port}"
    rows = [(f"{b}/drip-{what}?{i}", f"drip {what} {i}") for i in range(3) for what in ("status", "headers", "body")]
    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", samples_table(rows), schema="samples")
    opts = DownloadOptions(samples_per_shard=100, thread_count=3, timeout=5.0,
                           policy=FetchPolicy(allow_networks=["127.0.0.1/32"], max_seconds=1.0))
    start = time.monotonic()
    stats = run_download(ds, LocalExecutor(), opts)
    elapsed = time.monotonic() - start
    assert stats["failed_by_class"] == {"timeout": 9}
    # 9 requests on 3 threads, 1 s each: no thread was held until the servers stopped
    assert elapsed < DRIP_SECONDS, elapsed


# ---------------------------------------------------------------- item 8: ports, on every hop
def test_an_allow_entry_with_a_port_refuses_a_redirect_to_another_port(server, other_server):
    opener = build_opener(FetchPolicy(allow_networks=[f"127.0.0.1:{server.port}"]))
    for target in (f"http://127.0.0.1:{other_server.port}/ok", f"http://localhost:{other_server.port}/ok",
                   f"http://[::ffff:127.0.0.1]:{other_server.port}/ok"):
        with pytest.raises(Exception) as info:
            opener.open(f"http://127.0.0.1:{server.port}/to?u={target}", timeout=5).read()
        assert "blocked address" in str(info.value) and f"port {other_server.port}" in str(info.value)
    assert other_server.paths == []  # never connected
    # the allowed port itself, redirects within it included
    assert opener.open(f"http://127.0.0.1:{server.port}/to?u=/ok", timeout=5).read().startswith(b"\xff\xd8")
    with pytest.raises(Exception, match="blocked address"):
        opener.open(f"http://127.0.0.1:{other_server.port}/ok", timeout=5)


@pytest.mark.parametrize("entries, followed", [
    (["127.0.0.1/32"], True),  # no port: every port of the address, as documented
    (["{a}", "{b}"], True),
    (["127.0.0.0/8:{a}", "127.0.0.1:{b}"], True),
    (["127.0.0.0/8:{a}"], False),
])
def test_port_ranges_and_lists(server, other_server, entries, followed):
    a, b = server.port, other_server.port
    entries = [e.format(a=f"127.0.0.1:{a}", b=f"127.0.0.1:{b}") if e.startswith("{") else e.format(a=a, b=b)
               for e in entries]
    opener = build_opener(FetchPolicy(allow_networks=entries))
    url = f"http://127.0.0.1:{a}/to?u=http://127.0.0.1:{b}/ok"
    if followed:
        assert opener.open(url, timeout=5).read().startswith(b"\xff\xd8")
        assert other_server.paths == ["/ok"]
    else:
        with pytest.raises(Exception, match="blocked address"):
            opener.open(url, timeout=5).read()
        assert other_server.paths == []


def _ipv6_loopback_available() -> bool:
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _ipv6_loopback_available(), reason="no IPv6 loopback here")
def test_bracketed_ipv6_entries_with_a_port(server):
    class V6(ThreadingHTTPServer):
        address_family = socket.AF_INET6

    class Ok(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

    v6 = V6(("::1", 0), Ok)
    threading.Thread(target=v6.serve_forever, daemon=True).start()
    try:
        port = v6.server_address[1]
        assert build_opener(FetchPolicy(allow_networks=[f"[::1]:{port}"])).open(f"http://[::1]:{port}/", timeout=5).read() == b"ok"
        with pytest.raises(Exception, match="blocked address"):
            build_opener(FetchPolicy(allow_networks=[f"[::1]:{port + 1 if port < 65535 else port - 1}"])).open(
                f"http://[::1]:{port}/", timeout=5)
    finally:
        v6.shutdown()
        v6.server_close()


# ---------------------------------------------------------------- item 9: embedded addresses
@pytest.mark.parametrize("host, why", [
    ("2002:a9fe:a9fe::", "6to4 address embedding 169.254.169.254"),
    ("2002:7f00:1::1", "6to4 address embedding 127.0.0.1"),
    ("64:ff9b::a9fe:a9fe", "NAT64 address embedding 169.254.169.254"),
    ("64:ff9b::c0a8:1", "NAT64 address embedding 192.168.0.1"),
    ("64:ff9b:1::a00:1", "NAT64 local-use prefix"),
    ("::ffff:0:a9fe:a9fe", "IPv4-translated address embedding 169.254.169.254"),
    ("::a9fe:a9fe", "IPv4-compatible address embedding 169.254.169.254"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo client address embedding 10.0.0.1"),
    ("fec0::1", "site-local"),
    ("::ffff:100.100.100.200", "cloud metadata"),
])
def test_ipv6_forms_of_inside_addresses_are_refused_before_dialling(host, why):
    # numeric hosts: getaddrinfo sends nothing, and the refusal comes before any connect
    with pytest.raises(BlockedAddressError, match="blocked address") as info:
        FetchPolicy().resolve(host, 80)
    assert why in str(info.value)


def test_the_deadline_covers_a_dripped_tls_handshake():
    """A TLS server that announces a 16 KB handshake record and sends it a byte at a time."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    done = threading.Event()

    def serve():
        conn, _ = listener.accept()
        with conn:
            conn.recv(4096)  # the ClientHello
            conn.sendall(b"\x16\x03\x03\x40\x00")  # handshake record header: 16384 bytes follow
            end = time.monotonic() + DRIP_SECONDS
            try:
                while time.monotonic() < end and not done.is_set():
                    conn.sendall(b"\x00")
                    time.sleep(0.2)
            except OSError:
                pass

    threading.Thread(target=serve, daemon=True).start()
    opener = build_opener(FetchPolicy(allow_networks=[f"127.0.0.1:{port}"], max_seconds=1.0))
    start = time.monotonic()
    try:
        with pytest.raises(Exception, match="timed out"):
            opener.open(f"https://127.0.0.1:{port}/x.jpg", timeout=5)
        assert time.monotonic() - start < 1.0 + 9.0 < DRIP_SECONDS
    finally:
        done.set()
        listener.close()


@pytest.fixture
def tls_server(tmp_path, monkeypatch):
    """An HTTPS server on 127.0.0.1 with a certificate made here and trusted through
    SSL_CERT_FILE (OpenSSL's own variable, read by ssl.create_default_context)."""
    import shutil
    import ssl
    import subprocess

    if shutil.which("openssl") is None:
        pytest.skip("no openssl command to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def do_GET(self):
            body = b"\xff\xd8\xff\xe0 over tls"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body) if self.path == "/ok" else 1000))
            self.end_headers()
            try:
                if self.path == "/ok":
                    self.wfile.write(body)
                    return
                end = time.monotonic() + DRIP_SECONDS
                while time.monotonic() < end:
                    self.wfile.write(b"\x00")
                    self.wfile.flush()
                    time.sleep(0.2)
            except OSError:
                pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(cert), str(key))
    httpd.socket = ctx.wrap_socket(httpd.socket, server_side=True)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield httpd.server_address[1]
    httpd.shutdown()
    httpd.server_close()


def test_https_works_and_its_body_is_under_the_deadline(tls_server):
    opener = build_opener(FetchPolicy(allow_networks=[f"127.0.0.1:{tls_server}"], max_seconds=1.0))
    assert opener.open(f"https://127.0.0.1:{tls_server}/ok", timeout=5).read() == b"\xff\xd8\xff\xe0 over tls"
    start = time.monotonic()
    with pytest.raises(Exception, match="timed out"):
        opener.open(f"https://127.0.0.1:{tls_server}/drip", timeout=5).read()
    assert time.monotonic() - start < 1.0 + 9.0 < DRIP_SECONDS
