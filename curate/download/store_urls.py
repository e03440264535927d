"""Image URLs on object storage (``s3://bucket/imgs/0.jpg``, ``gs://``, ``hdfs://``, any scheme
curate.storage reads), fetched through curate.storage with this run's storage settings.

A pool's URLs come from the web as often as from its owner, and a store URL is read with the
run's own credentials: read, it would copy a private object into the dataset. So a store URL is
read only under a folder the user allowed (``--allow-store-prefix s3://bucket/imgs/``); any
other is refused (``blocked_store_url``), and one with a ``.`` or ``..`` segment always is. An
object is read whole by ``storage.read_object`` (on S3 one request; elsewhere two, the size then
the object), refused before its body is read when it is over ``--max-bytes``. The key is the
URL's text as written (no percent-decoding: store keys are literal, as the AWS and gcloud tools
take them).
"""

from __future__ import annotations

import email.message
import io
import mimetypes
import time
import urllib.request
import urllib.response
from urllib.parse import urlsplit

from curate.errors import CurateError

# schemes read as store URLs whatever the allowed prefixes (refused when none allows them); a
# prefix of another scheme fsspec reads (az://, abfs://, ...) adds its scheme
STORE_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "hdfs", "viewfs"})
_ALIASES = {"s3a": "s3", "gcs": "gs"}  # the same store under two names (curate.storage.resolve)


class StoreURLError(OSError):
    """A store URL refused, missing, too large or unreadable; the message names the class."""


def _normal(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    return f"{_ALIASES.get(scheme, scheme)}{sep}{rest}"


def store_prefix(entry: str) -> str:
    """An ``--allow-store-prefix`` entry as the URL prefix it allows: a folder or a bucket,
    always ending in ``/`` (``s3://b/imgs`` does not allow ``s3://b/imgs2/``)."""
    from curate import storage

    u = urlsplit(entry)
    if not storage.is_uri(entry) or u.scheme.lower() in ("http", "https"):
        raise CurateError(f"--allow-store-prefix {entry!r}: not an object-store folder "
                          "(s3://bucket/folder/, gs://bucket/, hdfs://namenode/path/)")
    if not u.netloc:
        raise CurateError(f"--allow-store-prefix {entry!r}: name a bucket or host (s3://bucket/ at least)")
    if any(p in (".", "..") for p in u.path.split("/")):
        raise CurateError(f"--allow-store-prefix {entry!r}: no '.' or '..' segments")
    return _normal(entry).rstrip("/") + "/"


def is_store_url(url: str, prefixes: list[str]) -> bool:
    """Whether ``url`` is read as a store URL (refused or not) rather than left to urllib."""
    scheme = url.partition("://")[0].lower() if "://" in url else ""
    return scheme in STORE_SCHEMES or any(_normal(url).startswith(p.partition("://")[0] + "://") for p in prefixes)


def store_url_problem(url: str, prefixes: list[str]) -> str | None:
    """Why a store URL is refused, or None when it may be read."""
    normal = _normal(url)
    if any(p in (".", "..") for p in urlsplit(normal).path.split("/")):
        return f"{url} has a '.' or '..' segment"
    if not any(normal.startswith(p) for p in prefixes):
        return f"{url} is not under an --allow-store-prefix folder"
    return None


class StoreHandler(urllib.request.BaseHandler):
    """urllib's handler for store URLs: answers them from curate.storage as a 200 response
    whose body is the whole object (img2dataset reads the body, then the resizer decodes it);
    every other URL is left to the other handlers."""

    def __init__(self, prefixes: list[str], max_bytes: int, max_seconds: float):
        self.prefixes = [store_prefix(p) for p in prefixes]
        self.max_bytes = max_bytes
        self.max_seconds = max_seconds

    def default_open(self, req):
        url = req.full_url
        if not is_store_url(url, self.prefixes):
            return None
        problem = store_url_problem(url, self.prefixes)
        if problem:
            raise StoreURLError(f"blocked store URL: {problem}")
        data = self._read(url)
        headers = email.message.Message()
        headers["Content-Length"] = str(len(data))
        headers["Content-Type"] = mimetypes.guess_type(urlsplit(url).path)[0] or "application/octet-stream"
        return urllib.response.addinfourl(io.BytesIO(data), headers, url, code=200)

    def _read(self, url: str) -> bytes:
        from curate import storage

        started = time.monotonic()
        try:
            data = storage.read_object(url, self.max_bytes)
        except FileNotFoundError:
            raise StoreURLError(f"no such object: {url}") from None
        except IsADirectoryError:
            raise StoreURLError(f"no such object: {url} is a folder") from None
        except storage.ObjectTooLarge as e:
            raise StoreURLError(f"too large: object of {e.size} bytes over {e.limit} bytes") from None
        except (OSError, CurateError) as e:
            raise StoreURLError(f"cannot connect to storage for {url}: {e}") from None
        if time.monotonic() - started > self.max_seconds:
            raise StoreURLError(f"timed out: store read not complete after {self.max_seconds:g}s (--max-seconds)")
        return data
