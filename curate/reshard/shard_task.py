"""One output shard of a reshard, written by its own task: the planned samples read from their
source tars (each streamed once), written as one WebDataset tar with fixed mtime and owner
(same plan, same bytes), then its ``<index>_stats.json`` last, so a rerun skips a finished
shard. Samples that cannot be written are listed with a reason."""

from __future__ import annotations

import json
import random
import tarfile
import time
from collections import Counter

import pyarrow as pa

from curate import storage
from curate.reshard.output import out_path
from curate.reshard.plan import task_sources
from curate.tables import atomic_write_bytes, write_parquet_atomic
from curate.tables.atomic import atomic_path

OUTPUT_SHARD_FORMAT = "{:08d}.tar"
STATS_FORMAT = "{:08d}_stats.json"

# Reasons a subset row is not written (besides the plan's NOT_IN_DOWNLOADS, DOWNLOAD_FAILED and
# NO_IMAGE_SHARD).
SOURCE_UNREADABLE = "source_shard_unreadable"
MISSING_IN_SHARD = "missing_in_shard"
NO_IMAGE_MEMBER = "no_image_member"

IMAGE_EXTS = ("jpg", "jpeg", "png", "webp")

SPILLED = pa.schema([("uid", pa.string()), ("reason", pa.string())])  # a task's missing rows


def _split_member(name: str) -> tuple[str, str] | None:
    """webdataset's key/extension split: key = path up to the first dot of the basename."""
    slash = name.rfind("/")
    dot = name.find(".", slash + 1)
    if dot < 0:
        return None
    return name[:dot], name[dot + 1:].lower()


def _read_members(path: str, wanted: set[str]) -> tuple[dict[str, dict[str, bytes]], str | None]:
    """Members of ``wanted`` keys in one tar, streamed once; (samples, error or None)."""
    found: dict[str, dict[str, bytes]] = {}
    try:
        with storage.open_input_stream(path) as src, tarfile.open(fileobj=src, mode="r|*") as tf:
            for m in tf:
                if not m.isfile():
                    continue
                split = _split_member(m.name)
                if split is None or split[0] not in wanted:
                    continue
                f = tf.extractfile(m)
                if f is not None:
                    found.setdefault(split[0], {})[split[1]] = f.read()
    except (OSError, tarfile.TarError, EOFError) as e:
        return found, f"{path}: {e}"
    return found, None


def write_shard_task(task: dict) -> dict:
    """Write output shard ``task['index']`` (tar, then its stats file last). Skips a finished shard."""
    out = out_path(task["output"])
    index = task["index"]
    tar_path = storage.join(out, OUTPUT_SHARD_FORMAT.format(index))
    stats_path = storage.join(out, STATS_FORMAT.format(index))
    finished = _finished_stats(tar_path, stats_path, task.get("plan_hash"))
    if finished is not None:
        return finished
    t0 = time.perf_counter()
    sources = task_sources(task)
    samples, missing, errors = _gather_samples(sources)
    if task.get("shuffle_seed") is not None:
        random.Random(task["shuffle_seed"]).shuffle(samples)
    size = _write_tar(tar_path, samples)
    reasons = Counter(r for _, r in missing)
    stats = {
        "shard": storage.basename(tar_path),
        "index": index,
        "successes": len(samples),  # DataComp's field name for a shard's sample count
        "planned": sum(len(s["items"]) for s in sources),
        "missing": dict(sorted(reasons.items())),
        "missing_uids": missing,
        "bytes": size,
        "sources": [s["rel"] for s in sources],
        "errors": errors,
        "seconds": round(time.perf_counter() - t0, 4),
        "plan_hash": task.get("plan_hash"),
    }
    atomic_write_bytes(stats_path, (json.dumps(stats, indent=1, sort_keys=True) + "\n").encode())
    stats["skipped"] = False
    return stats


def _finished_stats(tar_path, stats_path, plan_hash: str | None) -> dict | None:
    """The stats of a shard already written with this plan (a rerun skips it), else None."""
    if storage.exists(stats_path) and storage.exists(tar_path):  # the stats file is written last
        stats = json.loads(storage.read_bytes(stats_path))
        if stats.get("plan_hash") == plan_hash:
            stats["skipped"] = True
            return stats
    return None


def _gather_samples(sources: list[dict]) -> tuple[list[dict], list[list], list[str]]:
    """(samples in plan order, [uid, reason] of each item not written, read errors)."""
    samples: list[dict] = []
    missing: list[list] = []  # [uid, reason]
    errors: list[str] = []
    for src in sources:
        wanted = {item[0] for item in src["items"]}
        found, err = _read_members(src["path"], wanted)
        if err:
            errors.append(err)
        for key, uid, j in src["items"]:
            members = found.get(key)
            if members is None:
                missing.append([uid, SOURCE_UNREADABLE if err else MISSING_IN_SHARD])
                continue
            if not any(e in members for e in IMAGE_EXTS):
                missing.append([uid, NO_IMAGE_MEMBER])
                continue
            samples.append(_sample(members, uid, j, src["rel"], key))
    return samples, missing, errors


def _sample(members: dict[str, bytes], uid: str, j: int, rel: str, key: str) -> dict:
    """Copy ``j`` of a uid as a WebDataset sample keyed ``<uid>-<j>``; its JSON (the downloaded
    one, or a new one) records the uid and where it came from."""
    sample = {"__key__": f"{uid}-{j}"}
    for ext, data in members.items():
        if ext == "json":
            try:
                meta = json.loads(data)
            except ValueError:
                meta = {}
            if not isinstance(meta, dict):
                meta = {}
            meta.update(uid=uid, source_shard=rel, source_key=key)
            data = json.dumps(meta, sort_keys=True).encode()
        sample[ext] = data
    if "json" not in sample:
        sample["json"] = json.dumps({"uid": uid, "source_shard": rel, "source_key": key},
                                    sort_keys=True).encode()
    return sample


def _write_tar(tar_path, samples: list[dict]) -> int:
    """The shard's tar, written aside (locally: renamed into place; on a store: uploaded whole
    under its key); returns its size in bytes."""
    import webdataset as wds

    with atomic_path(tar_path) as tmp:
        with open(tmp, "wb") as f:
            # Fixed mtime/owner: same plan, same bytes.
            writer = wds.TarWriter(f, encoder=False, mtime=0.0, user="curate", group="curate")
            for s in samples:
                writer.write(s)
            writer.close()
        size = tmp.stat().st_size
    return size


def write_shard_spill(task: dict) -> dict:
    """``write_shard_task``, its missing rows written to ``task['missing_out']`` for the engine
    to count (the driver gets per-reason counts, not a row per missing sample)."""
    stats = write_shard_task(task)
    rows = stats.pop("missing_uids", [])
    write_parquet_atomic(pa.table([pa.array([r[0] for r in rows], pa.string()), pa.array([r[1] for r in rows], pa.string())],
                                  schema=SPILLED), task["missing_out"])
    return stats
