"""Helpers for the GCS tests (read back a bucket on the loopback emulator)."""

from __future__ import annotations

import pyarrow.fs as pafs


def gs_objects(bucket: str, prefix: str = "") -> dict[str, bytes]:
    """key (relative to ``prefix``) -> bytes of every object under ``prefix`` (a recursive
    listing, so folder-marker objects would show up too)."""
    from curate import storage

    loc = storage.resolve(f"gs://{bucket}")
    out = {}
    for i in loc.fs.get_file_info(pafs.FileSelector(loc.path, recursive=True)):
        key = i.path[len(bucket) + 1:]
        if not key.startswith(prefix):
            continue
        assert i.type == pafs.FileType.File, f"a folder-marker object {i.path}/ in the bucket"
        with loc.fs.open_input_stream(i.path) as f:
            out[key[len(prefix):]] = f.read()
    return out
