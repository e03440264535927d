"""Commit markers: how a table shard becomes visible where there is no rename (docs/storage.md).

On a local path (and HDFS) a file is written aside and renamed. Object stores have no rename:
an object is written once, whole, under its final key, and a table shard counts only once its
commit marker ``<table>/_committed/<shard>`` exists, written after the shard's upload returned.
A shard without a marker (a writer killed or failed between the two) is invisible to readers
and rewritten by a rerun.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil

from curate.storage.location import Location, resolve
from curate.storage.objects import delete, exists, put_bytes

COMMIT_DIR = "_committed"


def marker(shard: Location) -> Location:
    """The commit marker of a table shard: ``<table>/_committed/<shard name>``."""
    return shard.parent.join(COMMIT_DIR, shard.name)


def commit_shard(shard: Location, data: bytes) -> None:
    """Object-store commit of one shard: the old marker goes first (a rewrite is invisible
    until done), then the whole object, then its marker recording size and SHA-256."""
    delete(marker(shard))
    put_bytes(shard, data)
    put_marker(shard, len(data), hashlib.sha256(data).hexdigest())


def put_marker(shard: Location, size: int, sha256: str) -> None:
    """The commit marker of a shard just uploaded whole: its size and SHA-256 (what a reader
    or a working copy checks a local file against)."""
    body = json.dumps({"bytes": size, "sha256": sha256}, sort_keys=True)
    put_bytes(marker(shard), (body + "\n").encode())


# a shard file up to this size is committed from memory (one request on any store); a larger one
# is streamed (on GCS through a temporary key and a copy: three requests)
WHOLE_SHARD_BYTES = 64 << 20


def commit_shard_file(shard: Location, local_path) -> None:
    """``commit_shard`` of a local file: past ``WHOLE_SHARD_BYTES`` streamed a block at a time,
    so a large shard (a subset's ``uids.parquet`` of a billion uids is ~18 GB) is never in
    memory. On S3 and GCS the file is read once, hashed on the way up (``ObjectUpload``); on
    another store it is hashed, then uploaded (``put_file``: no partial object on an error)."""
    from curate.storage.objects import put_file
    from curate.storage.uploads import ObjectUpload

    if os.path.getsize(local_path) <= WHOLE_SHARD_BYTES:
        with open(local_path, "rb") as f:
            commit_shard(shard, f.read())
        return
    delete(marker(shard))
    if shard.scheme in ("s3", "gs"):
        upload = ObjectUpload(shard)
        try:
            with open(local_path, "rb") as f:
                shutil.copyfileobj(f, upload, 8 << 20)
            upload.complete()
        except BaseException:
            upload.abort()
            raise
        put_marker(shard, upload.size, upload.sha256)
        return
    h, size = hashlib.sha256(), 0
    with open(local_path, "rb") as f:
        while block := f.read(8 << 20):
            h.update(block)
            size += len(block)
    put_file(shard, local_path)
    put_marker(shard, size, h.hexdigest())


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
