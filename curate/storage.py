"""Where a dataset or an input lives: one place that turns a user path into (filesystem, path).

A user path is a plain path, ``file://``, ``s3://``, ``gs://`` (``gcs://``), ``hdfs://`` or any
other scheme fsspec knows. ``pyarrow.fs`` serves the schemes it has; fsspec the rest (wrapped
in ``pyarrow.fs.PyFileSystem`` so callers see one interface).

Settings come the way pyarrow and boto users expect: S3 reads ``AWS_ENDPOINT_URL`` (or
``AWS_ENDPOINT_URL_S3``), ``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``,
``AWS_SESSION_TOKEN`` and ``AWS_REGION`` / ``AWS_DEFAULT_REGION``; ``--storage-option KEY=VALUE``
(``configure``) overrides them. Options reach Spark workers and subprocesses through the
``CURATE_STORAGE_OPTIONS`` environment variable (JSON), which ``configure`` sets.

Commits (docs/storage.md): on a local path a file is written aside and renamed (as always).
Object stores have no rename: an object is written once, whole, under its final key, and a
table shard counts only once its commit marker ``<table>/_committed/<shard>`` exists, written
after the shard's upload returned. A shard without a marker (a writer killed or failed between
the two) is invisible to readers and rewritten by a rerun.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pyarrow.fs as pafs

from curate.errors import CurateError

OPTIONS_ENV = "CURATE_STORAGE_OPTIONS"
COMMIT_DIR = "_committed"

# S3FileSystem settings given as text on the command line that are really booleans/numbers
_S3_BOOL = {"anonymous", "background_writes", "force_virtual_addressing", "allow_bucket_creation",
            "allow_bucket_deletion", "check_directory_existence_before_creation"}
_S3_FLOAT = {"connect_timeout", "request_timeout"}


class StorageError(CurateError):
    """A storage URI that cannot be used (unknown scheme, missing support, bad option)."""


def parse_options(items: list[str]) -> dict[str, str]:
    """``--storage-option KEY=VALUE`` items -> dict (one-line error on a malformed one)."""
    from curate.keyvalue import parse_key_values

    try:
        return parse_key_values(items, "--storage-option")
    except ValueError as e:
        raise StorageError(str(e)) from None


def configure(options: dict[str, str]) -> None:
    """Make ``options`` the defaults of every later ``resolve`` in this process and its children."""
    if options:
        os.environ[OPTIONS_ENV] = json.dumps(options, sort_keys=True)
    else:
        os.environ.pop(OPTIONS_ENV, None)


def default_options() -> dict[str, str]:
    raw = os.environ.get(OPTIONS_ENV)
    if not raw:
        return {}
    try:
        return dict(json.loads(raw))
    except (ValueError, TypeError) as e:
        raise StorageError(f"{OPTIONS_ENV} is not a JSON object: {e}") from None


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


def _truthy(v) -> bool:
    return str(v).strip().lower() in ("1", "true", "yes", "on")


_AWS_ENV = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL", "AWS_REGION", "AWS_DEFAULT_REGION", "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")


@functools.lru_cache(maxsize=16)
def _s3_cached(options_json: str, pid: int, *env) -> pafs.S3FileSystem:
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
    for k, v in options.items():
        k = aliases.get(k, k)
        kw[k] = _truthy(v) if k in _S3_BOOL else float(v) if k in _S3_FLOAT else v
    try:
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


def resolve(path: str | os.PathLike | Location, options: dict | None = None) -> Location:
    """The filesystem and in-filesystem path of a user path or URI.

    ``options`` (else the ``configure``d ones) are the filesystem's settings: for S3 the
    ``pyarrow.fs.S3FileSystem`` arguments (``endpoint_url``, ``region``, ``access_key``,
    ``secret_key``, ``anonymous``, ...); for other schemes the arguments of the pyarrow or
    fsspec filesystem class.
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
        return Location(_s3_cached(json.dumps(opts, sort_keys=True), os.getpid(),
                                       *(os.environ.get(k) for k in _AWS_ENV)), inner, "s3")
    if scheme in ("gs", "gcs"):
        try:
            return Location(pafs.GcsFileSystem(**opts), inner, "gs")
        except (TypeError, ValueError) as e:
            raise StorageError(f"--storage-option for gs: {e}") from None
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


def fsspec_filesystem(loc: Location):
    """An fsspec filesystem for ``loc``'s scheme (DuckDB reads object stores through one)."""
    import fsspec

    if loc.scheme == "s3":
        s = s3_settings()
        kw = {"client_kwargs": {k: s[k] for k in ("endpoint_url", "region_name") if k in s}}
        if "aws_access_key_id" in s:
            kw.update(key=s["aws_access_key_id"], secret=s["aws_secret_access_key"],
                      token=s.get("aws_session_token"))
        if _truthy(default_options().get("anonymous", "")):
            kw["anon"] = True
        return fsspec.filesystem("s3", **kw)
    return fsspec.filesystem(loc.scheme, **default_options())


