"""Spark's sorted sharded writes: global row ranks computed in the JVM (``rank_rows``), then
exact-size shards written by pyarrow in the workers, committed atomically, resumable
(``write_ranked_table``, ``write_sorted_table``). Same rows, same bytes on every executor.
Part of ``curate.engine.spark``."""

from __future__ import annotations

import pyarrow as pa

from curate.engine.spark_session import _StageProgress
from curate.storage import apply_worker_env, basename, worker_env
from curate.tables import Dataset, write_parquet_atomic

_LOW33 = (1 << 33) - 1  # monotonically_increasing_id: partition index << 33 | row index


def rank_rows(df, sort_by: list[str], partitions: int | None = None, unique: str | None = None):
    """(``df`` with ``_rank`` = 0..n-1 in global ``sort_by`` order, persisted; n).

    Runs in the JVM, no Python pass: range partitions sorted inside, each row's index in its
    partition (the low bits of ``monotonically_increasing_id``) plus the row counts of the
    partitions before it. The result is persisted so every later pass sees the same ranks.
    Deterministic when ``sort_by`` is unique per row. The caller unpersists it.

    ``unique`` (the first sort column): the partitions' counts come from one Python pass that
    also counts rows equal to the one before them, within and across partitions; any such row
    raises ``RepeatedKeys`` (nothing persisted is left). A distinct count would shuffle the
    whole column once more; the sort has already put equal values side by side.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    ordered = (range_sorted(df, sort_by, [], partitions)
               .withColumn("_mid", F.monotonically_increasing_id())
               .persist(StorageLevel.MEMORY_AND_DISK))
    if unique is None:
        return _rank_from_mid(ordered, _partition_counts(ordered))
    try:
        counts = _partition_counts_checked(ordered, unique, sort_by)
    except BaseException:
        ordered.unpersist()
        raise
    return _rank_from_mid(ordered, counts)


def _partition_counts(ordered) -> dict[int, int]:
    from pyspark.sql import functions as F

    return {r["_pid"]: r["count"] for r in ordered.groupBy(F.shiftright("_mid", 33).alias("_pid")).count().collect()}


def _partition_counts_checked(ordered, unique: str, sort_by: list[str]) -> dict[int, int]:
    """Rows per range partition, and ``RepeatedKeys`` if two rows share ``unique``: each task
    reports (partition, rows, repeats inside, first and last value); the driver adds the
    repeats across neighbouring partitions (one row per partition comes back)."""
    from curate.engine.frame import RepeatedKeys, adjacent_repeats, check_unique_sort

    check_unique_sort(unique, sort_by)
    out_schema = pa.schema([("pid", pa.int64()), ("n", pa.int64()), ("repeats", pa.int64()),
                            ("first", pa.string()), ("last", pa.string())])

    def summarise(batches):
        pid, n, repeats, first, last = None, 0, 0, None, None
        for b in batches:
            if not b.num_rows:
                continue
            col = b.column(1).cast(pa.string())
            if pid is None:
                pid, first = int(b.column(0)[0].as_py()) >> 33, col[0].as_py()
            elif col[0].as_py() == last:
                repeats += 1
            repeats += adjacent_repeats(col)
            n, last = n + b.num_rows, col[len(col) - 1].as_py()
        if pid is not None:
            yield pa.record_batch([[pid], [n], [repeats], [first], [last]], schema=out_schema)

    from curate.engine.spark_shuffles import to_spark_schema

    rows = sorted(ordered.select("_mid", unique).mapInArrow(summarise, to_spark_schema(out_schema)).collect(),
                  key=lambda r: r["pid"])
    repeats = sum(r["repeats"] for r in rows)
    repeats += sum(1 for a, b in zip(rows, rows[1:]) if a["last"] == b["first"])
    if repeats:
        raise RepeatedKeys(unique, repeats)
    return {r["pid"]: r["n"] for r in rows}


def _rank_from_mid(ordered, counts: dict[int, int]):
    from pyspark.sql import functions as F

    total = sum(counts.values())
    offsets, acc = [], 0
    for pid in range(max(counts) + 1 if counts else 1):
        offsets.append(acc)
        acc += counts.get(pid, 0)
    offset_of = F.element_at(F.array(*[F.lit(o).cast("long") for o in offsets]),
                             (F.shiftright("_mid", 33) + 1).cast("int"))
    ranked = ordered.withColumn("_rank", offset_of + F.col("_mid").bitwiseAND(F.lit(_LOW33))).drop("_mid")
    return ranked, total


def range_sorted(df, keys: list[str], then_by: list[str], partitions: int | None = None):
    """Globally ordered by (*keys, *then_by): range partitions on ``keys`` sorted inside, so all
    rows of one ``keys`` value share a partition (a window over ``keys`` needs no other shuffle)."""
    n = partitions or int(df.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    return df.repartitionByRange(n, *keys).sortWithinPartitions(*keys, *then_by)


def write_ranked_table(df, dataset: Dataset, table: str, schema: pa.Schema, total: int,
                       rows_per_shard: int, skip_existing: bool = False,
                       lookups: dict[str, tuple[str, list[str]]] | None = None) -> dict:
    """Write ``df`` (with a ``_rank`` column numbering its ``total`` rows 0..total-1) as
    ``table``: shard i holds ranks [i*rows_per_shard, (i+1)*rows_per_shard) in rank order,
    written by pyarrow with fixed options and committed atomically. Same rows, same bytes.

    With ``skip_existing``, shards already committed are left as they are (resume after a
    kill: ranks are deterministic, so a committed shard i has the same rows).

    ``lookups``: {column: (index column, values)} builds a repetitive string column (a source
    file name) in the writer as ``values[index]``, so only a small integer crosses from the
    JVM to Python.
    """
    lookups = lookups or {}
    nshards = max(1, -(-total // rows_per_shard))
    existing = {basename(p) for p in dataset.shards(table)} if skip_existing else set()
    done = [i for i in range(nshards) if basename(dataset.shard_path(table, i)) in existing]
    grouped = _rows_by_shard(df, schema.names, lookups, rows_per_shard, nshards, done)
    write = _shard_writer(worker_env(), str(dataset.root), table, schema, lookups)
    with _StageProgress(df.sparkSession, f"write {table}", max(1, min(nshards, 4096)), unit="shards"):
        written = grouped.mapInArrow(write, "shard long, rows long").collect()
    keep = {basename(dataset.shard_path(table, r["shard"])) for r in written}
    keep |= {basename(dataset.shard_path(table, i)) for i in done}
    keep = dataset.finish_sharded_write(table, schema, keep, total)
    return {"rows": total, "shards": len(keep), "skipped_shards": len(done)}


def _rows_by_shard(df, names: list[str], lookups: dict, rows_per_shard: int, nshards: int, done: list[int]):
    """The columns the writer needs (a lookup column as its index column) with ``_shard`` =
    rank div ``rows_per_shard``, the shards in ``done`` left out, one partition per shard (at
    most 4096), sorted by (shard, rank)."""
    from pyspark.sql import functions as F

    shipped = [n for n in names if n not in lookups] + sorted({i for i, _ in lookups.values()} - set(names))
    numbered = df.select(*shipped, "_rank").withColumn("_shard", F.expr(f"_rank div {int(rows_per_shard)}"))
    if done:  # resume: committed shards need no rows at all
        numbered = numbered.where(~F.col("_shard").isin(done))
    return numbered.repartition(max(1, min(nshards, 4096)), "_shard").sortWithinPartitions("_shard", "_rank")


def _shard_writer(env: dict, root: str, table: str, schema: pa.Schema, lookups: dict):
    """The ``mapInArrow`` function of ``write_ranked_table``: batches sorted by shard in, one
    (shard, rows) row out for each shard it wrote."""

    def write(batches):
        from curate.tables import Dataset as _Dataset

        apply_worker_env(env)
        ds = _Dataset(root)
        current, parts = None, []
        for b in batches:
            values = b.column("_shard").to_numpy()
            if len(values) == 0:
                continue
            # Batches arrive sorted by shard: split at the boundaries.
            cuts = [0, *(int(i) + 1 for i in (values[1:] != values[:-1]).nonzero()[0]), len(values)]
            for start, end in zip(cuts[:-1], cuts[1:]):
                s = int(values[start])
                if current is not None and s != current:
                    yield _write_shard(ds, table, schema, lookups, current, parts)
                    parts = []
                current = s
                parts.append(b.slice(start, end - start))
        if current is not None:
            yield _write_shard(ds, table, schema, lookups, current, parts)

    return write


def _write_shard(ds: Dataset, table: str, schema: pa.Schema, lookups: dict, shard: int,
                 parts: list[pa.RecordBatch]) -> pa.RecordBatch:
    """Shard ``shard`` of ``table`` from its rows in rank order: lookup columns built, columns
    cast to ``schema``, written atomically. Returns its (shard, rows) row."""
    import pyarrow.compute as pc

    names = schema.names
    t = pa.Table.from_batches(parts)
    cols = [pc.take(pa.array(lookups[n][1], pa.string()), t.column(lookups[n][0])) if n in lookups
            else t.column(n) for n in names]
    t = pa.Table.from_arrays([c.cast(schema.field(n).type) for n, c in zip(names, cols)], schema=schema)
    write_parquet_atomic(t, ds.shard_path(table, shard))
    return pa.RecordBatch.from_pylist([{"shard": shard, "rows": t.num_rows}])


def write_sorted_table(df, dataset: Dataset, table: str, schema: pa.Schema, sort_by: list[str],
                       rows_per_shard: int, skip_existing: bool = False, unique: str | None = None) -> dict:
    """Write ``df`` as ``table``: globally sorted by ``sort_by``, shards of exactly
    ``rows_per_shard`` rows (the last may be smaller); see ``write_ranked_table``. ``unique``:
    see ``rank_rows`` (checked before any shard is written)."""
    ranked, total = rank_rows(df.select(*schema.names), sort_by, unique=unique)
    try:
        return write_ranked_table(ranked, dataset, table, schema, total, rows_per_shard, skip_existing)
    finally:
        ranked.unpersist()
