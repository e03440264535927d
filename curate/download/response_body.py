"""A response body read under the request's size and time limits, with its content encoding
(gzip, deflate, br and zstd when their decoders are installed) decoded under the same limit;
a body shorter than its Content-Length is an error, not a truncated image."""

from __future__ import annotations

import time
import zlib

from curate.download.address_policy import FetchPolicy


class BodyLimitError(OSError):
    """The response body took too long, was too big or could not be decoded."""


class ShortBodyError(OSError):
    """The connection closed before the body its Content-Length announced was complete."""


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
    brotli_decode = _bounded_brotli()
    if brotli_decode is not None:
        table["br"] = brotli_decode
    zstd_decode = _bounded_zstd()
    if zstd_decode is not None:
        table["zstd"] = zstd_decode
    return table


def _bounded_brotli():
    """A brotli decoder whose output stops near ``limit`` (brotli >= 1.2's ``output_buffer_limit``),
    or None: an older brotli or brotlicffi decodes a whole body at once, so a small body could
    expand to gigabytes before its size is seen; without a bound br is neither accepted nor decoded."""
    try:
        import brotli
    except ImportError:
        return None
    try:
        brotli.Decompressor().process(brotli.compress(b"x"), output_buffer_limit=16)
    except (TypeError, AttributeError):
        return None

    def decode(data, limit):
        d = brotli.Decompressor()
        out = d.process(data, output_buffer_limit=limit + 1)  # grows a chunk past it at most
        if len(out) > limit:
            raise BodyLimitError(f"too large: decoded body over {limit} bytes")
        if not d.is_finished():
            raise ValueError("compressed stream is incomplete")
        return out

    return decode


ZSTD_STEP = 1024  # compressed bytes fed at a time: a zstd block needs >= 4 bytes for 128 KB, so <= 32 MB past the limit


def _bounded_zstd():
    """A zstd decoder fed ``ZSTD_STEP`` bytes at a time, stopping once the output passes
    ``limit``; several frames are one body (RFC 8878), bytes after the last are ignored."""
    try:
        import zstandard
    except ImportError:
        return None
    magic = b"\x28\xb5\x2f\xfd"

    def decode(data, limit):
        out, total, rest = [], 0, memoryview(data)
        while True:
            d = zstandard.ZstdDecompressor().decompressobj()
            pos = 0
            while pos < len(rest) and not d.eof:
                chunk = d.decompress(rest[pos:pos + ZSTD_STEP])
                pos += ZSTD_STEP
                total += len(chunk)
                if total > limit:
                    raise BodyLimitError(f"too large: decoded body over {limit} bytes")
                out.append(chunk)
            if not d.eof:
                raise ValueError("compressed stream is incomplete")
            rest = memoryview(d.unused_data + bytes(rest[pos:]))
            if bytes(rest[:4]) != magic:
                return b"".join(out)

    return decode


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


class LimitedBody:
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
