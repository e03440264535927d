"""A urllib opener that a crawler can run inside a cloud network.

- Every connection, the first and each one after a redirect, resolves the host itself and
  connects only to an address (and port) the policy allows (the checked address is the one
  dialled, so DNS rebinding cannot slip a second answer in). By default loopback, private,
  link-local, shared (CGNAT), multicast, reserved, documentation, site-local and
  cloud-metadata addresses are refused, and IPv6 forms that embed an IPv4 address (mapped,
  compatible, 6to4, Teredo, NAT64) are judged by the address they embed.
- Only http and https (file:// only when allowed): no ftp:, data:, or local files.
- No proxies from the environment (a proxy would hide the real destination from the check).
- URLs are percent-encoded as a browser does (spaces, non-ASCII, IDNA host names).
- An honest User-Agent replaces img2dataset's browser string.
- ``X-Robots-Tag`` opt-outs (``noai``, ``noimageai`` by default) are refused before the body is read.
- One wall-clock deadline covers the whole request: connecting, TLS, the status line and
  headers, every redirect, the body. Every socket operation waits at most until then, so a
  server that drips bytes cannot hold a thread. The body also has a size limit, and a body
  shorter than its Content-Length is an error, not a truncated image.
- Content encodings (gzip, deflate, br and zstd when their decoders are installed) are
  decoded, under the same size limit.
"""

from __future__ import annotations

import http.client
import ipaddress
import re
import select
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass, field

import curate
from curate.errors import CurateError

PROJECT_URL = "https://github.com/curate-project/curate"

# Cloud metadata endpoints that are not already link-local or private.
METADATA_ADDRESSES = frozenset({"100.100.100.200", "fd00:ec2::254", "168.63.129.16"})

# Special-purpose ranges refused by default, with the reason reported (IANA special-purpose
# registries). Written out rather than taken from ``ipaddress.is_global``, whose answers
# change between Python versions and call 64:ff9b::/96, ::/96, 5f00::/16 or fec0::/10 global.
_V4_SPECIAL = [
    ("0.0.0.0/32", "unspecified"), ("0.0.0.0/8", "this network"), ("10.0.0.0/8", "private"),
    ("100.64.0.0/10", "shared address space (CGNAT)"), ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local"), ("172.16.0.0/12", "private"),
    ("192.0.0.0/24", "IETF protocol assignments"), ("192.0.2.0/24", "documentation"),
    ("192.88.99.0/24", "6to4 relay anycast"), ("192.168.0.0/16", "private"),
    ("198.18.0.0/15", "benchmarking"), ("198.51.100.0/24", "documentation"),
    ("203.0.113.0/24", "documentation"), ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"), ("240.0.0.0/4", "reserved"),
]
_V6_SPECIAL = [
    ("::/128", "unspecified"), ("::1/128", "loopback"), ("64:ff9b:1::/48", "NAT64 local-use prefix"),
    ("100::/64", "discard-only"), ("2001:2::/48", "benchmarking"), ("2001:db8::/32", "documentation"),
    ("2001:10::/28", "ORCHID"), ("2001::/23", "IETF protocol assignments"), ("3fff::/20", "documentation"),
    ("5f00::/16", "SRv6 segment identifiers"), ("fc00::/7", "private"), ("fe80::/10", "link-local"),
    ("fec0::/10", "site-local"), ("ff00::/8", "multicast"), ("::/8", "reserved"),
]
_V4_TABLE = [(ipaddress.ip_network(n), why) for n, why in _V4_SPECIAL]
_V6_TABLE = [(ipaddress.ip_network(n), why) for n, why in _V6_SPECIAL]
_6TO4 = ipaddress.ip_network("2002::/16")
_TEREDO = ipaddress.ip_network("2001::/32")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")
_V4_TRANSLATED = ipaddress.ip_network("::ffff:0:0:0/96")
_GLOBAL_UNICAST = ipaddress.ip_network("2000::/3")


class BlockedAddressError(OSError):
    """The host resolves only to addresses the policy refuses."""


class RobotsOptOutError(OSError):
    """The response carries an X-Robots-Tag directive that forbids this use."""


class BodyLimitError(OSError):
    """The response body took too long, was too big or could not be decoded."""


class ShortBodyError(OSError):
    """The connection closed before the body its Content-Length announced was complete."""