# ---- single objects ---------------------------------------------------------------------

def _info(loc: Location) -> pafs.FileInfo:
    try:
        return loc.fs.get_file_info(loc.path)
    except OSError as e:
        raise StorageError(f"{loc}: cannot reach storage ({e})") from None


def exists(path) -> bool:
    loc = resolve(path)
    return _info(loc).type != pafs.FileType.NotFound


def is_file(path) -> bool:
    return _info(resolve(path)).type == pafs.FileType.File


def is_dir(path) -> bool:
    """A folder; on an object store, a prefix with objects under it (or a bucket)."""
    loc = resolve(path)
    info = _info(loc)
    if info.type == pafs.FileType.Directory:
        return True
    if loc.local or info.type == pafs.FileType.File:
        return False
    try:
        return bool(loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True, recursive=False)))
    except OSError:
        return False


def read_bytes(path) -> bytes:
    loc = resolve(path)
    try:
        with loc.fs.open_input_stream(loc.path) as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StorageError(f"cannot read {loc}: {e}") from None


def put_bytes(loc: Location, data: bytes) -> None:
    """One whole object under its final key (object stores publish it only when complete)."""
    try:
        with loc.fs.open_output_stream(loc.path) as f:
            f.write(data)
    except OSError as e:
        raise StorageError(f"cannot write {loc}: {e}") from None


def s3_client():
    """A boto3 S3 client with the same settings (for what pyarrow cannot do: conditional
    create, and deleting without leaving an empty folder-marker object behind)."""
    return _s3_client(json.dumps(s3_settings(), sort_keys=True), os.getpid())


@functools.lru_cache(maxsize=16)
def _s3_client(settings_json: str, pid: int):
    import boto3

    return boto3.client("s3", **json.loads(settings_json))


def delete(loc: Location) -> None:
    if loc.scheme == "s3":
        # pyarrow's delete_file writes an empty "<parent>/" marker object when the parent
        # prefix would be left empty; a dataset holds no such objects
        bucket, _, key = loc.path.partition("/")
        try:
            s3_client().delete_object(Bucket=bucket, Key=key)
        except Exception as e:  # botocore's errors: one line, like every other storage failure
            raise StorageError(f"cannot delete {loc}: {e}") from None
        return
    try:
        loc.fs.delete_file(loc.path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if _info(loc).type != pafs.FileType.NotFound:
            raise StorageError(f"cannot delete {loc}: {e}") from None


def marker(shard: Location) -> Location:
    """The commit marker of a table shard: ``<table>/_committed/<shard name>``."""
    return shard.parent.join(COMMIT_DIR, shard.name)


def commit_shard(shard: Location, data: bytes) -> None:
    """Object-store commit of one shard: the old marker goes first (a rewrite is invisible
    until done), then the whole object, then its marker recording size and SHA-256."""
    delete(marker(shard))
    put_bytes(shard, data)
    body = json.dumps({"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}, sort_keys=True)
    put_bytes(marker(shard), (body + "\n").encode())


def uncommit_shard(shard: Location) -> None:
    """Remove a shard: its marker first, so no reader sees it half-removed."""
    delete(marker(shard))
    delete(shard)


def committed(path) -> bool:
    """A shard is done: locally the file exists (renamed into place); on an object store its
    commit marker exists too."""
    loc = resolve(path)
    if loc.renames:
        return exists(loc)
    return exists(marker(loc)) and exists(loc)


def listing(loc: Location) -> list[pafs.FileInfo]:
    """Direct children of a folder/prefix (empty when there is none)."""
    try:
        return loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True, recursive=False))
    except OSError as e:
        raise StorageError(f"cannot list {loc}: {e}") from None


# ---- paths a job passes around (a local Path/str or a URI string) ----------------------

def join(base, *parts: str):
    """``base`` / ``parts``: a ``Path`` for a local ``Path``, a URI string for a URI (no
    ``os.path`` on a URI), a string for a local string."""
    if isinstance(base, Path):
        return base.joinpath(*parts)
    if is_uri(base):
        return "/".join([str(base).rstrip("/"), *(p.strip("/") for p in parts if p)])
    return str(Path(base).joinpath(*parts))


def basename(path) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1]


def open_input(path):
    """What a pyarrow/numpy reader takes: a local path as it is, a URI opened as a
    random-access file on its filesystem (with the configured settings)."""
    if not is_uri(path):
        return path
    return _open_object(path, "open_input_file")


