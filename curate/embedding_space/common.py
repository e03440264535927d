"""Plumbing shared by the embedding-space jobs: shard tasks, input restriction to a uid set,
and the two execution shapes (collect rows from shard tasks; apply a function per group),
each runnable in-process (LocalExecutor) or on Spark with identical results."""

from __future__ import annotations

import functools
import json
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate import storage
from curate.errors import DatasetError
from curate.tables import Dataset, write_parquet_atomic

RowsFn = Callable[[dict], Iterator[pa.RecordBatch]]


def embeddings_table(dataset: Dataset, model_id: str) -> str:
    name = f"embeddings/{model_id}"
    if not dataset.has_table(name):
        have = [t for t in dataset.tables() if t.startswith("embeddings/")] if dataset.exists() else []
        raise DatasetError(f"table {name} not found in {dataset.root} (embeddings tables: {have or 'none'}; "
                           f"run `curate embed` first)")
    from curate.embedding_space.vectors import check_embedding_shards

    check_embedding_shards(dataset.shards(name))  # one dim across shards, named shard if not
    return name


def default_model_id(dataset: Dataset) -> str:
    have = [t.split("/", 1)[1] for t in dataset.tables() if t.startswith("embeddings/")]
    if len(have) != 1:
        raise DatasetError(f"{dataset.root}: pass --model (embeddings tables: {have or 'none'})")
    return have[0]


def shard_tasks(dataset: Dataset, table: str, **extra) -> list[dict]:
    return [dict(root=str(dataset.root), table=table, index=i, path=str(p), **extra)
            for i, p in enumerate(dataset.shards(table))]


# ---------------------------------------------------------------- input restriction
UID_SCHEMA = pa.schema([("uid", pa.string())])


class UidList:
    """uids a run is restricted to, as a Parquet file with a ``uid`` column (a subset's
    ``uids.parquet``) or a folder of such shards (a recipe's uid table), that the engine
    reads and joins against; never loaded on the driver.

    ``distinct``: how many uids it holds when each is known to appear once (then the engine
    joins it as read, without a distinct pass); None when that is not known. Given by whoever
    counted them (a recipe's uid table, a job's own uid file), else read from a curate subset's
    manifest (``subset_distinct``)."""

    def __init__(self, path: str | Path, distinct: int | None = None, source: str | None = None):
        self.path = str(path)
        self._distinct = distinct
        self.source = source  # the --subset as the user named it (a subset name, a file)

    @functools.cached_property
    def distinct(self) -> int | None:
        return self._distinct if self._distinct is not None else subset_distinct(self.path)

    def __len__(self) -> int:  # rows, repeats included (as the list it stands for)
        return sum(storage.parquet_file(f).metadata.num_rows for f in uid_files(self.path))


def input_record(input_uids) -> dict | None:
    """What a run was restricted to, for its manifest and its subset's (``params.input_subset``):
    the ``--subset`` as named and its uid rows; None for the whole pool."""
    if input_uids is None:
        return None
    if isinstance(input_uids, UidList):
        return {"subset": input_uids.source or input_uids.path, "uids": len(input_uids)}
    return {"uids": len(input_uids)}  # a library caller's list


def subset_distinct(path: str) -> int | None:
    """The uid count of a curate subset's ``uids.parquet`` whose ``_manifest.json`` counts as many
    distinct uids as rows, as many as the file's footer holds; None for anything else (a
    subset with repeats, a manifest that no longer describes the file, a file from elsewhere)."""
    if not path.endswith("/uids.parquet") or storage.is_dir(path):
        return None
    manifest = path[:-len("uids.parquet")] + "_manifest.json"
    if not storage.exists(manifest):
        return None
    m = json.loads(storage.read_bytes(manifest))
    rows = storage.parquet_file(path).metadata.num_rows
    return rows if m.get("count") == m.get("distinct") == rows else None


def uid_files(path) -> list[str]:
    """The Parquet files of a uid restriction: the file itself, or a folder's shards."""
    if storage.is_dir(path):
        return [f for f in storage.list_files(path) if f.endswith(".parquet")]
    return [str(path)]


