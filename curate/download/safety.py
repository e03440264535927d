"""A urllib opener that a crawler can run inside a cloud network.

- Every connection, the first and each one after a redirect, resolves the host itself and
  connects only to an address (and port) the policy allows (the checked address is the one
  dialled, so DNS rebinding cannot slip a second answer in). By default loopback, private,
  link-local, shared (CGNAT), multicast, reserved, documentation, site-local and
  cloud-metadata addresses are refused, and IPv6 forms that embed an IPv4 address (mapped,
  compatible, 6to4, Teredo, NAT64) are judged by the address they embed.
- Only http and https (file:// only when allowed, store URLs under allowed folders:
  curate.download.store_urls): no ftp:, data:, or local files.
- No proxies from the environment (a proxy would hide the real destination from the check).
- URLs are percent-encoded as a browser does (spaces, non-ASCII, IDNA host names).
- An honest User-Agent replaces img2dataset's browser string.
- ``X-Robots-Tag`` opt-outs (``noai``, ``noimageai`` by default) are refused before the body is read.
- One wall-clock deadline covers the whole request: connecting, TLS, the status line and
  headers, every redirect, the body. Every socket operation waits at most until then, so a
  server that drips bytes cannot hold a thread. The body also has a size limit, and a body
  shorter than its Content-Length is an error, not a truncated image.
- Content encodings (gzip, deflate, br and zstd when their decoders are installed, with an output bound) are
  decoded, under the same size limit.

The address policy is ``curate.download.address_policy``, the body reader
``curate.download.response_body``; their public names are re-exported here.
"""

from __future__ import annotations

import http.client
import os
import re
import select
import socket
import ssl
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

import curate
from curate.download.address_policy import (AllowEntry, BlockedAddressError, FetchPolicy,  # noqa: F401 - re-exported
                                            embedded_ipv4, parse_allow_entry)
from curate.download.response_body import (ACCEPT_ENCODING, CONTENT_DECODERS, BodyLimitError,  # noqa: F401 - re-exported
                                           ShortBodyError, LimitedBody, decode_content)
from curate.download.store_urls import StoreHandler


PROJECT_URL = "https://github.com/curate-project/curate"
# Pillow's own decompression-bomb threshold (about 89.5 megapixels): the default image-area limit.
DEFAULT_MAX_IMAGE_AREA = 89_478_485


class RobotsOptOutError(OSError):
    """The response carries an X-Robots-Tag directive that forbids this use."""


def user_agent(token: str = "curate") -> str:
    try:
        from importlib.metadata import version

        i2d = f" img2dataset/{version('img2dataset')}"
    except Exception:  # noqa: BLE001 - version is decoration only
        i2d = ""
    return f"{token}/{curate.__version__} (+{PROJECT_URL}; image-text dataset builder; honours X-Robots-Tag noai, noimageai){i2d}"


# ---------------------------------------------------------------- URLs as a browser sends them
# WHATWG URL percent-encode sets (path, query); '%' stays so existing escapes are kept.
_PATH_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in '"#<>?`{}')
_QUERY_SAFE = "".join(chr(c) for c in range(0x21, 0x7F) if chr(c) not in "\"#<>'")


def _ascii_host(host: str) -> str:
    host = urllib.parse.unquote(host)
    if host.isascii():
        _check_labels(host)
        return host.lower()
    import idna

    try:
        return idna.encode(host, uts46=True).decode("ascii")
    except idna.IDNAError:
        try:  # IDNA 2003, which browsers still accept for names (symbols) IDNA 2008 refuses
            return host.encode("idna").decode("ascii")
        except UnicodeError as e:
            raise ValueError(f"unsupported url: invalid host name {host!r} ({e})") from None


