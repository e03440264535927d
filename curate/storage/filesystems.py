"""The filesystem objects behind a URI's scheme that need settings: pyarrow's S3 and GCS
filesystems (one per settings and process), the boto3 client for what pyarrow cannot do on S3,
and the fsspec filesystem DuckDB reads object stores through."""

from __future__ import annotations

import functools
import json
import os
import threading
from datetime import timedelta
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from curate.storage.settings import StorageError, default_options, truthy

if TYPE_CHECKING:
    from curate.storage.location import Location

# S3FileSystem settings given as text on the command line that are really booleans/numbers
_S3_BOOL = {"anonymous", "background_writes", "force_virtual_addressing", "allow_bucket_creation",
            "allow_bucket_deletion", "check_directory_existence_before_creation"}
_S3_FLOAT = {"connect_timeout", "request_timeout"}


@functools.lru_cache(maxsize=16)
def cached_s3_filesystem(options_json: str, pid: int, *env) -> pafs.S3FileSystem:
    """One S3 filesystem (and its connection pool) per settings, not one per call; the
    environment values are part of the key so a changed variable takes effect, and the pid so
    a forked worker never shares its parent's connections."""
    return _s3(json.loads(options_json))


def _s3(options: dict) -> pafs.S3FileSystem:
    """pyarrow's S3 filesystem from the AWS environment variables, overridden by ``options``."""
    env = os.environ
    kw: dict = {}
    endpoint = options.pop("endpoint_url", None) or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    if endpoint:
        u = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
        kw["endpoint_override"], kw["scheme"] = u.netloc, u.scheme
    region = env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        kw["region"] = region
    if env.get("AWS_ACCESS_KEY_ID") and env.get("AWS_SECRET_ACCESS_KEY"):
        kw["access_key"], kw["secret_key"] = env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]
        if env.get("AWS_SESSION_TOKEN"):
            kw["session_token"] = env["AWS_SESSION_TOKEN"]
    aliases = {"key": "access_key", "secret": "secret_key", "token": "session_token", "region_name": "region"}
    try:
        for k, v in options.items():
            k = aliases.get(k, k)
            kw[k] = truthy(v, k) if k in _S3_BOOL else float(v) if k in _S3_FLOAT else v
        return pafs.S3FileSystem(**kw)
    except (TypeError, ValueError) as e:
        raise StorageError(f"--storage-option for s3: {e}") from None


def s3_settings(options: dict | None = None) -> dict:
    """The resolved S3 settings (endpoint, region, keys) as s3fs/boto3 keyword arguments."""
    opts = {**default_options(), **(options or {})}
    env = os.environ
    endpoint = opts.get("endpoint_url") or env.get("AWS_ENDPOINT_URL_S3") or env.get("AWS_ENDPOINT_URL")
    out: dict = {}
    if endpoint:
        out["endpoint_url"] = endpoint
    region = opts.get("region") or opts.get("region_name") or env.get("AWS_REGION") or env.get("AWS_DEFAULT_REGION")
    if region:
        out["region_name"] = region
    key = opts.get("access_key") or opts.get("key") or env.get("AWS_ACCESS_KEY_ID")
    secret = opts.get("secret_key") or opts.get("secret") or env.get("AWS_SECRET_ACCESS_KEY")
    if key and secret:
        out["aws_access_key_id"], out["aws_secret_access_key"] = key, secret
        token = opts.get("session_token") or opts.get("token") or env.get("AWS_SESSION_TOKEN")
        if token:
            out["aws_session_token"] = token
    return out


# GcsFileSystem settings given as text on the command line that are really booleans/durations
_GCS_BOOL = {"anonymous"}
_GCS_SECONDS = {"retry_time_limit"}


@functools.lru_cache(maxsize=16)
def cached_gcs_filesystem(options_json: str, pid: int, *env) -> pafs.GcsFileSystem:
    """One GCS filesystem per settings and process (as for S3: the environment values and the
    pid are part of the key)."""
    return _gcs(json.loads(options_json))


