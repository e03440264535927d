"""The downloads table's ``error_class``: img2dataset's error texts sorted into a few classes.
Apart from curate.download.fetch so that reading the table needs no img2dataset import."""

from __future__ import annotations

import re

# (pattern over the downloader's error text, error class), first match wins
_ERROR_CLASSES = [
    (r"blocked store URL", "blocked_store_url"),
    (r"blocked address", "blocked_address"),
    (r"blocked file URL", "blocked_file_url"),
    (r"robots opt-out|disallowed by X-Robots-Tag", "robots_optout"),
    (r"HTTP Error 404", "http_404"),
    (r"HTTP Error \d+", "http_error"),
    (r"unsupported image format|unsupported content encoding", "unsupported_format"),
    (r"timed out|timeout", "timeout"),
    (r"aspect ratio too large", "bad_aspect_ratio"),
    (r"too large", "too_large"),
    (r"image too small", "too_small"),
    (r"not an image", "not_an_image"),
    (r"connection closed early|IncompleteRead|RemoteDisconnected", "connection_error"),
    (r"decode error|decoding error|truncated|cannot identify|corrupt content encoding", "decode_error"),
    ((r"unknown url type|no host given|unsupported url|InvalidURL|nonnumeric port|can't contain control|"
      r"not on local host"), "unsupported_url"),
    (r"hash mismatch", "hash_mismatch"),
    (r"no such object|No such file or directory", "missing_object"),  # a store URL's or file:// URL's
    (r"urlopen error|Connection|Errno|cannot resolve|cannot connect", "connection_error"),
]

# every class a failed row can carry ("other": no pattern matched; "not_downloaded": its shard
# never completed, curate.download.results), in the order of first match
ERROR_CLASSES = [*dict.fromkeys(cls for _, cls in _ERROR_CLASSES), "other", "not_downloaded"]


# text a server chose, quoted in an error: the start of a body that is not an image, and an
# HTTP status line's reason phrase; a page reading "timed out" or "blocked address" must not
# decide the class
_SERVER_TEXT = re.compile(r"\(content starts with b?(['\"]).*?\1\)|(?<=HTTP Error \d{3}):.*", re.DOTALL)


def classify_error(message: str | None) -> str | None:
    """The downloads table's ``error_class`` for one of img2dataset's error texts (what the
    server wrote in it left out)."""
    if message is None:
        return None
    ours = _SERVER_TEXT.sub("", message)
    for pattern, cls in _ERROR_CLASSES:
        if re.search(pattern, ours, re.IGNORECASE):
            return cls
    return "other"


# HTTP statuses a later attempt can change: request timeout, too early, too many requests, and the
# server-side errors that say "try again" (RFC 9110); other 4xx and 501/505 answer the same again
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}
# classes another attempt within the run cannot change: the URL, the policy or the body decides
_PERMANENT_CLASSES = set(ERROR_CLASSES) - {"timeout", "connection_error", "http_error", "other"}


def is_transient(message: str | None) -> bool:
    """Whether one more request for the same URL may succeed where this error came: a timeout, a
    connection error, an HTTP 408/425/429/500/502/503/504, or an error no class names. A 404, another
    4xx, a refusal by the safety policy or an opt-out, and a body that is not a usable image are not."""
    cls = classify_error(message)
    if cls is None or cls in _PERMANENT_CLASSES:
        return False
    if cls == "http_error":
        m = re.search(r"HTTP Error (\d{3})", message)
        return m is not None and int(m.group(1)) in _TRANSIENT_STATUS
    return True
