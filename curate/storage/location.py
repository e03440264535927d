"""A user path or URI -> ``Location`` (filesystem, path inside it): the one place that does it.

A user path is a plain path, ``file://``, ``s3://``, ``gs://`` (``gcs://``), ``hdfs://`` or any
other scheme fsspec knows. ``pyarrow.fs`` serves the schemes it has; fsspec the rest (wrapped
in ``pyarrow.fs.PyFileSystem`` so callers see one interface).
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from curate.storage.filesystems import cached_gcs_filesystem, cached_s3_filesystem
from curate.storage.settings import AWS_ENV, GCS_CREDENTIALS_ENV, GCS_ENV, StorageError, default_options


def is_uri(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` other than ``file://`` (a path a local file API cannot open); the
    scheme in any case (``S3://`` is ``s3://``, RFC 3986)."""
    if isinstance(path, os.PathLike):
        return False
    scheme = urlsplit(str(path)).scheme  # lowercased
    return len(scheme) > 1 and str(path)[:len(scheme) + 3].lower() == scheme + "://" and scheme != "file"


# schemes whose one-slash spelling (``s3:/b/x``, ``s3:b/x``) is a mistake, not a local folder
_STORE_SCHEMES = ("s3", "s3a", "gs", "gcs", "hdfs", "viewfs", "file")
_ONE_SLASH = re.compile(rf"^({'|'.join(_STORE_SCHEMES)}):(?!//)", re.IGNORECASE)


def _check_uri(text: str) -> None:
    """A URI whose key a parser would cut or a store refuse, refused in one line: ``#`` and ``?``
    (read as a fragment and a query: ``s3://b/run#1`` wrote to ``b/run``, over another
    dataset), and an empty folder name (``s3://b//ds``)."""
    for c, what in (("#", "a fragment"), ("?", "a query")):
        if c in text:
            raise StorageError(f"{text}: {c!r} cannot be part of a URI's path here (it would be read as {what} and "
                               "the rest dropped, writing somewhere else); rename that folder or object")
    rest = text.split("://", 1)[1].rstrip("/")
    if "//" in rest:
        raise StorageError(f"{text}: an empty folder name ('//') in the path; write it with single slashes")


@dataclass(frozen=True)
class Location:
    """A place in a filesystem: ``fs`` and the ``path`` inside it (``bucket/key`` for S3)."""

    fs: pafs.FileSystem
    path: str
    scheme: str  # "" for a local path
    prefix: str = ""  # what goes before ``path`` in the URI: "s3://", "hdfs://namenode:8020"

    @property
    def local(self) -> bool:
        return self.scheme == ""

    @property
    def uri(self) -> str:
        return self.path if self.local else (self.prefix or f"{self.scheme}://") + self.path

    def __str__(self) -> str:
        return self.uri

    def join(self, *parts: str) -> "Location":
        path = "/".join([self.path.rstrip("/"), *(p.strip("/") for p in parts if p)])
        return Location(self.fs, path, self.scheme, self.prefix)

    @property
    def name(self) -> str:
        return self.path.rstrip("/").rsplit("/", 1)[-1]

    @property
    def parent(self) -> "Location":
        return Location(self.fs, self.path.rstrip("/").rsplit("/", 1)[0], self.scheme, self.prefix)

    @property
    def renames(self) -> bool:
        """Whether a write-aside + rename commit is atomic here (POSIX, HDFS); not on object stores."""
        return self.local or self.scheme in ("hdfs", "viewfs")


def resolve(path: str | os.PathLike | Location, options: dict | None = None) -> Location:
    """The filesystem and in-filesystem path of a user path or URI.

    ``options`` (else the ``configure``d ones) are the filesystem's settings: for S3 the
    ``pyarrow.fs.S3FileSystem`` arguments (``endpoint_url``, ``region``, ``access_key``,
    ``secret_key``, ``anonymous``, ...); for GCS the ``pyarrow.fs.GcsFileSystem`` arguments
    (``endpoint_url``, ``project_id``, ``anonymous``, ...); for other schemes the arguments of
    the pyarrow or fsspec filesystem class.
    """
    if isinstance(path, Location):
        return path
    text = os.fspath(path)
    if not is_uri(text):
        if _ONE_SLASH.match(text):  # would be a local folder named "s3:" under the working folder
            scheme = text.split(":", 1)[0].lower()
            raise StorageError(f"{text}: not a {scheme}:// URI (one slash or none after '{scheme}:'); write "
                               f"{scheme}://{text.split(':', 1)[1].lstrip('/')}")
        if text[:7].lower() == "file://":
            _check_uri(text)
            text = urlsplit(text).path
        return Location(pafs.LocalFileSystem(), Path(text).expanduser().resolve().as_posix(), "")
    _check_uri(text)
    opts = {**default_options(), **(options or {})}
    u = urlsplit(text)
    scheme = u.scheme.lower()
    inner = (u.netloc + u.path).rstrip("/")
    if not u.netloc and scheme in ("s3", "s3a", "gs", "gcs"):
        raise StorageError(f"{text}: a {scheme}:// URI needs a bucket (e.g. {scheme}://bucket/dataset)")
    if scheme in ("s3", "s3a"):
        return Location(cached_s3_filesystem(json.dumps(opts, sort_keys=True), os.getpid(),
                                             *(os.environ.get(k) for k in AWS_ENV)), inner, "s3")
    if scheme in ("gs", "gcs"):
        env = (os.environ.get(k) for k in (*GCS_ENV, GCS_CREDENTIALS_ENV))
        return Location(cached_gcs_filesystem(json.dumps(opts, sort_keys=True), os.getpid(), *env), inner, "gs")
    if scheme in ("hdfs", "viewfs"):
        try:
            fs, inner = pafs.FileSystem.from_uri(text)
        except (OSError, ImportError) as e:
            raise StorageError(f"{text}: cannot open HDFS ({e}); libhdfs and a Hadoop client are needed") from None
        return Location(fs, inner.rstrip("/"), scheme, f"{scheme}://{u.netloc}")
    try:
        from fsspec.core import url_to_fs

        ffs, inner = url_to_fs(text, **opts)
    except (ImportError, ValueError, TypeError) as e:
        raise StorageError(f"{text}: no filesystem for {scheme}:// ({e})") from None
    return Location(pafs.PyFileSystem(pafs.FSSpecHandler(ffs)), inner.rstrip("/"), scheme)
