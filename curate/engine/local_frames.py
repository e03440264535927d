"""Frame operations in this process: ``LocalExecutor``'s side of the frame API.

A frame is an opaque handle a job passes back to its executor: a Spark DataFrame on
``SparkExecutor`` (``curate.engine.spark_frames``), a ``pa.Table`` here. Jobs written against
these methods (ingest) run unchanged on either executor and write the same
bytes: the sharded writes below cut and encode shards exactly as ``curate.engine.spark``'s.

Everything here holds its rows in memory; ``--engine auto`` only picks this executor for
inputs under ``CURATE_LOCAL_MAX_ROWS`` (docs/engine.md), so exact dedup may sort in memory.
"""

from __future__ import annotations

from pathlib import Path

PART_FILE = "part-00000-local.parquet"  # one output file of a key-range operation (one range)


def _parquet_files(paths: list[str]) -> list[str]:
    """Files of ``paths`` (a folder: its Parquet files, hidden names left out, as Spark reads)."""
    from curate import storage

    out = []
    for raw in paths:
        if storage.is_uri(raw):
            out += storage.list_files(raw, recursive=True) if storage.is_dir(raw) else [raw]
            continue
        p = Path(raw)
        if p.is_dir():
            out += sorted(str(f) for f in p.rglob("*.parquet")
                          if not any(part.startswith(("_", ".")) for part in f.relative_to(p).parts))
        else:
            out.append(str(p))
    return out


def _first_of_each_key(frame, key: str, order_column: str):
    """``frame`` sorted by (key, order) and a mask of the first row of each key."""
    import pyarrow as pa
    import pyarrow.compute as pc

    t = frame.sort_by([(key, "ascending"), (order_column, "ascending")])
    n = t.num_rows
    if n == 0:
        return t, pa.array([], pa.bool_())
    keys = t.column(key).combine_chunks()
    later = pc.not_equal(keys.slice(1), keys.slice(0, n - 1))
    return t, pa.concat_arrays([pa.array([True]), pc.fill_null(later, True)])


