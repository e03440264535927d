"""Put a finished local dataset folder onto an object store, with the object-store commit protocol.

Used by jobs whose own writes are still POSIX-only (write aside + rename, staging folders): the
job runs into a local working folder, then ``publish`` uploads what it made. Each shard is
committed as ``curate.storage.commit_shard`` does (whole object, then its marker), so a
publish killed midway leaves only whole shards visible, and a rerun skips every shard whose
marker already records the same SHA-256. Run manifests (``_runs/``) go last: once
``_runs/<job>.json`` is there, every table it describes is.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from curate import storage

# never published: the local lock, staging and temporary files of the working folder
_SKIP_TOP = {"_curate.lock", "_staging"}


def _files(root: Path) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel = Path(dirpath).relative_to(root)
        if rel.parts and rel.parts[0] in _SKIP_TOP:
            dirnames[:] = []
            continue
        dirnames.sort()
        for f in sorted(filenames):
            if f.startswith(".") or (not rel.parts and f in _SKIP_TOP):
                continue  # hidden temp files of atomic writes
            out.append((rel / f).as_posix())
    return out


def _is_shard(rel: str) -> bool:
    parts = rel.split("/")
    return len(parts) >= 2 and parts[-1].endswith(".parquet") and not any(p[:1] in "_." for p in parts)


def publish(local_root: str | os.PathLike, target: str) -> dict:
    """Upload the dataset at ``local_root`` to the URI ``target``; returns counts of objects
    uploaded and skipped (already committed with the same bytes) and stale shards removed."""
    from curate.tables import Dataset

    root = Path(local_root)
    dest = storage.resolve(target)
    files = _files(root)
    later = [f for f in files if f.startswith("_runs/")]
    uploaded = skipped = removed = 0

    def upload(rel: str) -> bool:
        data = (root / rel).read_bytes()  # one shard or file at a time
        loc = dest.join(rel)
        if not _is_shard(rel):
            storage.put_bytes(loc, data)
            return True
        mark = storage.marker(loc)
        try:
            prior = json.loads(storage.read_bytes(mark)) if storage.exists(mark) else None
        except (ValueError, FileNotFoundError):
            prior = None
        if prior == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()} and storage.exists(loc):
            return False
        storage.commit_shard(loc, data)
        return True

    for rel in [f for f in files if f not in later]:
        if upload(rel):
            uploaded += 1
        else:
            skipped += 1
    local, remote = Dataset(root), Dataset(target)
    for table in local.tables():  # shards of an earlier, larger publish of the same table
        keep = {p.name for p in local.shards(table)}
        for uri in remote.shards(table):
            if uri.rsplit("/", 1)[1] not in keep:
                storage.uncommit_shard(storage.resolve(uri))
                removed += 1
    for rel in later:
        upload(rel)
        uploaded += 1
    return {"uploaded": uploaded, "skipped": skipped, "removed_shards": removed}