def read_parquet(path, columns: list[str] | None = None, **kw):
    """``pyarrow.parquet.read_table`` of one file, local or on a store."""
    import pyarrow.parquet as pq

    src = open_input(path)
    try:
        return pq.read_table(src, columns=columns, **kw)
    finally:
        if src is not path:
            src.close()


def parquet_file(path):
    """``pyarrow.parquet.ParquetFile`` of one file, local or on a store."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(open_input(path))


def load_npy(path, mmap: bool = False):
    """A ``.npy`` array: memory-mapped from a local file when asked, read whole from a store
    (callers keep these bounded by one shard or one small table)."""
    import io

    import numpy as np

    if not is_uri(path):
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    return np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)


def npy_bytes(array) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()


def fingerprint(path) -> tuple:
    """(path, mtime ns, size): a worker cache key that changes when the file is rewritten."""
    if not is_uri(path):
        st = os.stat(path)
        return (str(path), st.st_mtime_ns, st.st_size)
    info = _info(resolve(path))
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(str(path))
    return (str(path), info.mtime_ns, info.size)


def remove_tree(path) -> None:
    """Delete a folder/prefix and everything under it (a job's scratch ``_tmp/<run>``)."""
    if not is_uri(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        return
    loc = resolve(path)
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True, recursive=True))
    except OSError as e:
        raise StorageError(f"cannot list {loc}: {e}") from None
    for i in infos:
        if i.type == pafs.FileType.File:
            delete(Location(loc.fs, i.path, loc.scheme, loc.prefix))


def list_files(path, recursive: bool = False) -> list[str]:
    """Files under a folder/prefix as paths of the same kind (URIs for a URI), sorted; hidden
    names (``_``/``.``) below ``path`` left out."""
    if not is_uri(path):
        p = Path(path)
        if not p.is_dir():
            return []
        it = p.rglob("*") if recursive else p.iterdir()
        return sorted(str(f) for f in it if f.is_file()
                      and not any(part.startswith(("_", ".")) for part in f.relative_to(p).parts))
    loc = resolve(path)
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True, recursive=recursive))
    except OSError as e:
        raise StorageError(f"cannot list {loc}: {e}") from None
    prefix = loc.path.rstrip("/") + "/"
    out = []
    for i in infos:
        rel = i.path[len(prefix):] if i.path.startswith(prefix) else i.base_name
        if i.type == pafs.FileType.File and not any(part.startswith(("_", ".")) for part in rel.split("/")):
            out.append(Location(loc.fs, i.path, loc.scheme, loc.prefix).uri)
    return sorted(out)


def expand(pattern: str) -> list[str]:
    """Input files a user named: a file, a folder's files, or a glob (``*``, ``?``, ``[``) in the
    last parts of a path or URI (listed through the store: no shell glob on a bucket)."""
    import fnmatch

    if not is_uri(pattern):
        import glob as _glob

        if any(c in pattern for c in "*?["):
            return sorted(_glob.glob(os.path.expanduser(pattern)))
        return [pattern]
    if not any(c in pattern for c in "*?["):
        return [pattern]
    first = min(i for i in (pattern.find(c) for c in "*?[") if i >= 0)
    base = pattern[:first].rsplit("/", 1)[0]
    recursive = "/" in pattern[len(base) + 1:]
    return [u for u in list_files(base, recursive=recursive) if fnmatch.fnmatchcase(u, pattern)]


# ---- settings on Spark workers -----------------------------------------------------------
_WORKER_ENV = (OPTIONS_ENV, *_AWS_ENV, "AWS_EC2_METADATA_DISABLED")


def worker_env() -> dict[str, str]:
    """The storage settings of this (driver) process, for a Spark task closure: executors do
    not inherit the driver's environment (and Spark local mode's Python workers only the
    environment of the session's start), so the engine ships these with every task."""
    return {k: os.environ[k] for k in _WORKER_ENV if k in os.environ}


def apply_worker_env(env: dict[str, str]) -> None:
    """On a worker: take the driver's storage settings (``worker_env``) before touching a URI.
    Settings the driver did not have are removed, so a reused worker keeps no stale ones."""
    for k in _WORKER_ENV:
        if k in env:
            if os.environ.get(k) != env[k]:
                os.environ[k] = env[k]
        elif k in (OPTIONS_ENV,):
            os.environ.pop(k, None)


