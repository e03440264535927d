"""Paths a job passes around (a local ``Path``/str or a URI string): joining, naming, listing a
folder's files, expanding a glob (listed through the store: no shell glob on a bucket)."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow.fs as pafs

from curate.storage.location import Location, is_uri, resolve
from curate.storage.settings import StorageError


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
    return [uri for uri, _ in _store_files(path, recursive)]


def list_objects(path) -> list[tuple[str, int, int]]:
    """(URI, size, modification time in ns) of every object under a prefix, recursively, sorted;
    hidden names left out as ``list_files`` does: one listing, no object read."""
    return [(uri, info.size, info.mtime_ns) for uri, info in _store_files(path, True)]


def _store_files(path, recursive: bool) -> list[tuple[str, pafs.FileInfo]]:
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
            out.append((Location(loc.fs, i.path, loc.scheme, loc.prefix).uri, i))
    return sorted(out, key=lambda x: x[0])


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
