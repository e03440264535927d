"""A urllib opener that a crawler can run inside a cloud network.

- Every connection, the first and each one after a redirect, resolves the host itself and
  connects only to an address the policy allows (the checked address is the one dialled,
  so DNS rebinding cannot slip a second answer in). By default loopback, private, link-local,
  shared (CGNAT), multicast, reserved and cloud-metadata addresses are refused.
- Only http and https (file:// only when allowed): no ftp:, data:, or local files.
- No proxies from the environment (a proxy would hide the real destination from the check).
- An honest User-Agent replaces img2dataset's browser string.
- ``X-Robots-Tag`` opt-outs (``noai``, ``noimageai`` by default) are refused before the body is read.
- The body has a total time limit and a size limit (a slow or endless response cannot hold a thread).
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
import urllib.request
from dataclasses import dataclass, field

import curate

PROJECT_URL = "https://github.com/curate-project/curate"

# Cloud metadata endpoints that are not already link-local or private.
METADATA_ADDRESSES = frozenset({"100.100.100.200", "fd00:ec2::254", "168.63.129.16"})


class BlockedAddressError(OSError):
    """The host resolves only to addresses the policy refuses."""


class RobotsOptOutError(OSError):
    """The response carries an X-Robots-Tag directive that forbids this use."""


class BodyLimitError(OSError):
    """The response body took too long or was too big."""


def user_agent(token: str = "curate") -> str:
    try:
        from importlib.metadata import version

        i2d = f" img2dataset/{version('img2dataset')}"
    except Exception:  # noqa: BLE001 - version is decoration only
        i2d = ""
    return f"{token}/{curate.__version__} (+{PROJECT_URL}; image-text dataset builder; honours X-Robots-Tag noai, noimageai){i2d}"


@dataclass
class FetchPolicy:
    """What the downloader may connect to and how much it may read. Picklable (sent to workers)."""

    allow_private: bool = False  # allow every address (trusted networks only)
    allow_networks: list[str] = field(default_factory=list)  # CIDRs allowed despite the default block
    allow_file_urls: bool = False
    user_agent_token: str = "curate"
    disallowed_directives: list[str] = field(default_factory=lambda: ["noai", "noimageai"])
    max_seconds: float = 30.0  # total time to read one body
    max_bytes: int = 50 * 1024 * 1024

    def address_problem(self, ip: str) -> str | None:
        """Why ``ip`` is refused, or None when it is allowed."""
        addr = ipaddress.ip_address(ip.split("%", 1)[0])
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped
        if self.allow_private:
            return None
        for net in self.allow_networks:
            if addr in ipaddress.ip_network(net, strict=False):
                return None
        if str(addr) in METADATA_ADDRESSES:
            return "cloud metadata"
        for attr, what in (("is_loopback", "loopback"), ("is_link_local", "link-local"),
                           ("is_multicast", "multicast"), ("is_unspecified", "unspecified"),
                           ("is_reserved", "reserved"), ("is_private", "private")):
            if getattr(addr, attr):
                return what
        if not addr.is_global:
            return "not globally routable"
        return None

    def resolve(self, host: str, port: int) -> list[tuple]:
        """Allowed getaddrinfo entries for host:port; raises BlockedAddressError if none."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as e:
            raise OSError(f"cannot resolve host {host}: {e.strerror or e}") from e
        allowed, refused = [], []
        for info in infos:
            ip = info[4][0]
            why = self.address_problem(ip)
            (refused.append(f"{ip} ({why})") if why else allowed.append(info))
        if not allowed:
            raise BlockedAddressError(f"blocked address: host {host} resolves to {', '.join(refused)}")
        return allowed


def _checked_connection(policy: FetchPolicy):
    """A replacement for socket.create_connection that dials only checked addresses."""

    def create_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None, **_):
        host, port = address
        last = None
        for family, socktype, proto, _, sockaddr in policy.resolve(host, port):
            sock = socket.socket(family, socktype, proto)
            try:
                if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                    sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
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
        super().__init__(context=ssl.create_default_context())
        self.policy = policy

    def https_open(self, req):
        policy = self.policy

        class Conn(http.client.HTTPSConnection):
            def __init__(self, *a, **kw):
                super().__init__(*a, **kw)
                self._create_connection = _checked_connection(policy)

        return self.do_open(Conn, req, context=self._context)


def robots_optout(headers, tokens: set[str], directives: set[str]) -> str | None:
    """The X-Robots-Tag value that forbids this use, or None.

    A value applies when it names no user agent (``noai``) or names one of ``tokens``
    (``curate: noimageai``); directives are comma-separated, case-insensitive.
    """
    for value in headers.get_all("X-Robots-Tag", []) or []:
        head, sep, rest = value.partition(":")
        ua, body = (head.strip().lower(), rest) if sep and "," not in head and " " not in head.strip() else (None, value)
        if ua is not None and ua not in tokens:
            continue
        if any(d.strip().lower() in directives for d in body.split(",")):
            return value
    return None


class _LimitedBody:
    """Wraps the final response: checks X-Robots-Tag, then reads the body under the limits."""

    def __init__(self, response, policy: FetchPolicy):
        self._r = response
        self._policy = policy
        self.headers = response.headers
        self.status = getattr(response, "status", None)
        self.url = response.geturl()

    def read(self, amt=None):
        deadline = time.monotonic() + self._policy.max_seconds
        chunks, total = [], 0
        while True:
            chunk = self._r.read(65536)
            if not chunk:
                break
            total += len(chunk)
            if total > self._policy.max_bytes:
                raise BodyLimitError(f"too large: body over {self._policy.max_bytes} bytes")
            if time.monotonic() > deadline:
                raise BodyLimitError(f"timed out: body not complete after {self._policy.max_seconds:g}s")
            chunks.append(chunk)
        return b"".join(chunks)

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


def build_opener(policy: FetchPolicy) -> urllib.request.OpenerDirector:
    """An opener with only the handlers a safe image crawler needs."""
    opener = urllib.request.OpenerDirector()
    handlers = [urllib.request.UnknownHandler(), _SafeHTTPHandler(policy), _SafeHTTPSHandler(policy),
                urllib.request.HTTPDefaultErrorHandler(), urllib.request.HTTPRedirectHandler(),
                urllib.request.HTTPErrorProcessor(), _PolicyProcessor(policy)]
    if policy.allow_file_urls:
        handlers.append(urllib.request.FileHandler())
    for h in handlers:
        opener.add_handler(h)
    return opener
