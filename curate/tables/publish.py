"""Put a finished local dataset folder onto an object store, with the object-store commit protocol.

Used where a job's own writes are still POSIX-only: ``curate download`` into a store other than
``s3://``/``gs://`` (img2dataset's writer there) runs into a local working folder, then
``publish`` uploads what it made. (Ingest and every other job write the store directly.) Each shard is
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

import pyarrow.fs as pafs

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


def work_folder(target: str, master: str | None = None) -> Path:
    """The local working folder of a dataset URI: ``$CURATE_WORK_DIR`` (default
    ~/.cache/curate/work) / a hash of the URI, so a rerun finds its earlier work there. Every
    worker must see it, so a cluster master is refused (``working_copy``'s users only)."""
    import hashlib

    from curate.errors import DatasetError

    if master and not master.startswith("local"):
        raise DatasetError(f"{target}: a dataset on object storage is worked on this machine for now "
                           f"(--master local[*] or --engine local); --master {master} is not supported yet")
    base = Path(os.environ.get("CURATE_WORK_DIR") or Path.home() / ".cache" / "curate" / "work")
    return base / hashlib.sha256(storage.resolve(target).uri.encode()).hexdigest()[:16]


def fetch(target: str, local_root: str | os.PathLike) -> dict:
    """Make ``local_root`` hold the committed contents of the dataset at ``target``: every
    committed shard and every other file (not markers, not unmarked shards, not the lock);
    a local file already equal to the object is kept. Returns counts."""
    from curate.tables import Dataset
    from curate.tables.atomic import atomic_write_bytes

    root = Path(local_root)
    remote = Dataset(target)
    loc = remote.location
    infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True, recursive=True))
    prefix = loc.path.rstrip("/") + "/"
    committed = {u[len(remote.root) + 1:] for t in remote.tables() for u in remote.shards(t)}
    fetched = kept = 0
    for i in infos:
        if i.type != pafs.FileType.File:
            continue
        rel = i.path[len(prefix):]
        parts = rel.split("/")
        if rel == "_curate.lock" or storage.COMMIT_DIR in parts[:-1] or (_is_shard(rel) and rel not in committed):
            continue
        dest = root / rel
        if _is_shard(rel):
            mark = json.loads(storage.read_bytes(storage.marker(remote.location.join(rel))))
            if dest.is_file() and dest.stat().st_size == mark["bytes"] and \
                    hashlib.sha256(dest.read_bytes()).hexdigest() == mark["sha256"]:
                kept += 1
                continue
        atomic_write_bytes(dest, storage.read_bytes(remote.location.join(rel)))
        fetched += 1
    local = Dataset(root)
    if root.is_dir():
        for table in local.tables():  # shards the store no longer has (an earlier, larger table)
            want = {u.rsplit("/", 1)[1] for u in remote.shards(table)}
            for p in local.shards(table):
                if p.name not in want:
                    p.unlink()
    return {"fetched": fetched, "kept": kept}


_open_copies: list[tuple[Path, str]] = []


def working_copy(dataset: str, master: str | None = None) -> str:
    """For a CLI command whose job writes POSIX paths: a dataset URI becomes a local working
    copy (fetched now, under the dataset's remote lock) that ``publish_working_copies`` puts
    back when the command succeeds; a local dataset is returned unchanged."""
    from curate.lock import hold_dataset_lock

    if not storage.is_uri(dataset):
        return dataset
    target = storage.resolve(dataset).uri
    if not storage.is_dir(target):  # named as the user gave it, not as the empty local copy
        from curate.errors import DatasetError

        raise DatasetError(f"dataset folder {target} does not exist")
    work = work_folder(target, master)
    hold_dataset_lock(target)
    fetch(target, work)
    _open_copies.append((work, target))
    return str(work)


def publish_working_copies() -> list[dict]:
    """Publish every working copy this command opened (call at the command's successful end)."""
    out = []
    while _open_copies:
        work, target = _open_copies.pop(0)
        out.append({"target": target, **publish(work, target)})
    return out