def _check_labels(host: str) -> None:
    """A DNS name no resolver takes (no host, an empty label, a label over 63 or a name over 253
    characters) is an unsupported url, never a lookup that fails as a transient error."""
    labels = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not host or len(host) > 253 or any(not 1 <= len(label) <= 63 for label in labels):
        shown = host if len(host) <= 80 else host[:77] + "..."
        raise ValueError(f"unsupported url: invalid host name {shown!r}" if host else "unsupported url: no host")


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
    head = re.match(r"[^?#]*", url).group(0)
    if "\\" in head:  # a browser reads a backslash before the query as a slash (host, port, path)
        parts = urllib.parse.urlsplit(head.replace("\\", "/") + url[len(head):])
    netloc = parts.netloc.replace("\\", "/")
    _userinfo, at, hostport = netloc.rpartition("@")
    if at:  # browsers refuse subresources with embedded credentials (and they would be sent on)
        raise ValueError("unsupported url: credentials in the url (user:password@)")
    if hostport.startswith("["):
        host, close, port = hostport.partition("]")
        host += close
    else:
        host, colon, port = hostport.partition(":")
        port = colon + port
        host = _ascii_host(host)
    if port and not (re.fullmatch(r":\d{1,5}", port) and 1 <= int(port[1:]) <= 65535):
        # the resolver keeps a port's low 16 bits: :83617 would dial 18081
        raise ValueError(f"unsupported url: bad port {port[1:]!r}")
    netloc = f"{host}{port}"
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

    def _arm(self) -> bool:
        """Set the wait for the next operation; True when it is the per-operation ``--timeout``
        (rather than what is left of the request's ``--max-seconds``) that bounds it."""
        if self.deadline is None:
            return self.op_timeout is not None
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError(f"timed out: request not complete after {self.max_seconds:g}s (--max-seconds)")
        self.settimeout(left if self.op_timeout is None else min(self.op_timeout, left))
        return self.op_timeout is not None and self.op_timeout < left

    def _io(self, op, *a, **kw):
        """A socket operation whose timeout names the limit that ran out, not the socket's bare
        "timed out"."""
        per_op = self._arm()
        try:
            return op(*a, **kw)
        except TimeoutError:
            if per_op:
                raise TimeoutError(f"timed out: no data for {self.op_timeout:g}s (--timeout)") from None
            raise TimeoutError(f"timed out: request not complete after {self.max_seconds:g}s (--max-seconds)") from None

    def recv(self, *a, **kw):
        return self._io(super().recv, *a, **kw)

    def recv_into(self, *a, **kw):
        return self._io(super().recv_into, *a, **kw)

    def send(self, *a, **kw):
        return self._io(super().send, *a, **kw)

    def sendall(self, *a, **kw):
        return self._io(super().sendall, *a, **kw)


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
                if sock.deadline is None and sock.op_timeout is not None:
                    sock.settimeout(sock.op_timeout)
                sock._io(sock.connect, sockaddr)
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
        return LimitedBody(response, self.policy)

    https_response = http_response

    def file_response(self, req, response):  # a file:// read is held to the same size and time limits
        return LimitedBody(response, self.policy)


class _SafeFileHandler(urllib.request.FileHandler):
    """file:// URLs (``--allow-file-urls``) of regular files only: a FIFO or a device would
    block in ``open`` or never end, before any limit could apply."""

    def open_local_file(self, req):
        import stat

        path = urllib.request.url2pathname(req.selector)
        try:
            mode = os.stat(path).st_mode
        except OSError as e:
            raise urllib.error.URLError(f"no such object: {path} ({e.strerror})") from None
        if not stat.S_ISREG(mode):
            raise urllib.error.URLError(f"no such object: {path} is not a regular file")
        return super().open_local_file(req)


class _RefusedFileHandler(urllib.request.BaseHandler):
    """file:// URLs without ``--allow-file-urls``: refused as such (``blocked_file_url``), so the
    summary can name the flag, rather than urllib's "unknown url type"."""

    def file_open(self, req):
        raise urllib.error.URLError(f"blocked file URL: {req.full_url} is read only with --allow-file-urls")


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
    handlers.append(_SafeFileHandler() if policy.allow_file_urls else _RefusedFileHandler())
    handlers.append(StoreHandler(policy.allow_store_prefixes, policy.max_bytes, policy.max_seconds))
    for h in handlers:
        opener.add_handler(h)
    return opener
