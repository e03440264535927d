"""What a reshard writes after its shards: ``_missing.parquet`` (every subset row not written,
with its reason, sorted by the workers), ``sample_ids.npy`` (the subset as DataComp's sorted
``u8,u8`` array), ``sizes.json``, and the check that every subset row is accounted for."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate import storage
from curate.errors import DatasetError
from curate.reshard.plan import DROPPED, ReshardPlan
from curate.reshard.shard_task import SPILLED
from curate.tables import Dataset, atomic_write_bytes, load_schema, write_parquet_atomic
from curate.tables.atomic import atomic_stream

MISSING_ROW_GROUP = 65536  # write_parquet_atomic's row group size: same bytes either way


def finish_outputs(ds: Dataset, executor, plan: ReshardPlan, results: list[dict], source, work: str, out,
                   scratch: Path) -> tuple[int, Counter]:
    """Write ``_missing.parquet``, ``sample_ids.npy`` and ``sizes.json`` into ``out`` after the
    shard tasks' ``results``; returns (samples written, rows not written by reason)."""
    task_missing: Counter = Counter()
    for r in results:
        task_missing.update(r["missing"])
    late = executor.frame_read([t["missing_out"] for t in plan.tasks], SPILLED).aggregate(
        ["uid", "reason"], {"copies": ("uid", "count")}).select(DROPPED.names)
    _write_missing(ds, f"{work}/missing_sorted", plan.dropped_rows.union(late),
                   storage.join(out, "_missing.parquet"))
    if not _copy_subset_records(source, plan.subset_rows, storage.join(out, "sample_ids.npy")):
        _write_sample_ids(source, scratch, storage.join(out, "sample_ids.npy"))
    sizes = {r["shard"]: r["successes"] for r in results}
    atomic_write_bytes(storage.join(out, "sizes.json"),
                       (json.dumps(sizes, indent=1, sort_keys=True) + "\n").encode())
    written = sum(sizes.values())
    not_written = Counter(plan.dropped) + task_missing
    if written + sum(not_written.values()) != plan.subset_rows:  # bookkeeping invariant
        raise DatasetError(f"reshard accounting mismatch: {written} written + {sum(not_written.values())} "
                           f"not written != {plan.subset_rows} subset rows")
    return written, not_written


def _write_missing(ds: Dataset, table: str, rows, path) -> None:
    """``_missing.parquet``: the rows sorted by (uid, reason) by the workers, then streamed into
    one file a row group at a time (the bytes of a whole-table ``write_parquet_atomic``)."""
    from curate.tables.atomic import parquet_options

    schema = load_schema("reshard_missing").conform(DROPPED.empty_table()).schema
    written = rows.write_sorted(ds, table, DROPPED, ["uid", "reason"], 1 << 40)
    if written["rows"] == 0:
        write_parquet_atomic(schema.empty_table(), path)
        return
    pending: list[pa.RecordBatch] = []
    n = 0
    with atomic_stream(path) as out:  # on a store, streamed up during the pass
        with pq.ParquetWriter(out, schema, **parquet_options(schema)) as writer:
            def flush(final: bool) -> None:
                nonlocal pending, n
                while n >= MISSING_ROW_GROUP or (final and n):
                    t = pa.Table.from_batches(pending, schema=DROPPED).combine_chunks()
                    head, rest = t.slice(0, MISSING_ROW_GROUP), t.slice(MISSING_ROW_GROUP)
                    writer.write_table(pa.Table.from_arrays(head.columns, schema=schema),
                                       row_group_size=MISSING_ROW_GROUP)
                    pending, n = rest.to_batches(), rest.num_rows

            for shard in ds.shards(table):
                for b in storage.parquet_file(shard).iter_batches(batch_size=MISSING_ROW_GROUP, columns=DROPPED.names):
                    pending.append(b.cast(DROPPED))
                    n += b.num_rows
                    flush(False)
            flush(True)


