"""Subsets: a sorted uid list, the one contract every selection step produces.

A subset named NAME lives at ``DATASET/subsets/NAME/``:
- ``uids.parquet``: one ``uid`` column, sorted (the ``subsets_NAME`` SQL view),
- ``uids.npy``: the same uids as DataComp's sorted ``u8,u8`` array, so DataComp's
  resharder (and ours) accept it,
- ``_manifest.json``: how it was made (stage, parameters, counts, parent subset).
A uid may appear more than once (upsampling); the resharder writes it that many times.
"""

from __future__ import annotations

import json
from collections import deque
from contextlib import contextmanager
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterable, Iterator, Self

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.errors import DatasetError
from curate.names import check_name
from curate.subset_records import NotAUid, records_from_hex
from curate.tables import Dataset, atomic_write_bytes, load_schema
from curate.uid import DATACOMP_DTYPE


def subset_dir(dataset: Dataset, name: str) -> Path | str:
    """The subset's folder: a ``Path``, or a URI string for a dataset on object storage."""
    check_name(name, "subset name", reserved=False)
    return dataset.path(f"subsets/{name}")


def write_subset(dataset: Dataset, name: str, uids: Iterable[str] | pa.Array | pa.ChunkedArray,
                 manifest: dict | None = None) -> Path:
    """Write a subset (sorted uids, Parquet + DataComp .npy + manifest) from uids the driver
    holds; returns its folder. Jobs over a pool use ``write_subset_sorted`` instead."""
    if isinstance(uids, (pa.Array, pa.ChunkedArray)):
        arr = uids.cast(pa.string())
    else:
        arr = pa.array(list(uids), pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if arr.null_count:
        raise DatasetError(f"subset {name!r}: {arr.null_count} null uids")
    arr = arr.take(pc.array_sort_indices(arr))
    return write_subset_sorted(dataset, name, [arr], len(arr), manifest)


SUBSET_ROW_GROUP = 65536  # write_parquet_atomic's row group size: same bytes either way
WRITES_AHEAD = 2  # row groups handed to the Parquet encoding thread and not yet written
READ_AHEAD_BATCHES = 8  # on a store: 65,536-row batches of (uid, kept) read ahead by Arrow's threads (~2.5 MB each)


class UidRowGroups:
    """A subset's ``uids.parquet`` (``where``: a path, or a binary writer such as
    ``atomic_stream``'s) from uids appended in order, in row groups of exactly
    ``SUBSET_ROW_GROUP`` rows whatever the chunks (so the bytes equal a whole-array write).
    Parquet's encoding (~40% of a subset write) runs in one thread beside the caller's reading
    and checking of its next chunks (both release the GIL); one thread keeps the row groups in
    order; at most ``ahead`` row groups wait. A context manager: ``finish()`` completes the file,
    an error stops the thread."""

    def __init__(self, where, ahead: int = WRITES_AHEAD):
        import pyarrow.parquet as pq

        from curate.tables.atomic import parquet_options

        self.schema = load_schema("subset").arrow()
        self._writer = pq.ParquetWriter(where, self.schema, **parquet_options(self.schema))
        self._encoder = ThreadPoolExecutor(max_workers=1, thread_name_prefix="subset-parquet")
        self._writes: deque = deque()
        self._pending: list[pa.Array] = []
        self._pending_rows = self.rows = 0
        self._ahead = ahead

    def add(self, uids: pa.Array) -> None:
        self._pending.append(uids)
        self._pending_rows += len(uids)
        self.rows += len(uids)
        self._flush(final=False)

    def _flush(self, final: bool) -> None:
        while self._pending_rows >= SUBSET_ROW_GROUP or (final and self._pending_rows):
            whole = pa.concat_arrays(self._pending) if len(self._pending) > 1 else self._pending[0]
            head = whole.slice(0, SUBSET_ROW_GROUP)
            self._writes.append(self._encoder.submit(self._writer.write_table,
                                                     pa.Table.from_arrays([head], schema=self.schema),
                                                     row_group_size=SUBSET_ROW_GROUP))
            while len(self._writes) > self._ahead:
                self._writes.popleft().result()
            rest = whole.slice(len(head))
            self._pending, self._pending_rows = ([rest] if len(rest) else []), len(rest)

    def finish(self) -> None:
        self._flush(final=True)
        while self._writes:
            self._writes.popleft().result()
        if self.rows == 0:
            self._writer.write_table(self.schema.empty_table())
        self._writer.close()
        self._encoder.shutdown()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind, value, tb) -> None:
        if kind is not None:  # the file is discarded by the caller; stop the thread
            self._encoder.shutdown(wait=True, cancel_futures=True)
            self._writer.close()


