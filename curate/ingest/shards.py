"""Output shards of ingest, cut from ordered parts: plain pyarrow, no Spark here.

A table's rows are the concatenation of ordered parts (files, or row ranges of files), so
shard i (exactly ``rows_per_shard`` rows, the last may be smaller) is a list of part slices
(``plan_segments``). Rejects are such a concatenation of the staged reject files. Samples are
gathered: a shard's kept keys are slices of the dedup output (in uid order), and its rows
are read from every staged samples file, each sorted by uid so that only the row groups of
the shard's uid range are read (``gather_samples_shard``). Parts and shards are paths or URIs.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.errors import DatasetError
from curate.tables import load_schema, write_parquet_atomic

Segment = tuple[int, int, int]  # (part index, first row, end row) of one part


def plan_segments(counts: list[int], rows_per_shard: int) -> list[list[Segment]]:
    """For each shard, the part slices that make it, over parts of ``counts`` rows in order."""
    shards: list[list[Segment]] = []
    current: list[Segment] = []
    room = rows_per_shard
    for part, n in enumerate(counts):
        start = 0
        while start < n:
            take = min(room, n - start)
            current.append((part, start, start + take))
            start += take
            room -= take
            if room == 0:
                shards.append(current)
                current, room = [], rows_per_shard
    if current:
        shards.append(current)
    return shards


def read_segments(paths: list[str], segments: list[Segment], columns: list[str] | None = None) -> pa.Table:
    """The rows of ``segments`` (over the part files ``paths``), in order. Only the row
    groups a slice overlaps are read: a part is often shared by several shards."""
    pieces = []
    for part, start, stop in segments:
        f = storage.parquet_file(paths[part])
        groups, first, row = [], 0, 0
        for g in range(f.metadata.num_row_groups):
            n = f.metadata.row_group(g).num_rows
            if row < stop and row + n > start:
                first = row if not groups else first
                groups.append(g)
            row += n
        pieces.append(f.read_row_groups(groups, columns=columns).slice(start - first, stop - start))
    return pa.concat_tables(pieces)


def _conform(t: pa.Table, schema: pa.Schema) -> pa.Table:
    return pa.Table.from_arrays([t.column(n).cast(schema.field(n).type) for n in schema.names], schema=schema)


def write_segments_shard(task: dict) -> dict:
    """Write shard ``task["shard"]`` of a table as the concatenation of its segments."""
    schema = load_schema(task["table"]).arrow()
    if not task["segments"]:  # an empty table is one empty shard
        write_parquet_atomic(schema.empty_table(), task["out"])
        return {"shard": task["shard"], "rows": 0}
    t = read_segments(task["parts"], [tuple(s) for s in task["segments"]], columns=schema.names)
    write_parquet_atomic(_conform(t, schema), task["out"])
    return {"shard": task["shard"], "rows": t.num_rows}


ROW_ID_BITS = 40  # row_id = file_index << 40 | source_row: 2**40 rows a file, 2**23 files


def row_ids(file_index, source_row) -> np.ndarray:
    """One int64 per input row (see ``ROW_ID_BITS``)."""
    return (pc.cast(file_index, pa.int64()).to_numpy(zero_copy_only=False) << ROW_ID_BITS) | \
        pc.cast(source_row, pa.int64()).to_numpy(zero_copy_only=False)


def gather_samples_shard(task: dict) -> dict:
    """Write samples shard ``task["shard"]``: its kept keys (uid order) are slices of the
    dedup output; its rows come from the staged samples files, read for its uid range only."""
    schema = load_schema("samples").arrow()
    if not task["segments"]:
        return write_segments_shard(task)
    keys = read_segments(task["parts"], [tuple(s) for s in task["segments"]])
    uids = keys.column("uid")
    lo, hi = uids[0].as_py(), uids[len(uids) - 1].as_py()
    wanted = keys.column("row_id")
    pieces = [storage.read_parquet(path, columns=[*schema.names, "file_index"],
                                   filters=[("uid", ">=", lo), ("uid", "<=", hi)])
              for path in task["staged"]]
    candidates = pa.concat_tables(pieces)  # the shard's rows, plus duplicates of them in its uid range
    ids = pa.array(row_ids(candidates.column("file_index").combine_chunks(),
                           candidates.column("source_row").combine_chunks()))
    at = pc.index_in(wanted, value_set=ids)  # each kept key's row, in the keys' (uid) order
    if at.null_count:
        raise DatasetError(f"samples shard {task['shard']}: {at.null_count} of {len(wanted)} kept rows not "
                           "found in the staged files (were they changed during the run?)")
    rows = candidates.take(at)
    write_parquet_atomic(_conform(rows, schema), task["out"])
    return {"shard": task["shard"], "rows": rows.num_rows}