def _gcs(options: dict) -> pafs.GcsFileSystem:
    """pyarrow's GCS filesystem from the environment Google's clients read, overridden by ``options``.

    ``STORAGE_EMULATOR_HOST`` (``http://127.0.0.1:9023`` or ``host:port``) is the variable every
    Google Cloud Storage client honours for an emulator: requests go there, without
    credentials. ``GOOGLE_CLOUD_PROJECT`` (the project new buckets are made in) and
    ``GOOGLE_APPLICATION_CREDENTIALS`` are read by pyarrow's own credential chain."""
    kw: dict = {}
    emulator = os.environ.get("STORAGE_EMULATOR_HOST")
    if emulator:
        # an emulator that does not answer is not a transient fault: give up after 30 s, not
        # after the Google client's default of many minutes of retries
        kw.update(_endpoint(emulator, "http"), anonymous=True, retry_time_limit=timedelta(seconds=30))
    endpoint = options.pop("endpoint_url", None)
    if endpoint:
        kw.update(_endpoint(endpoint, "https"))
    aliases = {"project": "project_id", "endpoint": "endpoint_override"}
    try:
        for k, v in options.items():
            k = aliases.get(k, k)
            if k == "token" and v == "anon":  # gcsfs's spelling of an anonymous client
                k, v = "anonymous", "true"
            kw[k] = truthy(v, k) if k in _GCS_BOOL else timedelta(seconds=float(v)) if k in _GCS_SECONDS else v
        return pafs.GcsFileSystem(**kw)
    except (TypeError, ValueError) as e:
        raise StorageError(f"--storage-option for gs: {e}") from None


def _endpoint(url: str, default_scheme: str) -> dict:
    """``endpoint_override`` and ``scheme`` of GcsFileSystem from ``scheme://host:port`` or ``host:port``."""
    u = urlsplit(url if "://" in url else f"{default_scheme}://{url}")
    return {"endpoint_override": u.netloc, "scheme": u.scheme}


def fsspec_filesystem(loc: Location):
    """An fsspec filesystem for ``loc``'s scheme (DuckDB reads object stores through one)."""
    import fsspec

    if loc.scheme == "s3":
        return fsspec.filesystem("s3", **_s3fs_options())
    if loc.scheme == "gs":
        return _gcs_fsspec_class()(loc.fs)
    return fsspec.filesystem(loc.scheme, **default_options())


def _s3fs_options() -> dict:
    """s3fs's arguments for curate's S3 settings (endpoint, region, keys, anonymous)."""
    s = s3_settings()
    kw = {"client_kwargs": {k: s[k] for k in ("endpoint_url", "region_name") if k in s}}
    if "aws_access_key_id" in s:
        kw.update(key=s["aws_access_key_id"], secret=s["aws_secret_access_key"], token=s.get("aws_session_token"))
    try:
        anonymous = truthy(default_options().get("anonymous", ""), "anonymous")
    except ValueError as e:
        raise StorageError(f"--storage-option for s3: {e}") from None
    if anonymous:
        kw["anon"] = True
    return kw


def configure_fsspec() -> None:
    """Make curate's store settings fsspec's in this process, for libraries that open URIs
    through fsspec themselves (img2dataset's reader, writers and downloader): s3fs's defaults
    for ``s3://``, and for ``gs://`` fsspec's wrapper of the same pyarrow GCS filesystem every
    other read uses (no gcsfs needed)."""
    import fsspec
    import fsspec.config

    # no listings cache: a rerun rewrites objects (img2dataset's input parts) that a cached
    # listing would still describe with their old ETag (s3fs then refuses the read)
    fsspec.config.conf["s3"] = dict(_s3fs_options(), use_listings_cache=False)
    for protocol in ("gs", "gcs"):
        fsspec.register_implementation(protocol, _gcs_fsspec_default_class(), clobber=True)


@functools.lru_cache(maxsize=1)
def _gcs_fsspec_default_class():
    """``_gcs_fsspec_class`` made with no arguments (as ``fsspec.core.url_to_fs`` makes it):
    the configured pyarrow GCS filesystem of this process."""

    class ConfiguredGcsArrowFS(_gcs_fsspec_class()):
        def __init__(self, fs=None, **kwargs):
            if fs is None:
                from curate.storage.location import resolve

                fs = resolve("gs://any-bucket").fs  # one filesystem per settings, whatever the bucket
            super().__init__(fs, **kwargs)

    return ConfiguredGcsArrowFS


@functools.lru_cache(maxsize=1)
def _gcs_fsspec_class():
    """fsspec's wrapper of pyarrow's GCS filesystem under the ``gs``/``gcs`` protocols, so DuckDB
    reads ``gs://`` through the same client and settings as every other read (no second GCS
    library with its own credentials)."""
    from fsspec.implementations.arrow import ArrowFSWrapper

    class GcsArrowFS(ArrowFSWrapper):
        protocol = ("gs", "gcs")

    return GcsArrowFS


_S3_CLIENT_LOCK = threading.Lock()


def s3_client():
    """A boto3 S3 client with the same settings (for what pyarrow cannot do: conditional
    create, deleting without leaving an empty folder-marker object behind, reading an object in
    one request). One per process and settings, shared by threads; made under a lock, since
    creating boto3 clients from several threads at once is not safe."""
    with _S3_CLIENT_LOCK:
        return _s3_client(json.dumps(s3_settings(), sort_keys=True), os.getpid())


@functools.lru_cache(maxsize=16)
def _s3_client(settings_json: str, pid: int):
    import boto3

    return boto3.client("s3", **json.loads(settings_json))