def write_subset_sorted(dataset: Dataset, name: str, chunks: Iterable[pa.Array], count: int,
                        manifest: dict | None = None) -> Path:
    """Write a subset from ``chunks`` of uids already in sorted order (e.g. streamed from the
    sorted shards a job's workers wrote), ``count`` uids in all. One chunk in memory at a
    time: ``uids.parquet`` gets row groups of exactly ``SUBSET_ROW_GROUP`` rows
    (``UidRowGroups``) and ``uids.npy`` its records as they come, so the bytes equal a
    whole-array write."""
    distinct = 0
    prev: tuple[int, int] | None = None  # the last record written
    with subset_files(dataset, name, count) as (npy, groups):
        for chunk in chunks:
            chunk = chunk.combine_chunks() if isinstance(chunk, pa.ChunkedArray) else chunk
            chunk = chunk.cast(pa.string())
            if len(chunk) == 0:
                continue
            # records straight from Arrow's buffer (no Python string per uid, no re-sort:
            # 55% of a subset write before); order and repeats checked on them
            records = checked_records(chunk, name, prev)
            distinct += distinct_records(records, prev)
            prev = records[-1].tolist()
            npy.write(records.tobytes())
            groups.add(chunk)
    return write_subset_manifest(dataset, name, manifest, groups.rows, distinct)


@contextmanager
def subset_files(dataset: Dataset, name: str, count: int) -> Iterator[tuple]:
    """(``uids.npy`` writer past its header, ``UidRowGroups`` of ``uids.parquet``) of subset
    ``name`` announced to hold ``count`` uids; both published when the block ends with
    ``count`` uids in each, neither on an error. On a store both go up while they are written
    (no local copy)."""
    from curate.tables.atomic import atomic_stream

    d = subset_dir(dataset, name)
    with atomic_stream(storage.join(d, "uids.parquet")) as pout, atomic_stream(storage.join(d, "uids.npy")) as npy:
        records = _CountedWriter(npy)
        with UidRowGroups(pout) as groups:
            header = np.lib.format.header_data_from_array_1_0(np.empty(0, dtype=DATACOMP_DTYPE))
            header["shape"] = (count,)
            np.lib.format.write_array_header_1_0(npy, header)
            yield records, groups
            groups.finish()
        if groups.rows != count or records.bytes != count * DATACOMP_DTYPE.itemsize:
            raise DatasetError(f"subset {name!r}: {groups.rows} uids written, {count} announced")


class _CountedWriter:
    """A binary writer counting what went through it (the records after ``uids.npy``'s header)."""

    def __init__(self, out):
        self.out, self.bytes = out, 0

    def write(self, data) -> None:
        self.bytes += memoryview(data).nbytes
        self.out.write(data)