def _copy_subset_records(source, rows: int, path) -> bool:
    """``sample_ids.npy`` copied whole from the subset's own ``uids.npy`` when ``source`` is a
    curate subset's ``uids.parquet`` (server-side on one object store: no uid read or parsed on
    the driver; a subset of a billion uids is 16 GB of records). That file holds the same
    sorted records with the same header, so the bytes are the ones ``_write_sample_ids``
    writes; it is used only when the subset's manifest, the ``.npy`` header and size, and its
    first and last records agree with the Parquet file (its rows and its first and last
    uids). False otherwise: the caller converts the source."""
    import io
    import json

    from curate.subset_records import hex_uids
    from curate.tables.atomic import copy_file_atomic
    from curate.uid import DATACOMP_DTYPE

    if storage.basename(str(source)) != "uids.parquet":
        return False
    folder = str(source)[: -len("uids.parquet")].rstrip("/") or "."
    npy, manifest = storage.join(folder, "uids.npy"), storage.join(folder, "_manifest.json")
    try:
        if not (storage.is_file(npy) and storage.is_file(manifest)):
            return False
        if json.loads(storage.read_bytes(manifest)).get("count") != rows:
            return False
        head = io.BytesIO(storage.read_head(npy, 4096))
        if np.lib.format.read_magic(head) != (1, 0):
            return False
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(head)
        start = head.tell()
        if shape != (rows,) or fortran or dtype != DATACOMP_DTYPE or storage.fingerprint(npy)[2] != start + 16 * rows:
            return False
        meta = storage.parquet_file(str(source)).metadata
        if meta.num_rows != rows:
            return False
        if rows:
            col = [meta.schema.column(i).name for i in range(meta.num_columns)].index("uid")
            first = meta.row_group(0).column(col).statistics
            last = meta.row_group(meta.num_row_groups - 1).column(col).statistics
            with storage.open_random(npy) as f:
                f.seek(start)
                a = np.frombuffer(f.read(16), DATACOMP_DTYPE)
                f.seek(start + 16 * (rows - 1))
                b = np.frombuffer(f.read(16), DATACOMP_DTYPE)
            ends = hex_uids(np.concatenate([a, b])).to_pylist()
            if first is None or last is None or not first.has_min_max or ends != [first.min, last.max]:
                return False
    except (OSError, ValueError, KeyError, pa.ArrowInvalid):
        return False
    copy_file_atomic(npy, path)
    return True


def _write_sample_ids(source, work: Path, path) -> None:
    """``sample_ids.npy``: the subset's uids (with repeats) as DataComp's sorted ``u8,u8`` array,
    streamed a chunk at a time (sorted through bucket files when the source is not). A Parquet
    subset's records go through a file read back in chunks, never mapped, so the driver's memory
    does not grow with the subset."""
    from curate.subset_file import is_parquet, open_subset_array, parquet_records
    from curate.subset_records import (CHUNK_ROWS, file_chunks, first_unsorted, first_unsorted_in, sorted_chunks,
                                       write_npy_header)
    from curate.uid import DATACOMP_DTYPE

    records = work / "sample_ids.u8u8"
    if str(source).endswith(".parquet") or is_parquet(source):
        arr = parquet_records(storage.local_copy(source), records)
        n = len(arr)
        del arr  # the memory map: read back in chunks below
        if n and first_unsorted_in(file_chunks(records)) is None:
            chunks = file_chunks(records)
        else:
            chunks = sorted_chunks(np.memmap(records, DATACOMP_DTYPE, mode="r"), work / "sort") if n else iter(())
    else:
        arr, _ = open_subset_array(storage.local_copy(source))
        n = len(arr)
        chunks = (sorted_chunks(arr, work / "sort") if first_unsorted(arr) is not None else
                  (np.asarray(arr[s:s + CHUNK_ROWS]) for s in range(0, n, CHUNK_ROWS)))
    with atomic_stream(path) as f:  # on a store, streamed up during the pass
        write_npy_header(f, n)
        for c in chunks:
            f.write(np.ascontiguousarray(c).tobytes())