def user_agent(token: str = "curate") -> str:
    try:
        from importlib.metadata import version

        i2d = f" img2dataset/{version('img2dataset')}"
    except Exception:  # noqa: BLE001 - version is decoration only
        i2d = ""
    return f"{token}/{curate.__version__} (+{PROJECT_URL}; image-text dataset builder; honours X-Robots-Tag noai, noimageai){i2d}"


# ---------------------------------------------------------------- addresses
@dataclass(frozen=True)
class AllowEntry:
    """One --allow-network entry: a network and optionally one port or a port range."""

    network: ipaddress.IPv4Network | ipaddress.IPv6Network
    ports: tuple[int, int] | None = None

    def allows(self, addr, port: int | None) -> bool:
        if addr.version != self.network.version or addr not in self.network:
            return False
        return self.ports is None or (port is not None and self.ports[0] <= port <= self.ports[1])


def parse_allow_entry(text: str) -> AllowEntry:
    """``10.0.0.0/8``, ``127.0.0.1:8080``, ``127.0.0.0/8:8000-8099``, ``::1``, ``[::1]:8080``,
    ``[fd00::/8]:443``. Raises CurateError naming the entry."""
    s = text.strip()
    port_text = None
    if s.startswith("["):
        end = s.find("]")
        if end < 0 or (s[end + 1:] and not s[end + 1:].startswith(":")):
            raise CurateError(f"--allow-network {text!r}: write an IPv6 network with a port as [ADDRESS/PREFIX]:PORT")
        net_text, port_text = s[1:end], (s[end + 2:] or None)
    elif s.count(":") == 1:  # IPv4 with a port (an IPv6 address has at least two colons)
        net_text, port_text = s.split(":")
    else:
        net_text = s
    try:
        network = ipaddress.ip_network(net_text, strict=False)
    except ValueError as e:
        raise CurateError(f"--allow-network {text!r}: not an address or CIDR network ({e})") from None
    ports = None
    if port_text is not None:
        m = re.fullmatch(r"(\d{1,5})(?:-(\d{1,5}))?", port_text)
        lo, hi = (int(m.group(1)), int(m.group(2) or m.group(1))) if m else (0, -1)
        if not m or not (1 <= lo <= hi <= 65535):
            raise CurateError(f"--allow-network {text!r}: the port must be a number 1-65535 or a range like 8000-8099")
        ports = (lo, hi)
    return AllowEntry(network, ports)


def embedded_ipv4(addr) -> list[tuple[str, ipaddress.IPv4Address]]:
    """The IPv4 addresses an IPv6 address carries, with the mechanism's name."""
    if addr.version != 6:
        return []
    if addr in _6TO4:
        return [("6to4", addr.sixtofour)]
    if addr in _TEREDO:
        server, client = addr.teredo
        return [("Teredo server", server), ("Teredo client", client)]
    if addr in _NAT64:
        return [("NAT64", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))]
    if addr in _V4_TRANSLATED:
        return [("IPv4-translated", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))]
    if addr in _V4_COMPATIBLE and int(addr) > 1:
        return [("IPv4-compatible", ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))]
    return []


def _special(addr) -> str | None:
    if str(addr) in METADATA_ADDRESSES:
        return "cloud metadata"
    for net, why in (_V4_TABLE if addr.version == 4 else _V6_TABLE):
        if addr in net:
            return why
    return None