def write_uid_filter(dataset: Dataset, run: str, uids) -> UidList | None:
    """The uids a run is restricted to, stored where every task can read them; None = no filter."""
    if uids is None:
        return None
    if isinstance(uids, UidList):
        return uids
    arr = uids if isinstance(uids, (pa.Array, pa.ChunkedArray)) else pa.array(list(uids), pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = pc.unique(arr.cast(pa.string()))
    path = dataset.path(f"_tmp/{run}/input_uids.parquet")
    write_parquet_atomic(pa.table({"uid": arr}), path)
    return UidList(path, distinct=len(arr))


def uid_frame(executor, restriction: UidList | None):
    """The distinct uids of a stored input restriction as an engine frame; None = no filter.
    One known to hold each uid once (``UidList.distinct``) is read as it is: no distinct pass
    (a shuffle of every uid on Spark)."""
    if restriction is None:
        return None
    frame = executor.frame_read(uid_files(restriction.path), UID_SCHEMA)
    return frame if restriction.distinct is not None else frame.distinct()


def restricted_frame(executor, tasks: list[dict], fn: RowsFn, schema: pa.Schema, uids=None):
    """Rows ``fn`` yields for the tasks, restricted to the ``uids`` frame by a semi-join."""
    frame = executor.frame_from_tasks(tasks, fn, schema)
    return frame.semi_join(uids) if uids is not None else frame


def subset_uids(dataset: Dataset, subset: str | None):
    """The input restriction ``--subset`` names, as a ``UidList`` the engine joins against: the
    subset's Parquet file, or for a DataComp ``.npy`` / raw subset file its uids streamed into
    ``_tmp/subset-files/`` (named after the source path, size and time)."""
    if not subset:
        return None
    from curate.subset import read_subset, subset_dir
    from curate.subset_file import check_uid_parquet, is_uid_parquet, write_uid_table

    src = subset if (storage.is_file(subset) or storage.exists(storage.join(subset, "uids.parquet"))) else None
    if src is None:
        src = storage.join(subset_dir(dataset, subset), "uids.parquet")
        if not storage.exists(src):
            read_subset(dataset, subset)  # its error: subset not found
    if storage.is_dir(src):
        src = storage.join(src, "uids.parquet")
    if is_uid_parquet(src):
        beside = str(src)[:-len("uids.parquet")] + "_manifest.json" if str(src).endswith("uids.parquet") else None
        if beside is None or not storage.exists(beside):
            check_uid_parquet(src)  # a file from elsewhere: its uids are checked before any work
        return UidList(src, source=subset)
    import hashlib

    key = hashlib.sha256(repr(storage.fingerprint(src)).encode()).hexdigest()[:16]
    out = dataset.path(f"_tmp/subset-files/{Path(str(src)).stem}-{key}.parquet")
    rows, unique = write_uid_table(storage.local_copy(src), out)
    return UidList(out, distinct=rows if unique else None, source=subset)


def missing_uids(wanted: pa.Array | None, present: pa.Array) -> pa.Array:
    """uids of the input restriction that are absent from the table the stage reads."""
    if wanted is None:
        return pa.array([], pa.string())
    wanted = pc.unique(wanted)
    return wanted.filter(pc.invert(pc.is_in(wanted, value_set=present)))


# ---------------------------------------------------------------- execution shapes
def collect_rows(executor, tasks: list[dict], fn: RowsFn, schema: pa.Schema, description: str = "") -> pa.Table:
    """Concatenate the batches ``fn`` yields for every task (in-process or as Spark tasks)."""
    if not tasks:
        return schema.empty_table()
    return _counted(executor, "collect_rows", _cast(executor.collect_task_rows(tasks, fn, schema), schema))


def grouped_apply(executor, tasks: list[dict], rows_fn: RowsFn, row_schema: pa.Schema, key: str,
                  group_fn: Callable[[pa.Table], pa.Table], out_schema: pa.Schema) -> pa.Table:
    """Rows from shard tasks, grouped by ``key``, ``group_fn`` applied to each whole group.

    Spark: a shuffle by ``key`` and a grouped ``applyInArrow``. Local: sort and slice. Group
    results never depend on how rows were partitioned (callers order rows within a group).
    """
    if not tasks:
        return out_schema.empty_table()
    return _counted(executor, "grouped_apply",
                    _cast(executor.grouped_apply(tasks, rows_fn, row_schema, key, group_fn, out_schema), out_schema))


def _counted(executor, call: str, t: pa.Table) -> pa.Table:
    """``t``, its rows counted as rows on the driver (``executor.driver_counter``)."""
    counter = getattr(executor, "driver_counter", None)
    if counter is not None:
        counter.note(call, t.num_rows)
    return t


def _cast(t: pa.Table, schema: pa.Schema) -> pa.Table:
    cols = []
    for f in schema:
        c = t.column(f.name)
        cols.append(c.cast(f.type) if c.type != f.type else c)
    return pa.Table.from_arrays(cols, schema=schema)


def cleanup_tmp(ds: Dataset, run: str) -> None:
    """Remove a run's ``_tmp/<run>`` files (and the folder when empty); on a store, the prefix."""
    d = ds.path(f"_tmp/{run}")
    if storage.is_uri(d):
        storage.remove_tree(d)
        return
    if d.is_dir():
        for p in d.iterdir():
            if p.is_file():
                p.unlink()
        try:
            os.rmdir(d)
        except OSError:
            pass


def write_json(path: Path, obj) -> None:
    from curate.tables import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())


# ---------------------------------------------------------------- deterministic sampling
def uid_hash(uids, seed: int = 0) -> np.ndarray:
    """A 63-bit int64 per uid, uniform and independent of row order (splitmix64 of the uid's
    bits; 63 bits because Spark has no unsigned types)."""
    hi = np.array([int(u[:16], 16) for u in uids], dtype=np.uint64)
    lo = np.array([int(u[16:32] or "0", 16) for u in uids], dtype=np.uint64)
    return mix_uid_words(hi, lo, seed)


def mix_uid_words(hi: np.ndarray, lo: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of a uid's two 64-bit words, as a non-negative int64 (``uid_hash``'s core)."""
    with np.errstate(over="ignore"):
        z = hi ^ (lo * np.uint64(0x9E3779B97F4A7C15)) ^ np.uint64((seed * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(1)).astype(np.int64)
