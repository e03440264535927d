"""A subset written from a sorted table with its pass shared out among the workers.

Every selection job ends by streaming its kept uids from the sorted ``decisions/<run>`` into
``subsets/<name>`` (``uids.parquet`` and DataComp's ``uids.npy``, one file each). Done on the
driver alone that pass reads every decision row, checks and converts every kept uid: ~100-150
ns a decision row here, 20-30 minutes at DataComp xlarge's 12.8B. Where the executor runs many
tasks at once (``Executor.task_slots`` >= ``PARTS_MIN_SLOTS``: a cluster, a large machine) and
the table has several shards, one task a shard does
the reading, the checks and the conversion instead: it writes its shard's kept uids as a
Parquet part and their DataComp records as a raw ``.bin`` part under ``_tmp/``, and returns
one summary. The driver then only appends the parts in order: the Parquet part's uids into
``UidRowGroups`` (so the row groups, and the bytes, equal the one-pass write's) and the records
copied as bytes. What stays serial is then proportional to the kept uids, not the decisions,
and is mostly Parquet's encoding of the one ``uids.parquet`` (bench/selection_finish.py, 4-8M
decisions: 46-68 ns a decision row at 30% kept, 107-120 at 70%, against 98-118 and 139-153 for
the one pass; docs/scale-history.md, session 25).

A uid whose rows straddle two shards (a multi-stage table: one row per stage, a uid kept only
if every stage kept it) is left out of both parts; each task returns its first and last
uid's partial count, and the driver settles them in order.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.subset import (checked_records, distinct_records, kept_runs, sorted_uids_from_table, subset_files,
                           write_subset_manifest, write_subset_sorted)
from curate.tables import Dataset, load_schema
from curate.uid import DATACOMP_DTYPE

PARTS_MIN_SHARDS = 2  # a one-shard table has nothing to share out: the driver's one pass is the same work
# The tasks redo the one pass's reading and checking, and write parts the driver reads back: on
# a few cores (Spark local mode on a laptop, 2-core CI) the one pass is faster (8M decisions on
# local[2]: 0.8-1.2 s, against 1.7-2.8 s from parts). The tasks took 1.4-2.0 s on 2 slots; on
# this many they take a quarter of that or less, and the driver's own part is 0.46-0.73x of the
# one pass (30% and 70% kept): about even here, ahead with every slot more.
PARTS_MIN_SLOTS = 8
COPY_BLOCK = 8 << 20


def write_subset_from_table(executor, dataset: Dataset, name: str, table: str, kept_column: str | None,
                            count: int, manifest: dict | None = None, stages: int = 1) -> Path | str:
    """``subsets/<name>`` from ``table`` sorted by uid: the rows whose ``kept_column`` is true
    (every row when None), or with ``stages`` > 1 (rows sorted by uid then stage) the uids every
    stage kept; ``count`` uids announced. The same bytes whichever way it is written."""
    one_pass = executor is None or getattr(executor, "task_slots", 1) < PARTS_MIN_SLOTS
    shards = [] if one_pass else dataset.shards(table)  # listed only where the parts may be used
    if len(shards) < PARTS_MIN_SHARDS:
        return write_subset_sorted(dataset, name, sorted_uids_from_table(dataset, table, kept_column, stages),
                                   count, manifest)
    from curate.storage import remove_tree

    tmp = f"_tmp/subset-parts-{name}"
    remove_tree(dataset.table_dir(tmp))  # a killed run's parts are never read
    try:
        tasks = [{"root": str(dataset.root), "shard": str(s), "index": i, "kept_column": kept_column, "stages": stages, "name": name, "tmp": tmp}
                 for i, s in enumerate(shards)]
        parts = executor.map_tasks(tasks, kept_uid_part, "subset parts")
        return _assemble(dataset, name, tmp, parts, count, manifest, stages)
    finally:
        remove_tree(dataset.table_dir(tmp))


def part_paths(dataset: Dataset, tmp: str, index: int) -> tuple:
    """(Parquet part, records part) of shard ``index``."""
    return dataset.shard_path(f"{tmp}/uids", index), storage.join(dataset.path(f"{tmp}/records"), f"part-{index:05d}.bin")


def kept_uid_part(task: dict) -> dict:
    """One shard's kept uids (a worker task): checked, written as a Parquet part and a records
    part (when there are any); returns their count, their first and last records, their
    distinct uids, and for a multi-stage table the partial counts of the shard's first and last
    uid (``head``, ``tail``: [uid, kept rows]), which are not in the parts."""
    from curate.tables.atomic import atomic_write_bytes, write_parquet_atomic

    ds, name, stages = Dataset(task["root"]), task["name"], task["stages"]
    cols = ["uid"] + ([task["kept_column"]] if task["kept_column"] else [])
    t = storage.read_parquet(task["shard"], columns=cols)
    uid = t.column("uid").combine_chunks().cast(pa.string())
    out = {"index": task["index"], "rows": 0, "distinct": 0, "first": None, "last": None, "head": None, "tail": None}
    if task["kept_column"] is None:
        kept_uids = uid
    else:
        kept = pc.fill_null(t.column(task["kept_column"]).combine_chunks(), False)
        if stages == 1:
            kept_uids = uid.filter(kept)
        else:
            kept_uids, out["head"], out["tail"] = _whole_groups(uid, kept, stages)
    del t
    if len(kept_uids):
        records = checked_records(kept_uids, name, None)
        parquet, raw = part_paths(ds, task["tmp"], task["index"])
        write_parquet_atomic(pa.table([kept_uids], schema=load_schema("subset").arrow()), parquet)
        atomic_write_bytes(raw, records.tobytes(), shard=False)
        out.update(rows=len(kept_uids), distinct=distinct_records(records, None),
                   first=records[0].tolist(), last=records[-1].tolist())
    return out


def _whole_groups(uid: pa.Array, kept: pa.Array, stages: int) -> tuple[pa.Array, list, list]:
    """The uids of runs of equal uids every stage kept (``kept`` rows == ``stages``), leaving out
    the shard's first and last runs, which may go on in the shards beside it: those come back
    as [uid, kept rows] (the same run twice when the shard holds one uid)."""
    starts, sums = kept_runs(uid, kept)
    if not len(starts):
        return uid.slice(0, 0), None, None
    head, tail = [uid[int(starts[0])].as_py(), int(sums[0])], [uid[int(starts[-1])].as_py(), int(sums[-1])]
    inner = starts[1:-1][sums[1:-1] == stages]
    return uid.take(pa.array(inner, pa.int64())), head, tail


def _assemble(dataset: Dataset, name: str, tmp: str, parts: list[dict], count: int, manifest: dict | None,
              stages: int) -> Path | str:
    """The driver's part: the parts appended in shard order, the straddling uids settled
    between them."""
    with subset_files(dataset, name, count) as (npy, groups):
        out = _Appender(dataset, tmp, name, npy, groups)
        pending: list | None = None  # [uid, kept rows] of a run that may go on in the next shard
        for p in parts:
            if p["head"] is not None:  # a multi-stage table's shard: its first and last runs
                if pending is not None and pending[0] == p["head"][0]:
                    pending[1] += p["head"][1]
                else:
                    out.settle(pending, stages)
                    pending = list(p["head"])
                if p["head"][0] == p["tail"][0]:
                    continue  # the shard is one run, which may go on in the next shard
                out.settle(pending, stages)  # the next run starts in this shard: the first is over
                pending = list(p["tail"])
            out.part(p)  # the shard's inner runs: before its last run, after its first
        out.settle(pending, stages)
    return write_subset_manifest(dataset, name, manifest, groups.rows, out.distinct)


class _Appender:
    """Appends to a subset's two files in order, checking the order across parts on their first
    and last records and counting distinct uids."""

    def __init__(self, dataset: Dataset, tmp: str, name: str, npy, groups):
        self.dataset, self.tmp, self.name, self.npy, self.groups = dataset, tmp, name, npy, groups
        self.prev: tuple[int, int] | None = None  # the last record written
        self.distinct = 0

    def _follows(self, first, last, distinct: int) -> None:
        from curate.errors import DatasetError

        if self.prev is not None and tuple(first) < self.prev:
            raise DatasetError(f"subset {self.name!r}: uids not in sorted order")
        self.distinct += distinct - int(self.prev is not None and tuple(first) == self.prev)
        self.prev = tuple(last)

    def settle(self, run: list | None, stages: int) -> None:
        """A run that is over: its uid is kept if every stage kept it."""
        if run is None or run[1] != stages:
            return
        uid = pa.array([run[0]], pa.string())
        rec = checked_records(uid, self.name, None)
        self._follows(rec[0].tolist(), rec[0].tolist(), 1)
        self.npy.write(rec.tobytes())
        self.groups.add(uid)

    def part(self, p: dict) -> None:
        """One shard's part: its Parquet uids into the row groups, its records copied as bytes."""
        from curate.errors import DatasetError

        if not p["rows"]:
            return
        self._follows(p["first"], p["last"], p["distinct"])
        parquet, raw = part_paths(self.dataset, self.tmp, p["index"])
        rows_before, bytes_before = self.groups.rows, self.npy.bytes
        for b in _part_batches(parquet):
            self.groups.add(b.column(0))
        with storage.open_input_stream(raw) as f:
            shutil.copyfileobj(f, self.npy, COPY_BLOCK)
        rows, records = self.groups.rows - rows_before, (self.npy.bytes - bytes_before) // DATACOMP_DTYPE.itemsize
        if rows != p["rows"] or records != p["rows"]:
            raise DatasetError(f"{parquet}: {rows} uids and {records} records, {p['rows']} written")


def _part_batches(parquet):
    """A part's uid batches, one row group at a time (a part on a store: read ahead whole,
    ~17 bytes a uid, at most one decisions shard's kept uids)."""
    import pyarrow.parquet as pq

    src = storage.open_input(parquet)
    try:
        yield from pq.ParquetFile(src, pre_buffer=storage.is_uri(parquet)).iter_batches(batch_size=65536,
                                                                                       use_threads=False)
    finally:
        if src is not parquet:
            src.close()