@dataclass
class FetchPolicy:
    """What the downloader may connect to and how much it may read. Picklable (sent to workers)."""

    allow_private: bool = False  # allow every address (trusted networks only)
    # networks allowed despite the default block, each optionally with a port: see parse_allow_entry
    allow_networks: list[str] = field(default_factory=list)
    allow_file_urls: bool = False
    user_agent_token: str = "curate"
    disallowed_directives: list[str] = field(default_factory=lambda: ["noai", "noimageai"])
    max_seconds: float = 30.0  # wall clock for one whole request: connect, headers, redirects, body
    max_bytes: int = 50 * 1024 * 1024

    def check(self) -> None:
        """Raise CurateError for an allow-list entry that does not parse."""
        self._allow_entries()
        if not self.max_seconds > 0 or self.max_bytes < 1:
            raise CurateError("--max-seconds and --max-bytes must be positive")

    def _allow_entries(self) -> list[AllowEntry]:
        key = tuple(self.allow_networks)
        cached = self.__dict__.get("_parsed")
        if cached is None or cached[0] != key:
            cached = (key, [parse_allow_entry(t) for t in self.allow_networks])
            self.__dict__["_parsed"] = cached
        return cached[1]

    def address_problem(self, ip: str, port: int | None = None) -> str | None:
        """Why dialling ``ip`` (on ``port``) is refused, or None when it is allowed."""
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
        if addr.version == 6 and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # the kernel dials the IPv4 address itself
        if self.allow_private:
            return None
        if any(e.allows(addr, port) for e in self._allow_entries()):
            return None
        if addr.version == 4:
            return _special(addr) or (None if addr.is_global else "not globally routable")
        for how, inner in embedded_ipv4(addr):
            why = _special(inner) or (None if inner.is_global else "not globally routable")
            if why:
                return f"{how} address embedding {inner} ({why})"
        if addr in _6TO4 or addr in _TEREDO or addr in _NAT64:
            return None  # decided by the public address it embeds
        why = _special(addr)
        if why:
            return why
        if addr not in _GLOBAL_UNICAST:
            return "reserved"  # every other IPv6 range is unassigned or special
        return None

    def resolve(self, host: str, port: int, deadline: float | None = None) -> list[tuple]:
        """Allowed getaddrinfo entries for host:port; raises BlockedAddressError if none, and
        TimeoutError when the lookup has not finished by ``deadline`` (time.monotonic())."""
        try:
            infos = _getaddrinfo_until(host, port, deadline, self.max_seconds)
        except socket.gaierror as e:
            raise OSError(f"cannot resolve host {host}: {e.strerror or e}") from e
        allowed, refused = [], []
        for info in infos:
            ip = info[4][0]
            why = self.address_problem(ip, port)
            (refused.append(f"{ip} ({why})") if why else allowed.append(info))
        if not allowed:
            raise BlockedAddressError(f"blocked address: host {host} port {port} resolves to {', '.join(refused)}")
        return allowed


def _getaddrinfo_until(host: str, port: int, deadline: float | None, max_seconds: float) -> list[tuple]:
    """getaddrinfo, given up at ``deadline``: the system resolver cannot be interrupted, so a
    name lookup runs in a helper thread and the request's thread leaves on time (the helper
    ends with the resolver's own timeout). Address literals need no lookup and no thread."""
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
        literal = True
    except ValueError:
        literal = False
    if literal or deadline is None:
        return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    if deadline <= time.monotonic():
        raise TimeoutError(f"timed out: no time left to resolve {host} within {max_seconds:g}s (--max-seconds)")
    out: dict = {}

    def lookup():
        try:
            out["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except Exception as e:  # noqa: BLE001 - handed to the waiting thread
            out["error"] = e

    helper = threading.Thread(target=lookup, name=f"resolve {host}", daemon=True)
    helper.start()
    helper.join(max(0.0, deadline - time.monotonic()))
    if helper.is_alive():
        raise TimeoutError(f"timed out: resolving {host} not complete after {max_seconds:g}s (--max-seconds)")
    if "error" in out:
        raise out["error"]
    return out["infos"]


# ---------------------------------------------------------------- URLs as a browser sends them
# WHATWG URL percent-encode sets (path, query); '%' stays so existing escapes are kept.
_PATH_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"#<>?`{}')
_QUERY_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "\"#<>'")


def _ascii_host(host: str) -> str:
    host = urllib.parse.unquote(host)
    if host.isascii():
        return host.lower()
    import idna

    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        try:  # IDNA 2003, which browsers still accept for names (symbols) IDNA 2008 refuses
            return host.encode("idna").decode("ascii")
        except UnicodeError as e:
            raise ValueError(f"unsupported url: invalid host name {host!r} ({e})") from None


def browser_url(url: str) -> str:
    """``url`` as a browser would request it: surrounding spaces and tabs/newlines removed,
    the host name in IDNA (punycode), path and query percent-encoded (UTF-8), no fragment.
    Other schemes are returned unchanged."""
    url = re.sub(r"[\t\n\r]", "", url.strip("\x00\x01\x02\x03\x04\x05\x06\x07\x08\t\n\x0b\x0c\r\x0e\x0f"
                                            "\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f "))
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        return url
    netloc = parts.netloc.replace("\\", "/")
    userinfo, at, hostport = netloc.rpartition("@")
    if hostport.startswith("["):
        host, port = hostport, ""
    else:
        host, colon, port = hostport.partition(":")
        port = colon + port
        host = _ascii_host(host)
    netloc = f"{userinfo}{at}{host}{port}"
    try:
        path = urllib.parse.quote(parts.path.replace("\\", "/"), safe=_PATH_SAFE)
        query = urllib.parse.quote(parts.query, safe=_QUERY_SAFE)
    except UnicodeEncodeError as e:
        raise ValueError(f"unsupported url: cannot encode {url!r} ({e.reason})") from None
    return urllib.parse.urlunsplit((scheme, netloc, path or "/", query, ""))