def fetch_folder(path, dest) -> list[str]:
    """Copy the files under a folder/prefix to the local folder ``dest`` (same relative names;
    hidden names left out); returns the relative names. For small inputs a local library must
    read from disk (an evaluation image folder)."""
    base = resolve(path).uri.rstrip("/") if is_uri(path) else str(path).rstrip("/")
    out = []
    for f in list_files(base, recursive=True):
        rel = f[len(base) + 1:]
        target = Path(dest) / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_bytes(f))
        out.append(rel)
    return out


def open_input_stream(path):
    """A sequential reader of a file or object (a tar streamed once, no seeks)."""
    if not is_uri(path):
        return open(path, "rb")
    return _open_object(path, "open_input_stream")


def _open_object(path, how: str):
    """``fs.open_input_file`` / ``open_input_stream`` of a URI; a missing object stays
    FileNotFoundError, any other failure is one StorageError naming it."""
    loc = resolve(path)
    try:
        return getattr(loc.fs, how)(loc.path)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StorageError(f"cannot read {loc}: {e}") from None


def put_file(loc: Location, local_path, chunk: int = 8 << 20) -> None:
    """A local file uploaded as one whole object under its final key, streamed in chunks (S3
    and GCS publish the object only when the upload completes). On S3 through boto3's managed
    upload, which aborts a failed multipart upload: an error midway publishes nothing (a
    pyarrow output stream closed by an unwinding error would publish what it had)."""
    if loc.scheme == "s3":
        bucket, _, key = loc.path.partition("/")
        try:
            s3_client().upload_file(str(local_path), bucket, key)
        except Exception as e:  # boto3/s3transfer errors: one line, like every other storage failure
            raise StorageError(f"cannot write {loc}: {e}") from None
        return
    try:
        with open(local_path, "rb") as src, loc.fs.open_output_stream(loc.path) as f:
            while True:
                block = src.read(chunk)
                if not block:
                    break
                f.write(block)
    except OSError as e:
        raise StorageError(f"cannot write {loc}: {e}") from None


def input_cache_dir() -> Path:
    """Where input files named by URI are copied for readers that need a local file:
    ``$CURATE_WORK_DIR/inputs`` (default ~/.cache/curate/work/inputs)."""
    base = Path(os.environ.get("CURATE_WORK_DIR") or Path.home() / ".cache" / "curate" / "work")
    return base / "inputs"


def fetch_inputs(items: list[str]) -> tuple[list[str], dict[str, str]]:
    """Input paths for a job whose readers open local files: every URI item is expanded (a
    glob is listed on the store, a folder's files are listed recursively) and each file is
    copied to ``input_cache_dir()`` (kept when the copy there already has the object's size
    and modification time). Returns the local paths (plain paths unchanged) and a map from
    each local copy to the URI it stands for (the name recorded as ``source_file``)."""
    out, sources = [], {}
    for item in items:
        if not is_uri(item):
            out.append(item)
            continue
        files = expand(item) if any(c in item for c in "*?[") else \
            (list_files(item, recursive=True) if is_dir(item) else [resolve(item).uri])
        if not files:
            raise StorageError(f"{item}: no input files there")
        for uri in files:
            info = _info(resolve(uri))
            if info.type == pafs.FileType.NotFound:
                raise StorageError(f"{uri}: no such input file")
            local = input_cache_dir() / hashlib.sha256(uri.encode()).hexdigest()[:16] / basename(uri)
            stamp = local.with_name(local.name + ".src.json")
            want = json.dumps({"uri": uri, "size": info.size, "mtime_ns": info.mtime_ns}, sort_keys=True)
            if not (local.is_file() and stamp.is_file() and stamp.read_text() == want):
                local.parent.mkdir(parents=True, exist_ok=True)
                tmp = local.with_name(f".{local.name}.tmp")
                with open_input_stream(uri) as src, open(tmp, "wb") as dst:
                    while True:
                        block = src.read(8 << 20)
                        if not block:
                            break
                        dst.write(block)
                os.replace(tmp, local)
                stamp.write_text(want)
            out.append(str(local))
            sources[str(local)] = uri
    return out, sources


def local_copy(path) -> str:
    """A local path for a small input a library must read from disk (an evaluation set, a
    metadata file): a plain path as it is; a URI's folder or file copied into
    ``input_cache_dir()`` (a folder refetched whole, a file kept while size and mtime match)."""
    if not is_uri(path):
        return str(path)
    if is_dir(path):
        uri = resolve(path).uri
        dest = input_cache_dir() / hashlib.sha256(uri.encode()).hexdigest()[:16] / basename(uri)
        import shutil

        shutil.rmtree(dest, ignore_errors=True)
        fetch_folder(uri, dest)
        return str(dest)
    if not is_file(path):
        raise StorageError(f"{path}: no such file or folder")
    return fetch_inputs([str(path)])[0][0]
