"""Local copies of inputs named by URI, for readers and libraries that open local files
(kept in ``input_cache_dir()`` while the object's size and modification time match)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Callable

import pyarrow.fs as pafs

from curate.storage.location import is_uri, resolve
from curate.storage.objects import file_info, for_each_object, is_dir, is_file, read_bytes
from curate.storage.paths import basename, expand, list_files
from curate.storage.readers import open_input_stream
from curate.storage.settings import StorageError


def input_cache_dir() -> Path:
    """Where input files named by URI are copied for readers that need a local file:
    ``$CURATE_WORK_DIR/inputs`` (default ~/.cache/curate/work/inputs)."""
    base = Path(os.environ.get("CURATE_WORK_DIR") or Path.home() / ".cache" / "curate" / "work")
    return base / "inputs"


def fetch_folder(path, dest) -> list[str]:
    """Copy the files under a folder/prefix to the local folder ``dest`` (same relative names;
    hidden names left out); returns the relative names. For small inputs a local library must
    read from disk (an evaluation image folder)."""
    base = resolve(path).uri.rstrip("/") if is_uri(path) else str(path).rstrip("/")
    files = list_files(base, recursive=True)

    def copy(f: str) -> None:  # each object one request of its own: STORE_REQUESTS at a time
        target = Path(dest) / f[len(base) + 1:]
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(read_bytes(f))

    for_each_object(copy, files)
    return [f[len(base) + 1:] for f in files]


def fetch_inputs(items: list[str], in_place: Callable[[str], bool] | None = None,
                 listed: set[str] | None = None) -> tuple[list[str], dict[str, str]]:
    """Input paths for a job whose readers open local files: every URI item is expanded (a
    glob is listed on the store, a folder's files are listed recursively) and each file is
    copied to ``input_cache_dir()`` (kept when the copy there already has the object's size
    and modification time), except the objects ``in_place`` accepts, which are returned as
    their URIs (readers that take an object in place: Parquet by range reads, text and tar
    formats streamed). Returns the paths (plain paths
    unchanged) and a map from each path to the URI it stands for (the name recorded as
    ``source_file``). ``listed``, when given, receives every path that a glob or a folder
    expanded to (ingest reads those as a folder's files)."""
    out, sources = [], {}
    for item in items:
        if not is_uri(item):
            out.append(item)
            continue
        pattern = any(c in item for c in "*?[")
        folder = not pattern and is_dir(item)
        files = expand(item) if pattern else (list_files(item, recursive=True) if folder else [resolve(item).uri])
        if not files:
            raise StorageError(f"{item}: no input files there")
        for uri in files:
            info = file_info(resolve(uri))
            if info.type == pafs.FileType.NotFound:
                raise StorageError(f"{uri}: no such input file")
            if in_place is not None and in_place(uri):
                out.append(uri)
                sources[uri] = uri
                if listed is not None and (pattern or folder):
                    listed.add(uri)
                continue
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
            if listed is not None and (pattern or folder):
                listed.add(str(local))
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


def local_input(path: str, source: str) -> str:
    """The local file a task reads for an input: ``path`` (the driver's copy, ``fetch_inputs``)
    where this process sees it, else, for an input named by URI ``source``, this machine's own
    copy (a worker of a cluster: the driver's input cache is not there). An input read in place
    (``path`` a URI) is returned as it is."""
    if is_uri(path) or os.path.exists(path) or not is_uri(source):
        return path
    return fetch_inputs([source])[0][0]