# ---------------------------------------------------------------- one deadline per request
_request = threading.local()  # .deadline while an opener call runs in this thread


class _DeadlineMixin:
    """Every blocking socket operation waits at most until the request's deadline."""

    deadline: float | None = None
    op_timeout: float | None = None
    max_seconds: float = 0.0

    def _arm(self):
        if self.deadline is None:
            return
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out: request not complete after {self.max_seconds:g}s (--max-seconds)")
        self.settimeout(left if self.op_timeout is None else min(self.op_timeout, left))

    def recv(self, *a, **kw):
        self._arm()
        return super().recv(*a, **kw)

    def recv_into(self, *a, **kw):
        self._arm()
        return super().recv_into(*a, **kw)

    def send(self, *a, **kw):
        self._arm()
        return super().send(*a, **kw)

    def sendall(self, *a, **kw):
        self._arm()
        return super().sendall(*a, **kw)


class _DeadlineSocket(_DeadlineMixin, socket.socket):
    pass


class _DeadlineSSLSocket(_DeadlineMixin, ssl.SSLSocket):
    @classmethod
    def _create(cls, sock, *args, do_handshake_on_connect=True, **kwargs):
        self = super()._create(sock, *args, do_handshake_on_connect=False, **kwargs)
        self.deadline, self.op_timeout, self.max_seconds = sock.deadline, sock.op_timeout, sock.max_seconds
        self.do_handshake_on_connect = do_handshake_on_connect
        if do_handshake_on_connect:
            self.do_handshake()
        return self

    def do_handshake(self, block=False):
        if self.deadline is None:
            return super().do_handshake(block)
        saved = self.gettimeout()
        self.settimeout(0.0)  # drive the handshake ourselves so its round trips share the deadline
        try:
            while True:
                try:
                    return super().do_handshake()
                except (ssl.SSLWantReadError, ssl.SSLWantWriteError) as e:
                    left = self.deadline - time.monotonic()
                    if left <= 0:
                        raise TimeoutError(f"timed out: TLS handshake not complete after {self.max_seconds:g}s "
                                           "(--max-seconds)") from None
                    wait = left if self.op_timeout is None else min(self.op_timeout, left)
                    r, w = ([self], []) if isinstance(e, ssl.SSLWantReadError) else ([], [self])
                    if not any(select.select(r, w, [], wait)[:2]):
                        raise TimeoutError("timed out: TLS handshake") from None
        finally:
            self.settimeout(saved)


def _checked_connection(policy: FetchPolicy):
    """A replacement for socket.create_connection that dials only checked addresses, with
    sockets bound to the current request's deadline."""

    def create_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None, **_):
        host, port = address
        last = None
        for family, socktype, proto, _, sockaddr in policy.resolve(host, port, getattr(_request, "deadline", None)):
            sock = _DeadlineSocket(family, socktype, proto)
            sock.deadline = getattr(_request, "deadline", None)
            sock.max_seconds = policy.max_seconds
            sock.op_timeout = None if timeout is socket._GLOBAL_DEFAULT_TIMEOUT else timeout
            try:
                if source_address:
                    sock.bind(source_address)
                sock._arm()
                if sock.deadline is None and sock.op_timeout is not None:
                    sock.settimeout(sock.op_timeout)
                sock.connect(sockaddr)
                return sock
            except OSError as e:
                last = e
                sock.close()
        raise last or OSError(f"cannot connect to {host}:{port}")

    return create_connection


class _SafeHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, policy: FetchPolicy):
        super().__init__()
        self.policy = policy

    def http_open(self, req):
        policy = self.policy

        class Conn(http.client.HTTPConnection):
            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                self._create_connection = _checked_connection(policy)

        return self.do_open(Conn, req)


