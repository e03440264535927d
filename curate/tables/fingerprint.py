"""A table's cheap content identity (what the recipe cache keys stage runs by and what a
clustering records of the embeddings it was made from), and a file or folder's (the files a
stage or a scorer's seed set names)."""

from __future__ import annotations

import hashlib

from curate import storage
from curate.tables.dataset import Dataset


def table_fingerprint(dataset: Dataset, name: str) -> dict:
    """Cheap content identity of a table: per shard, its name, size and a hash of its tail.

    A Parquet file ends with its footer (row counts, column statistics, page offsets), so
    the tail changes with the content while reading it costs one small read per shard;
    rewriting identical rows (our writers are byte-deterministic) keeps the fingerprint.
    """
    shards = []
    for p in dataset.shards(name):
        loc = storage.resolve(p)
        with loc.fs.open_input_file(loc.path) as f:
            size = f.size()
            f.seek(max(0, size - 65536))
            tail = hashlib.sha256(f.read()).hexdigest()[:16]
        shards.append([storage.basename(p), size, tail])
    return {"table": name, "shards": shards}


def path_fingerprint(path: str) -> dict:
    """A file or folder a stage's parameter names outside the dataset's tables (evaluation
    images, a metadata file, target images): its files' names, sizes and modification times,
    nothing read (a store's from one listing); a glob's matches; ``missing`` when nothing is
    there. Replacing or adding an image changes it, so a cached stage runs again."""
    import glob
    import hashlib
    import os

    h, files = hashlib.sha256(), 0

    def add(name: str, size: int, mtime_ns: int) -> None:
        nonlocal files
        h.update(f"{name}:{size}:{mtime_ns}\n".encode())
        files += 1

    if storage.is_uri(path):
        if storage.is_file(path):
            _, mtime, size = storage.fingerprint(path)
            add("", size, mtime)
        else:
            for uri, size, mtime in storage.list_objects(path):
                add(uri[len(path.rstrip("/")) + 1:], size, mtime)
    else:
        matches = [path] if os.path.exists(path) else sorted(glob.glob(path)) if glob.has_magic(path) else []
        for m in matches:
            if os.path.isdir(m):
                for dirpath, dirnames, filenames in os.walk(m):
                    dirnames.sort()
                    for f in sorted(filenames):
                        full = os.path.join(dirpath, f)
                        try:
                            st = os.stat(full)
                        except OSError as e:  # a broken link: its error, as the stage will meet it
                            h.update(f"{os.path.relpath(full, m)}:{e.strerror}\n".encode())
                            continue
                        add(f"{m}|{os.path.relpath(full, m)}", st.st_size, st.st_mtime_ns)
            else:
                st = os.stat(m)
                add(m, st.st_size, st.st_mtime_ns)
    if not files:
        return {"path": path, "missing": True}
    return {"path": path, "files": files, "version": h.hexdigest()[:32]}
