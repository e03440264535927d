"""The reshard plan, made by the engine's workers: the driver holds one summary row per source
shard and one task per output shard, never a row per sample.

1. The subset's uids (its ``uids.parquet``, or a DataComp ``.npy`` streamed to a uid table) are
   counted per uid (``copies``: a uid listed k times is written k times) and joined with
   ``downloads`` (uid, status, shard, key) in the engine. Rows that cannot be written (not in
   downloads, failed download, no image shard) are set aside with their reason.
2. Per source shard, a grouped apply sums the copies of its writable rows and digests them
   (sorted by key, then uid). Only these summaries reach the driver: it orders the source
   shards (by name, or in a seeded random order with ``shuffle``), turns their sizes into
   cumulative offsets and hashes the summaries into the plan hash.
3. A second grouped apply gives every written sample its global position (its shard's offset
   plus its place in the shard, in key order, each copy j of a uid in turn); the positions
   are written sorted in shards of exactly ``shard_size`` rows, so items shard i *is* output
   shard i, read by its one task.

The positions, and so the tars, equal those of the driver-side plan this replaces (sort by
source shard rank, then key; copies expanded in place; cut every ``shard_size`` samples).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import DatasetError
from curate.manifest import stable_hash
from curate.tables import Dataset

# Reasons a subset row is not written before any shard is read.
NOT_IN_DOWNLOADS = "not_in_downloads"
DOWNLOAD_FAILED = "download_failed"
NO_IMAGE_SHARD = "no_image_shard"

MAX_SOURCE_SHARDS = 10_000_000  # the per-source-shard summary's bound (a 100B-sample pool at 10k a shard)
MAX_REASONS = 16

UID_SCHEMA = pa.schema([("uid", pa.string())])
COPIES = pa.schema([("uid", pa.string()), ("copies", pa.int64())])
DL_SCHEMA = pa.schema([("uid", pa.string()), ("status", pa.string()), ("shard", pa.string()), ("key", pa.string())])
JOINED = pa.schema([("uid", pa.string()), ("copies", pa.int64()), ("status", pa.string()), ("shard", pa.string()),
                    ("key", pa.string()), ("reason", pa.string())])
DROPPED = pa.schema([("uid", pa.string()), ("copies", pa.int64()), ("reason", pa.string())])
SUMMARY = pa.schema([("shard", pa.string()), ("rows", pa.int64()), ("digest", pa.string())])
ITEMS = pa.schema([("pos", pa.int64()), ("shard", pa.string()), ("key", pa.string()), ("uid", pa.string()),
                   ("j", pa.int64())])


@dataclass
class ReshardPlan:
    """What goes where: one task per output shard (each reads its items shard), the counts,
    and the rows set aside before any reading (a frame, written by the finish)."""

    tasks: list[dict]
    subset_rows: int
    distinct_uids: int
    planned: int
    dropped: dict[str, int]  # reason -> rows (with multiplicity)
    dropped_rows: object  # frame of (uid, copies, reason)
    plan_hash: str
    sources: int
    extra: dict = field(default_factory=dict)


def _with_reason(batch: pa.RecordBatch) -> pa.Table:
    t = pa.Table.from_batches([batch])
    status = t.column("status")
    reason = pc.if_else(pc.is_null(status), NOT_IN_DOWNLOADS,
                        pc.if_else(pc.not_equal(status, "success"), DOWNLOAD_FAILED,
                                   pc.if_else(pc.or_(pc.is_null(t.column("shard")), pc.is_null(t.column("key"))),
                                              NO_IMAGE_SHARD, "ok")))
    return t.append_column("reason", reason)


def _not_ok(batch: pa.RecordBatch) -> pa.Table:
    t = pa.Table.from_batches([batch])
    return t.filter(pc.not_equal(t.column("reason"), "ok")).select(DROPPED.names)


def _ok(batch: pa.RecordBatch) -> pa.Table:
    t = pa.Table.from_batches([batch])
    return t.filter(pc.equal(t.column("reason"), "ok"))


def _not_in_downloads(batch: pa.RecordBatch) -> pa.Table:
    n = batch.num_rows
    return pa.table([batch.column("uid"), batch.column("copies"), pa.array([NOT_IN_DOWNLOADS] * n, pa.string())],
                    schema=DROPPED)


def _in_key_order(group: pa.Table) -> pa.Table:
    # rows of one source shard by key, ties by uid: the driver-side plan's stable sort of
    # uid-ordered rows by key
    return group.sort_by([("key", "ascending"), ("uid", "ascending")])


def _summary(group: pa.Table) -> pa.Table:
    """One source shard: its rows to write (copies summed) and a digest of what they are."""
    g = _in_key_order(group)
    h = hashlib.sha256()
    for name in ("key", "uid"):
        h.update("\x00".join(g.column(name).to_pylist()).encode())
        h.update(b"\x01")
    h.update(g.column("copies").to_numpy().astype("<i8").tobytes())
    return pa.table([[g.column("shard")[0].as_py()], [int(pc.sum(g.column("copies")).as_py() or 0)],
                     [h.hexdigest()]], schema=SUMMARY)


def _positions(offsets: dict[str, int]):
    """Every sample of one source shard at its global position (offset + place in the shard),
    each copy j of a uid in turn."""
    def expand(group: pa.Table) -> pa.Table:
        g = _in_key_order(group)
        copies = g.column("copies").to_numpy().astype(np.int64)
        n = int(copies.sum())
        rows = pa.array(np.repeat(np.arange(g.num_rows), copies))
        j = np.arange(n) - np.repeat(np.cumsum(copies) - copies, copies)
        rel = g.column("shard")[0].as_py()
        return pa.table([pa.array(offsets[rel] + np.arange(n, dtype=np.int64)), pa.array([rel] * n, pa.string()),
                         g.column("key").take(rows), g.column("uid").take(rows), pa.array(j, pa.int64())],
                        schema=ITEMS)

    return expand


def _check_downloads(downloads) -> tuple[str, int] | None:
    """One row per uid in ``downloads`` (else which uid is repeated), counted by the engine."""
    per_uid = downloads.select(["uid"]).aggregate(["uid"], {"n": ("uid", "count")})

    def repeated(batch: pa.RecordBatch) -> pa.Table:
        t = pa.Table.from_batches([batch]).filter(pc.greater(batch.column("n"), 1))
        return pa.table([pa.array([0] * t.num_rows, pa.int32()), t.column("uid"), t.column("n")],
                        names=["one", "uid", "n"])

    rep = per_uid.map_batches(repeated, pa.schema([("one", pa.int32()), ("uid", pa.string()), ("n", pa.int64())]))
    worst = rep.aggregate(["one"], {"uid": ("uid", "min"), "uids": ("uid", "count")}).collect_small(1)
    if worst.num_rows:
        return worst.column("uid")[0].as_py(), int(worst.column("uids")[0].as_py())
    return None


def plan_reshard(dataset: Dataset, uids_path: str | Path, work: str, shard_size: int = 10_000,
                 shuffle: bool = False, seed: int = 0, output: str | Path | None = None, executor=None) -> ReshardPlan:
    """The plan (module docstring) for the subset whose uids are the ``uid`` column of the
    Parquet file ``uids_path``; the items shards go to the dataset's table ``work``/items."""
    if shard_size < 1:
        raise DatasetError(f"shard size must be >= 1, got {shard_size}")
    if not dataset.has_table("downloads"):
        raise DatasetError(f"{dataset.root}: no downloads table; run `curate download` first")
    if executor is None:
        from curate.engine import LocalExecutor

        executor = LocalExecutor()
    subset = executor.frame_read([str(uids_path)], UID_SCHEMA)
    copies = subset.aggregate(["uid"], {"copies": ("uid", "count")}).cache()
    downloads = executor.frame_read([str(p) for p in dataset.shards("downloads")], DL_SCHEMA)
    rep = _check_downloads(downloads)
    if rep is not None:
        raise DatasetError(f"{dataset.table_dir('downloads')}: uid {rep[0]} has more than one row "
                           f"({rep[1]} uids do); downloads must have one row per uid")
    joined = copies.join(downloads, "uid").map_batches(_with_reason, JOINED).cache()
    dropped_rows = copies.anti_join(downloads).map_batches(_not_in_downloads, DROPPED).union(
        joined.map_batches(_not_ok, DROPPED))
    good = joined.map_batches(_ok, JOINED)

    subset_rows, distinct, dropped = _subset_counts(copies, dropped_rows)
    summary = good.group_apply("shard", _summary, SUMMARY).collect_small(MAX_SOURCE_SHARDS, sort_by=["shard"])
    sources, offsets, planned = _ordered_sources(summary, shuffle, seed)

    items = f"{work}/items"
    good.group_apply("shard", _positions(offsets), ITEMS).write_sorted(dataset, items, ITEMS, ["pos"], shard_size)
    joined.release()
    copies.release()
    out = str(output) if output is not None else None
    tasks = [{"index": i, "output": out, "root": str(dataset.root),
              "items": str(dataset.shard_path(items, i)), "shuffle_seed": (seed * 1_000_003 + i) if shuffle else None}
             for i in range(-(-planned // shard_size))]
    plan_hash = stable_hash({"root": str(dataset.root), "shard_size": shard_size, "shuffle": shuffle, "seed": seed,
                             "sources": sources})
    return ReshardPlan(tasks=tasks, subset_rows=subset_rows, distinct_uids=distinct, planned=planned,
                       dropped=dropped, dropped_rows=dropped_rows, plan_hash=plan_hash, sources=len(sources))


def _subset_counts(copies, dropped_rows) -> tuple[int, int, dict[str, int]]:
    """(subset rows with repeats, distinct uids, rows set aside by reason), summed by the engine."""
    totals = copies.map_batches(lambda b: pa.table({"one": pa.array([0] * b.num_rows, pa.int32()),
                                                    "copies": b.column("copies")}),
                                pa.schema([("one", pa.int32()), ("copies", pa.int64())]))
    t = totals.aggregate(["one"], {"rows": ("copies", "sum"), "uids": ("copies", "count")}).collect_small(1)
    subset_rows = int(t.column("rows")[0].as_py()) if t.num_rows else 0
    distinct = int(t.column("uids")[0].as_py()) if t.num_rows else 0
    d = dropped_rows.aggregate(["reason"], {"rows": ("copies", "sum")}).collect_small(MAX_REASONS)
    dropped = {r: int(n) for r, n in zip(d.column("reason").to_pylist(), d.column("rows").to_pylist())}
    return subset_rows, distinct, dropped


def _ordered_sources(summary: pa.Table, shuffle: bool, seed: int) -> tuple[list[list], dict[str, int], int]:
    """The source shards in write order (by name, or a seeded shuffle) as [name, rank, rows,
    digest] (what the plan hash covers), each one's offset (samples before it), and the
    samples planned in all."""
    names = summary.column("shard").to_pylist()
    if shuffle:
        order = list(range(len(names)))
        random.Random(seed).shuffle(order)
        rank = {name: order[i] for i, name in enumerate(names)}
    else:
        rank = {name: i for i, name in enumerate(names)}
    by_rank = sorted(range(len(names)), key=lambda i: rank[names[i]])
    rows = summary.column("rows").to_pylist()
    digests = summary.column("digest").to_pylist()
    offsets, planned = {}, 0
    for i in by_rank:
        offsets[names[i]] = planned
        planned += int(rows[i])
    return [[names[i], rank[names[i]], int(rows[i]), digests[i]] for i in by_rank], offsets, planned


def task_sources(task: dict) -> list[dict]:
    """An output task's sources: runs of consecutive items from one source shard, in position
    order (``{"rel", "path", "items": [[key, uid, j], ...]}``), read from its items shard."""
    if "sources" in task:
        return task["sources"]
    from curate import storage

    t = storage.read_parquet(task["items"], columns=["shard", "key", "uid", "j"])
    root = task["root"] if storage.is_uri(task["root"]) else Path(task["root"])
    sources: list[dict] = []
    for rel, key, uid, j in zip(*(t.column(c).to_pylist() for c in ("shard", "key", "uid", "j"))):
        if not sources or sources[-1]["rel"] != rel:
            sources.append({"rel": rel, "path": str(storage.join(root, rel)), "items": []})
        sources[-1]["items"].append([key, uid, int(j)])
    return sources