class _SafeHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, policy: FetchPolicy):
        context = ssl.create_default_context()
        context.sslsocket_class = _DeadlineSSLSocket
        super().__init__(context=context)
        self.policy = policy

    def https_open(self, req):
        policy = self.policy

        class Conn(http.client.HTTPSConnection):
            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                self._create_connection = _checked_connection(policy)

        return self.do_open(Conn, req, context=self._context)


# ---------------------------------------------------------------- X-Robots-Tag
# Directives that take a value after a colon (the value may hold spaces and colons: dates).
_VALUE_DIRECTIVES = frozenset({"unavailable_after", "max-snippet", "max-image-preview", "max-video-preview"})


def robots_optout(headers, tokens: set[str], directives: set[str]) -> str | None:
    """The X-Robots-Tag value that forbids this use, or None.

    Grammar (Google's and Bing's): each header is a list of directives separated by commas
    (spaces and semicolons are accepted too), case-insensitive; ``NAME:`` before directives
    scopes the ones after it, until the next ``NAME:`` in the same header, to that user agent
    (``*`` is every agent). Directives apply to us when unscoped, scoped to ``*``, or scoped
    to one of ``tokens``. A directive that takes a value (``unavailable_after: DATE``,
    ``max-image-preview: large``) is not a user agent.
    """
    tokens = {t.lower() for t in tokens}
    for value in headers.get_all("X-Robots-Tag", []) or []:
        scope = None
        for item in value.split(","):
            words = re.sub(r"\s*:\s*", ": ", item).replace(";", " ").split()
            for word in words:
                if word.endswith(":"):
                    name = word[:-1].lower()
                    if name in _VALUE_DIRECTIVES:
                        break  # the rest of this item is that directive's value
                    scope = name
                    continue
                if (scope is None or scope == "*" or scope in tokens) and word.lower() in directives:
                    return value
    return None


# ---------------------------------------------------------------- the body
def _decoders():
    """Content codings we can decode: name -> function(bytes, limit) -> bytes."""
    def inflate(data, limit, wbits):
        out, total = [], 0
        while data:
            d = zlib.decompressobj(wbits)
            chunk = d.decompress(data, limit + 1 - total)
            out.append(chunk)
            total += len(chunk)
            if total > limit:
                raise BodyLimitError(f"too large: decoded body over {limit} bytes")
            if d.unconsumed_tail:
                raise BodyLimitError(f"too large: decoded body over {limit} bytes")
            if not d.eof:
                raise zlib.error("compressed stream is incomplete")
            # gzip may hold several members; anything else after the stream is ignored, as browsers do
            data = d.unused_data if wbits == 31 and d.unused_data[:2] == b"\x1f\x8b" else b""
        return b"".join(out)

    def deflate(data, limit):
        try:
            return inflate(data, limit, 15)  # RFC 9110 deflate: zlib-wrapped
        except zlib.error:
            return inflate(data, limit, -15)  # what many servers send: raw deflate

    table = {"gzip": lambda d, n: inflate(d, n, 31), "x-gzip": lambda d, n: inflate(d, n, 31), "deflate": deflate}
    for module in ("brotli", "brotlicffi"):
        try:
            br = __import__(module)
        except ImportError:
            continue

        def brotli_decode(data, limit, br=br):
            d = br.Decompressor()
            out = d.process(data)  # brotli has no output cap; the input cap bounds it in practice
            if len(out) > limit:
                raise BodyLimitError(f"too large: decoded body over {limit} bytes")
            return out

        table["br"] = brotli_decode
        break
    try:
        import zstandard

        def zstd_decode(data, limit):
            out = zstandard.ZstdDecompressor().decompressobj().decompress(data)
            if len(out) > limit:
                raise BodyLimitError(f"too large: decoded body over {limit} bytes")
            return out

        table["zstd"] = zstd_decode
    except ImportError:
        pass
    return table


CONTENT_DECODERS = _decoders()
ACCEPT_ENCODING = ", ".join(k for k in CONTENT_DECODERS if k != "x-gzip")


def decode_content(body: bytes, encoding_header: str | None, limit: int) -> bytes:
    """``body`` with its Content-Encoding undone (codings applied in order are undone in reverse)."""
    codings = [c.strip().lower() for c in (encoding_header or "").split(",") if c.strip()]
    for coding in reversed(codings):
        if coding == "identity":
            continue
        decode = CONTENT_DECODERS.get(coding)
        if decode is None:
            raise BodyLimitError(f"unsupported content encoding {coding!r} (accepted: {ACCEPT_ENCODING})")
        try:
            body = decode(body, limit)
        except BodyLimitError:
            raise
        except Exception as e:  # noqa: BLE001 - each decoder has its own error types
            raise BodyLimitError(f"corrupt content encoding {coding}: {e}") from e
    return body