def write_subset_manifest(dataset: Dataset, name: str, manifest: dict | None, rows: int, distinct: int):
    """The subset's ``_manifest.json``: how it was made, its uids (``count``) and distinct uids."""
    d = subset_dir(dataset, name)
    meta = dict(manifest or {})
    meta.setdefault("name", name)
    meta["count"] = rows
    meta["distinct"] = distinct
    for key, entries in _still_linked(dataset, name).items():
        meta.setdefault(key, entries)
    atomic_write_bytes(storage.join(d, "_manifest.json"), (json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n").encode())
    return d


LINKED = ("trainings", "evaluations")  # what later commands record in a subset's manifest


def _still_linked(dataset: Dataset, name: str) -> dict[str, list]:
    """The trainings and evaluations of the subset's earlier manifest that were made from the
    uids it holds now (their recorded ``subset_fingerprint`` is the new ``uids.parquet``'s): a
    rerun writing the same uids (a cached recipe, the demo again) keeps them; other uids drop
    them, since those models were not trained on this subset."""
    try:
        old = read_subset_manifest(dataset, name)
    except (OSError, ValueError):  # no readable earlier manifest: nothing to keep
        return {}
    if not any(old.get(k) for k in LINKED):
        return {}
    from curate.tables.fingerprint import table_fingerprint

    now = table_fingerprint(dataset, f"subsets/{name}")
    return {k: kept for k in LINKED
            if (kept := [e for e in old.get(k, []) if isinstance(e, dict) and e.get("subset_fingerprint") == now])}


def distinct_records(records: np.ndarray, prev: tuple[int, int] | None) -> int:
    """Distinct uids among sorted ``records`` that the record before them (``prev``) is not."""
    hi, lo = records["f0"], records["f1"]
    new = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    return int(new.sum()) + int(prev is None or tuple(records[0].tolist()) != tuple(prev))


def checked_records(chunk: pa.Array, name: str, prev: tuple[int, int] | None) -> np.ndarray:
    """The chunk's uids as DataComp records, once each is a uid and all follow ``prev`` (the
    record before) in order. For 32-char lowercase hex the records' (high, low) order is the
    strings' order."""
    if chunk.null_count:
        raise DatasetError(f"subset {name!r}: {chunk.null_count} null uids")
    try:
        records = records_from_hex(chunk, checked=True)
    except NotAUid as e:
        raise DatasetError(f"subset {name!r}: {chunk[e.row].as_py()!r} is not a 32-char lowercase hex uid") from None
    hi, lo = records["f0"], records["f1"]
    down = (hi[1:] < hi[:-1]) | ((hi[1:] == hi[:-1]) & (lo[1:] < lo[:-1]))
    if (prev is not None and tuple(records[0].tolist()) < tuple(prev)) or bool(down.any()):
        raise DatasetError(f"subset {name!r}: uids not in sorted order")
    return records


def sorted_uids_from_table(dataset: Dataset, table: str, kept_column: str | None = "kept",
                           stages: int = 1) -> Iterator[pa.Array]:
    """The uids of a table sorted by uid (e.g. ``decisions/<run>``), streamed one batch at a
    time: rows whose ``kept_column`` is true, or with ``stages`` > 1 (rows sorted by uid then
    stage, one per stage), the uids whose every stage kept them."""
    cols = ["uid"] + ([kept_column] if kept_column else [])
    carry_uid, carry_n = None, 0  # a uid whose rows span a batch boundary
    # on a store Arrow's threads read and decode the next batches beside the caller's checks
    # and writes, that many ranged reads in flight (a local table is read a row group at a time)
    for b in dataset.iter_batches(table, cols, 65536, READ_AHEAD_BATCHES):
        uid = b.column(0)
        if kept_column is None:
            yield uid
            continue
        kept = pc.fill_null(b.column(1), False)
        if stages == 1:
            yield uid.filter(kept)
            continue
        # rows of one uid are adjacent: count kept rows per run of equal uids
        starts, sums = kept_runs(uid, kept)
        if not len(starts):
            continue
        firsts = uid.take(pa.array(starts, pa.int64()))
        if carry_uid is not None and firsts[0].as_py() == carry_uid:
            sums[0] += carry_n
        elif carry_uid is not None and carry_n == stages:
            yield pa.array([carry_uid], pa.string())
        carry_uid, carry_n = firsts[-1].as_py(), int(sums[-1])
        done = sums[:-1] == stages
        if done.any():
            yield firsts.slice(0, len(firsts) - 1).filter(pa.array(done))
    if stages > 1 and carry_uid is not None and carry_n == stages:
        yield pa.array([carry_uid], pa.string())


def kept_runs(uid: pa.Array, kept: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(first row, kept rows) of each run of equal uids in ``uid`` (sorted by uid; ``kept`` with
    no nulls): a multi-stage table's rows of one uid, one per stage."""
    from curate.engine.frame import first_of_runs

    starts = np.flatnonzero(first_of_runs(uid) == np.arange(len(uid)))
    k = kept.to_numpy(zero_copy_only=False).astype(np.int64)
    return starts, (np.add.reduceat(k, starts) if len(starts) else np.zeros(0, np.int64))


def read_subset_array(path_or_dataset: str | Path | Dataset, name: str | None = None) -> pa.Array:
    """``read_subset`` as an Arrow string array (no Python list of the uids for a Parquet subset)."""
    p = _subset_file(path_or_dataset, name)
    if str(p).endswith(".parquet") and storage.exists(p):
        try:
            return storage.read_parquet(p, columns=["uid"]).column("uid").combine_chunks().cast(pa.string())
        except (pa.ArrowInvalid, KeyError, OSError) as e:
            raise DatasetError(f"{p}: not a subset Parquet with a uid column ({e})") from None
    return pa.array(read_subset(path_or_dataset, name), pa.string())


def read_subset(path_or_dataset: str | Path | Dataset, name: str | None = None,
                shown: str | None = None) -> list[str]:
    """uids of a subset: a subset folder, a ``uids.parquet``, a DataComp subset file (``.npy``
    or raw ``u8,u8`` records, told apart by content as DataComp's resharder does; sorted, with
    a warning, when it is not), or (dataset, name). ``shown``: the name a warning gives the file."""
    p = _subset_file(path_or_dataset, name)
    if not storage.exists(p):
        raise DatasetError(f"subset not found: {p}")
    from curate.subset_file import is_parquet

    if storage.is_uri(p) and not str(p).endswith(".parquet") and not is_parquet(p):
        # a DataComp .npy on a store: streamed to the input cache, checked like a local one
        return read_subset(storage.local_copy(p), shown=str(p))
    if not str(p).endswith(".parquet") and not is_parquet(p):
        from curate.progress import info
        from curate.subset_file import open_subset_array
        from curate.subset_records import first_unsorted, hex_uids, sort_records, unsorted_warning

        arr = np.array(open_subset_array(p)[0])
        bad = first_unsorted(arr)
        if bad is not None:
            info(unsorted_warning(shown or p, bad))
            arr = sort_records(arr)
        return hex_uids(arr).to_pylist()
    try:
        return storage.read_parquet(p, columns=["uid"]).column("uid").to_pylist()
    except (pa.ArrowInvalid, KeyError, OSError) as e:
        raise DatasetError(f"{p}: not a subset Parquet with a uid column ({e})") from None


def _subset_file(path_or_dataset, name: str | None):
    """The subset file named: (dataset, name)'s ``uids.parquet``, a folder's, or the file given."""
    p = subset_dir(path_or_dataset, name or "") if isinstance(path_or_dataset, Dataset) else path_or_dataset
    if not storage.is_uri(p):
        p = Path(p)
    return storage.join(p, "uids.parquet") if storage.is_dir(p) else p


def read_subset_manifest(dataset: Dataset, name: str) -> dict:
    p = storage.join(subset_dir(dataset, name), "_manifest.json")
    return json.loads(storage.read_bytes(p)) if storage.exists(p) else {}


def list_subsets(dataset: Dataset) -> list[str]:
    if dataset.remote:
        return sorted(t.split("/", 1)[1] for t in dataset.tables() if t.startswith("subsets/") and t.count("/") == 1)
    d = dataset.root / "subsets"
    if not d.is_dir():
        return []
    return sorted(p.name for p in d.iterdir() if (p / "uids.parquet").exists())


def append_subset_manifest(dataset: Dataset, name: str, key: str, entry: dict, replace_on: str | None = None) -> dict:
    """Append ``entry`` to the list ``key`` of a subset's ``_manifest.json`` (e.g. the
    trainings and evaluations made from it). With ``replace_on``, an earlier entry with the
    same value of that field is replaced instead of kept. Returns the updated manifest."""
    d = subset_dir(dataset, name)
    p = storage.join(d, "_manifest.json")
    if not storage.is_dir(d):
        raise DatasetError(f"subset {name!r} not found in {dataset.root}")
    meta = json.loads(storage.read_bytes(p)) if storage.exists(p) else {"name": name}
    items = [e for e in meta.get(key, [])
             if replace_on is None or e.get(replace_on) != entry.get(replace_on)]
    items.append(entry)
    meta[key] = items
    atomic_write_bytes(p, (json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n").encode())
    return meta