class ArrowFrameOps:
    """Frame operations over Arrow tables (mixed into ``LocalExecutor``)."""

    key_ranges = 1  # exact dedup sorts all keys at once: one range

    def ui_url(self) -> str | None:
        return None

    # ------------------------------------------------------------ frames
    def read_parquet(self, paths: list[str], schema):
        """Parquet files or folders as one table with ``schema``."""
        import pyarrow as pa

        from curate.storage import read_parquet

        tables = [read_parquet(f, schema=schema) for f in _parquet_files(paths)]
        return pa.concat_tables(tables) if tables else schema.empty_table()

    def select_columns(self, frame, names: list[str]):
        return frame.select(names)

    def with_packed_long(self, frame, name: str, high: str, low: str, bits: int):
        """Add ``name`` = ``high << bits | low`` (two integers packed in one long)."""
        import pyarrow as pa
        import pyarrow.compute as pc

        hi = pc.cast(frame.column(high), pa.int64()).to_numpy()
        lo = pc.cast(frame.column(low), pa.int64()).to_numpy()
        return frame.append_column(name, pa.array((hi << bits) | lo, pa.int64()))

    def with_unpacked_long(self, frame, packed: str, high: str, low: str, bits: int):
        """Add ``high`` = ``packed >> bits`` (int32) and ``low`` = its low ``bits`` (long)."""
        import pyarrow as pa

        v = frame.column(packed).to_numpy()
        frame = frame.append_column(high, pa.array((v >> bits).astype("int32"), pa.int32()))
        return frame.append_column(low, pa.array(v & ((1 << bits) - 1), pa.int64()))

    def with_lookup(self, frame, name: str, index_column: str, values: list[str]):
        """Add ``name`` = ``values[index_column]``."""
        import pyarrow as pa
        import pyarrow.compute as pc

        return frame.append_column(name, pc.take(pa.array(values, pa.string()), frame.column(index_column)))

    def join_frames(self, left, right, on, how: str = "left", broadcast_right: bool = False):
        join_type = {"left": "left outer", "inner": "inner"}[how]
        return left.join(right, keys=on, join_type=join_type)

    def collect_frame(self, frame):
        return frame

    def unpersist(self, frame) -> None:
        pass

    # ------------------------------------------------------------ exact dedup (in memory)
    def first_by_key_ranges(self, frame, key: str, id_column: str, order_column: str, boundaries: list[str],
                            kept_dir: str) -> list[tuple[str, int]]:
        """As ``curate.engine.spark.first_by_key_ranges``, in one range: for each ``key`` the
        row with the smallest ``order_column`` is kept, written as (uid, ``order_column``) in
        key order to one file of ``kept_dir``."""
        import pyarrow as pa
        from curate.tables import write_parquet_atomic

        cols = list(dict.fromkeys([key, id_column, order_column]))
        t, first = _first_of_each_key(frame.select(cols), key, order_column)
        kept = t.filter(first)
        out = pa.table({"uid": kept.column(id_column), order_column: kept.column(order_column)})
        from curate.storage import join

        path = join(str(kept_dir), PART_FILE)  # a path or a URI
        write_parquet_atomic(out, path, shard=False)
        return [(path, out.num_rows)]

    def duplicates_by_key_ranges(self, frame, key: str, id_column: str, order_column: str, boundaries: list[str],
                                 reason: str, out_dir: str) -> None:
        """The rows ``first_by_key_ranges`` does not keep, as (uid, duplicate_of, reason,
        ``order_column``) in one file of ``out_dir``."""
        import numpy as np
        import pyarrow as pa
        from curate.tables import write_parquet_atomic

        cols = list(dict.fromkeys([key, id_column, order_column]))
        t, first = _first_of_each_key(frame.select(cols), key, order_column)
        is_first = first.to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(is_first)
        group_start = starts[np.cumsum(is_first) - 1] if len(starts) else starts
        ids = t.column(id_column).combine_chunks()
        dup_at = pa.array(np.flatnonzero(~is_first), pa.int64())
        out = pa.table({"uid": ids.take(dup_at),
                        "duplicate_of": ids.take(pa.array(group_start, pa.int64()).take(dup_at)),
                        "reason": pa.array([reason] * len(dup_at), pa.string()),
                        order_column: t.column(order_column).take(dup_at)})
        from curate.storage import join

        write_parquet_atomic(out, join(str(out_dir), PART_FILE), shard=False)

    # ------------------------------------------------------------ sorted, sharded writes
    def rank_rows(self, frame, sort_by: list[str]):
        """(``frame`` sorted by ``sort_by`` with ``_rank`` = 0..n-1; n)."""
        import pyarrow as pa

        t = frame.sort_by([(c, "ascending") for c in sort_by])
        return t.append_column("_rank", pa.array(range(t.num_rows), pa.int64())), t.num_rows

    def write_ranked_table(self, frame, dataset, table: str, schema, total: int, rows_per_shard: int,
                           skip_existing: bool = False, lookups: dict | None = None) -> dict:
        """As ``curate.engine.spark.write_ranked_table``: shard i holds ranks
        [i*rows_per_shard, (i+1)*rows_per_shard), same encoding, same bytes."""
        import pyarrow as pa
        import pyarrow.compute as pc
        from curate.tables import write_parquet_atomic

        lookups = lookups or {}
        t = frame.sort_by([("_rank", "ascending")])
        nshards = max(1, -(-total // rows_per_shard))
        from curate.storage import basename

        existing = {basename(p) for p in dataset.shards(table)} if skip_existing else set()
        keep, skipped = set(), 0
        for i in range(nshards if total else 0):
            out = dataset.shard_path(table, i)
            keep.add(basename(out))
            if basename(out) in existing:
                skipped += 1
                continue
            part = t.slice(i * rows_per_shard, rows_per_shard)
            cols = [pc.take(pa.array(lookups[n][1], pa.string()), part.column(lookups[n][0])) if n in lookups
                    else part.column(n) for n in schema.names]
            write_parquet_atomic(pa.Table.from_arrays([c.cast(schema.field(n).type) for n, c in
                                                       zip(schema.names, cols)], schema=schema), out)
        keep = dataset.finish_sharded_write(table, schema, keep, total)
        return {"rows": total, "shards": len(keep), "skipped_shards": skipped}

    def write_sorted_table(self, frame, dataset, table: str, schema, sort_by: list[str], rows_per_shard: int,
                           skip_existing: bool = False, lookups: dict | None = None) -> dict:
        """``frame`` globally sorted by ``sort_by`` as ``table`` (see ``write_ranked_table``)."""
        ranked, total = self.rank_rows(frame, sort_by)
        return self.write_ranked_table(ranked, dataset, table, schema, total, rows_per_shard, skip_existing, lookups)
