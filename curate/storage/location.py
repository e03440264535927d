"""A user path or URI -> ``Location`` (filesystem, path inside it): the one place that does it.

A user path is a plain path, ``file://``, ``s3://``, ``gs://`` (``gcs://``), ``hdfs://`` or any
other scheme fsspec knows. ``pyarrow.fs`` serves the schemes it has; fsspec the rest (wrapped
in ``pyarrow.fs.PyFileSystem`` so callers see one interface).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from curate.storage.filesystems import cached_gcs_filesystem, cached_s3_filesystem
from curate.storage.settings import AWS_ENV, GCS_CREDENTIALS_ENV, GCS_ENV, StorageError, default_options


def is_uri(path: str | os.PathLike) -> bool:
    """True for ``scheme://...`` other than ``file://`` (a path a local file API cannot open)."""
    if isinstance(path, os.PathLike):
        return False
    scheme = urlsplit(str(path)).scheme
    return len(scheme) > 1 and str(path).startswith(scheme + "://") and scheme != "file"


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
        if text.startswith("file://"):
            text = urlsplit(text).path
        return Location(pafs.LocalFileSystem(), Path(text).expanduser().resolve().as_posix(), "")
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