class _LimitedBody:
    """Wraps the final response: reads the body under the limits and decodes it."""

    def __init__(self, response, policy: FetchPolicy):
        self._r = response
        self._policy = policy
        self.headers = response.headers
        self.status = getattr(response, "status", None)
        self.url = response.geturl()

    def read(self, amt=None):
        limit = self._policy.max_bytes
        declared = self.headers.get("Content-Length")
        if declared and declared.strip().isdigit() and int(declared) > limit:
            raise BodyLimitError(f"too large: Content-Length {int(declared)} over {limit} bytes")
        deadline = time.monotonic() + self._policy.max_seconds  # file:// has no socket deadline
        chunks, total = [], 0
        while True:
            chunk = self._r.read(65536)
            if not chunk:
                break
            total += len(chunk)
            if total > limit:
                raise BodyLimitError(f"too large: body over {limit} bytes")
            if time.monotonic() > deadline:
                raise BodyLimitError(f"timed out: body not complete after {self._policy.max_seconds:g}s")
            chunks.append(chunk)
        missing = getattr(self._r, "length", None)
        if missing:  # http.client ends a short body silently when reading in pieces
            raise ShortBodyError(f"connection closed early: body shorter than its Content-Length "
                                 f"(got {total} bytes, {missing} missing)")
        body = b"".join(chunks)
        return decode_content(body, self.headers.get("Content-Encoding"), limit)

    def geturl(self):
        return self.url

    def info(self):
        return self.headers

    def close(self):
        self._r.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class _PolicyProcessor(urllib.request.BaseHandler):
    # After HTTPErrorProcessor (1000): redirects are already followed, this is the final response.
    handler_order = 1100

    def __init__(self, policy: FetchPolicy):
        self.policy = policy
        self.ua = user_agent(policy.user_agent_token)
        self.tokens = {policy.user_agent_token.lower(), "img2dataset"}
        self.directives = {d.strip().lower() for d in policy.disallowed_directives}

    def http_request(self, req):
        req.headers.pop("User-agent", None)
        req.add_unredirected_header("User-agent", self.ua)
        req.add_unredirected_header("Accept-encoding", ACCEPT_ENCODING)
        return req

    https_request = http_request

    def http_response(self, req, response):
        if self.directives:
            hit = robots_optout(response.headers, self.tokens, self.directives)
            if hit:
                response.close()
                raise RobotsOptOutError(f"robots opt-out: X-Robots-Tag: {hit}")
        return _LimitedBody(response, self.policy)

    https_response = http_response


class _PolicyOpener(urllib.request.OpenerDirector):
    """Starts the request's deadline (redirects are nested calls and share it) and sends
    every URL, the first and each redirect target, the way a browser would write it."""

    def __init__(self, policy: FetchPolicy):
        super().__init__()
        self.policy = policy

    def open(self, fullurl, data=None, timeout=socket._GLOBAL_DEFAULT_TIMEOUT):
        req = fullurl if isinstance(fullurl, urllib.request.Request) else urllib.request.Request(fullurl, data)
        try:
            url = browser_url(req.full_url)
        except ValueError as e:
            raise urllib.error.URLError(str(e)) from None
        if url != req.full_url:
            req.full_url = url
        outer = getattr(_request, "deadline", None) is None
        if outer:
            _request.deadline = time.monotonic() + self.policy.max_seconds
        try:
            return super().open(req, data, timeout)
        finally:
            if outer:
                _request.deadline = None


def build_opener(policy: FetchPolicy) -> urllib.request.OpenerDirector:
    """An opener with only the handlers a safe image crawler needs."""
    opener = _PolicyOpener(policy)
    handlers = [urllib.request.UnknownHandler(), _SafeHTTPHandler(policy), _SafeHTTPSHandler(policy),
                urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPRedirectHandler(),
                urllib.request.HTTPErrorProcessor(), _PolicyProcessor(policy)]
    if policy.allow_file_urls:
        handlers.append(urllib.request.FileHandler())
    for h in handlers:
        opener.add_handler(h)
    return opener
