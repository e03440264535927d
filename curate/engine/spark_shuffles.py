"""Spark's data operations on DataFrames: frames from shard tasks, range-partitioned ranks and
sorted exact-size sharded writes, key-range exact dedup, grouped apply, joins, maps, sums.
Part of ``curate.engine.spark``; callers outside the engine use frames (``curate.engine.frame``)."""

from __future__ import annotations

import json
from typing import Callable, Iterator

import pyarrow as pa

from curate.engine.spark_session import _StageProgress
from curate.storage import apply_worker_env, worker_env
from curate.tables import Dataset, write_parquet_atomic

TaskBatchesFn = Callable[[dict], Iterator[pa.RecordBatch]]


def to_spark_schema(schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def tasks_to_frame(spark, tasks: list[dict], fn: TaskBatchesFn, schema: pa.Schema):
    payload = [(i, json.dumps(t, sort_keys=True)) for i, t in enumerate(tasks)]
    frame = spark.sparkContext.parallelize(payload, max(1, len(payload))).toDF("task_index int, task string")
    names = schema.names
    env = worker_env()

    def run(batches):
        apply_worker_env(env)
        for b in batches:
            for task_json in b.column("task").to_pylist():
                for out in fn(json.loads(task_json)):
                    if out.num_rows:
                        yield out.select(names)

    return frame.mapInArrow(run, to_spark_schema(schema))


# ---------------------------------------------------------------- sharded writes
_LOW33 = (1 << 33) - 1  # monotonically_increasing_id: partition index << 33 | row index


def rank_rows(df, sort_by: list[str], partitions: int | None = None):
    """(``df`` with ``_rank`` = 0..n-1 in global ``sort_by`` order, persisted; n).

    Runs in the JVM, no Python pass: range partitions sorted inside, each row's index in its
    partition (the low bits of ``monotonically_increasing_id``) plus the row counts of the
    partitions before it. The result is persisted so every later pass sees the same ranks.
    Deterministic when ``sort_by`` is unique per row. The caller unpersists it.
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    ordered = (range_sorted(df, sort_by, [], partitions)
               .withColumn("_mid", F.monotonically_increasing_id())
               .persist(StorageLevel.MEMORY_AND_DISK))
    return _rank_from_mid(ordered)


def _rank_from_mid(ordered):
    from pyspark.sql import functions as F

    counts = {r["_pid"]: r["count"] for r in
              ordered.groupBy(F.shiftright("_mid", 33).alias("_pid")).count().collect()}
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


def spark_hash_long(value: int, seed: int = 42) -> int:
    """Spark SQL's ``hash()`` of a bigint (Murmur3 x86_32, seed 42), which hash partitioning
    uses: the same int, computed on the driver without a job. Spark hashes the long's low then
    high 32-bit word, which is Murmur3 over its 8 little-endian bytes."""
    import struct

    import mmh3

    return mmh3.hash(struct.pack("<Q", value & 0xFFFFFFFFFFFFFFFF), seed)


def _route_key_ranges(df, key: str, boundaries: list[str]):
    """``df`` shuffled so that partition i holds exactly key range i (keys k with
    ``boundaries[i-1] <= k < boundaries[i]``), with a ``_to`` column to group on.

    Hash partitioning sends value v to partition pmod(hash(v), n); for each range i a value
    landing in partition i is picked (``spark_hash_long``), so no sampling pass over the data
    is needed, as ``repartitionByRange`` would make. Grouping on ``_to`` is right whatever
    the mapping; the range order is checked where it matters (``first_by_key_ranges``).
    """
    from pyspark.sql import functions as F

    n = len(boundaries) + 1
    targets: dict[int, int] = {}
    v = 0
    while len(targets) < n:
        targets.setdefault(spark_hash_long(v) % n, v)  # Python's % is Spark's pmod here
        v += 1

    def range_of(lo: int, hi: int):  # binary search over boundaries[lo:hi]
        if lo == hi:
            return F.lit(lo)
        mid = (lo + hi) // 2
        return F.when(F.col(key) < F.lit(boundaries[mid]), range_of(lo, mid)).otherwise(range_of(mid + 1, hi))

    to = F.element_at(F.array(*[F.lit(targets[i]).cast("long") for i in range(n)]), range_of(0, n - 1) + 1)
    return df.withColumn("_to", to).repartition(n, "_to")


def _part_files(folder: str) -> dict[int, str]:
    """Spark's output files in ``folder`` by task partition (``part-NNNNN-...``)."""
    import re
    from pathlib import Path

    out = {}
    for p in Path(folder).glob("part-*.parquet"):
        m = re.match(r"part-(\d+)-", p.name)
        if m:
            if int(m.group(1)) in out:
                raise RuntimeError(f"two output files for partition {m.group(1)} in {folder}")
            out[int(m.group(1))] = str(p)
    return out


def first_by_key_ranges(df, key: str, id_column: str, order_column: str, boundaries: list[str],
                        kept_dir: str) -> list[tuple[str, int]]:
    """Exact dedup on the JVM: for each ``key`` the row with the smallest ``order_column`` (a
    long, unique per row) is kept. Writes the kept rows as (uid = its ``id_column``,
    ``order_column``) to ``kept_dir``, one file per key range in key order (see
    ``_route_key_ranges``); returns [(file, rows)] in range order. One shuffle: the
    aggregation groups on the routing column too, so it needs none of its own.
    """
    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    aggs = [F.min(order_column).alias(order_column)]
    if id_column != key:
        aggs.append(F.min_by(id_column, order_column).alias("_id"))
    firsts = _route_key_ranges(df, key, boundaries).groupBy("_to", key).agg(*aggs)
    uid = F.col(key) if id_column == key else F.col("_id")
    kept = firsts.sortWithinPartitions(key).select(uid.alias("uid"), order_column)
    with _StageProgress(df.sparkSession, f"dedup by {key}", len(boundaries) + 1):
        kept.write.mode("overwrite").option("maxRecordsPerFile", 0).parquet(kept_dir)  # one file a range
    files = _part_files(kept_dir)
    metas = [pq.ParquetFile(files[i]).metadata for i in sorted(files)]
    if id_column == key:  # the files must follow each other in uid order: check the routing
        spans = [(m.row_group(0).column(0).statistics.min, m.row_group(m.num_row_groups - 1).column(0).statistics.max)
                 for m in metas if m.num_rows]
        if any(a[1] >= b[0] for a, b in zip(spans, spans[1:])):
            raise RuntimeError(f"key ranges out of order in {kept_dir}: Spark's hash partitioning changed?")
    return [(files[i], m.num_rows) for i, m in zip(sorted(files), metas)]


def duplicates_by_key_ranges(df, key: str, id_column: str, order_column: str, boundaries: list[str],
                             reason: str, out_dir: str) -> None:
    """The rows ``first_by_key_ranges`` does not keep, as (uid, duplicate_of, reason,
    ``order_column``) in ``out_dir``: ``duplicate_of`` is the kept row's ``id_column``."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy("_to", key)
    dups = (_route_key_ranges(df, key, boundaries)
            .withColumn("_first", F.min(order_column).over(w))
            .withColumn("_first_id", F.min_by(id_column, order_column).over(w))
            .where(F.col(order_column) != F.col("_first"))
            .select(F.col(id_column).alias("uid"), F.col("_first_id").alias("duplicate_of"),
                    F.lit(reason).alias("reason"), order_column))
    with _StageProgress(df.sparkSession, f"duplicates by {key}", len(boundaries) + 1):
        dups.write.mode("overwrite").parquet(out_dir)


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
    from pyspark.sql import functions as F

    lookups = lookups or {}
    nshards = max(1, -(-total // rows_per_shard))
    root = str(dataset.root)
    names = schema.names
    from curate.storage import basename

    existing = {basename(p) for p in dataset.shards(table)} if skip_existing else set()
    shipped = [n for n in names if n not in lookups] + sorted({i for i, _ in lookups.values()} - set(names))
    numbered = df.select(*shipped, "_rank").withColumn("_shard", F.expr(f"_rank div {int(rows_per_shard)}"))
    done = [i for i in range(nshards) if basename(dataset.shard_path(table, i)) in existing]
    if done:  # resume: committed shards need no rows at all
        numbered = numbered.where(~F.col("_shard").isin(done))
    grouped = numbered.repartition(max(1, min(nshards, 4096)), "_shard").sortWithinPartitions("_shard", "_rank")

    env = worker_env()

    def write(batches):
        from curate.tables import Dataset as _Dataset

        apply_worker_env(env)
        ds = _Dataset(root)
        current, parts = None, []

        def flush(shard, parts):
            import pyarrow.compute as pc

            t = pa.Table.from_batches(parts)
            cols = [pc.take(pa.array(lookups[n][1], pa.string()), t.column(lookups[n][0])) if n in lookups
                    else t.column(n) for n in names]
            t = pa.Table.from_arrays([c.cast(schema.field(n).type) for n, c in zip(names, cols)], schema=schema)
            write_parquet_atomic(t, ds.shard_path(table, shard))
            return pa.RecordBatch.from_pylist([{"shard": shard, "rows": t.num_rows}])

        for b in batches:
            values = b.column("_shard").to_numpy()
            if len(values) == 0:
                continue
            # Batches arrive sorted by shard: split at the boundaries.
            cuts = [0, *(int(i) + 1 for i in (values[1:] != values[:-1]).nonzero()[0]), len(values)]
            for start, end in zip(cuts[:-1], cuts[1:]):
                s = int(values[start])
                if current is not None and s != current:
                    yield flush(current, parts)
                    parts = []
                current = s
                parts.append(b.slice(start, end - start))
        if current is not None:
            yield flush(current, parts)

    with _StageProgress(df.sparkSession, f"write {table}", max(1, min(nshards, 4096)), unit="shards"):
        written = grouped.mapInArrow(write, "shard long, rows long").collect()
    keep = {basename(dataset.shard_path(table, r["shard"])) for r in written}
    keep |= {basename(dataset.shard_path(table, i)) for i in done}
    keep = dataset.finish_sharded_write(table, schema, keep, total)
    return {"rows": total, "shards": len(keep), "skipped_shards": len(done)}


def write_sorted_table(df, dataset: Dataset, table: str, schema: pa.Schema, sort_by: list[str],
                       rows_per_shard: int, skip_existing: bool = False) -> dict:
    """Write ``df`` as ``table``: globally sorted by ``sort_by``, shards of exactly
    ``rows_per_shard`` rows (the last may be smaller); see ``write_ranked_table``."""
    ranked, total = rank_rows(df.select(*schema.names), sort_by)
    try:
        return write_ranked_table(ranked, dataset, table, schema, total, rows_per_shard, skip_existing)
    finally:
        ranked.unpersist()


def read_parquet(spark, paths: list[str], schema: pa.Schema):
    """A DataFrame over Parquet files or folders, read natively by Spark with ``schema``.

    Object-store URIs are read by Python tasks through ``curate.storage`` (one task a file):
    Spark's own s3a/gs connectors are Hadoop jars a cluster may lack, and they would not see
    ``--storage-option`` settings or the commit markers."""
    from curate import storage

    if not any(storage.is_uri(p) for p in paths):
        return spark.read.schema(to_spark_schema(schema)).parquet(*paths)
    files = []
    for p in paths:
        files += storage.list_files(p, recursive=True) if storage.is_uri(p) and storage.is_dir(p) else [p]

    def rows(task: dict):
        from curate.storage import read_parquet as read_file

        t = read_file(task["path"], columns=schema.names)
        yield from t.to_batches()

    return tasks_to_frame(spark, [{"path": f} for f in files], rows, schema)


def with_lookup(df, name: str, index_column: str, values: list[str]):
    """Add ``name`` = ``values[index_column]`` (a small driver-side list, e.g. file names)."""
    from pyspark.sql import functions as F

    return df.withColumn(name, F.element_at(F.array(*[F.lit(v) for v in values]),
                                            (F.col(index_column) + 1).cast("int")))


# ---------------------------------------------------------------- small frame helpers
# Callers outside this module treat DataFrames as opaque handles and use these.
def unpersist(df) -> None:
    df.unpersist()


def select_columns(df, names: list[str]):
    return df.select(*names)


def with_column_sql(df, name: str, expression_sql: str):
    from pyspark.sql import functions as F

    return df.withColumn(name, F.expr(expression_sql))


def group_apply(df, keys: list[str], fn: Callable[[pa.Table], pa.Table], schema: pa.Schema):
    """``fn(group_table) -> pa.Table`` once per distinct value of ``keys`` (Spark's grouped
    ``applyInArrow``): each group arrives whole in one Python worker, so per-group work (a
    cluster's similarity matrix) runs there as vectorised code. Output columns follow ``schema``."""
    names = schema.names
    env = worker_env()

    def run(table: pa.Table) -> pa.Table:
        apply_worker_env(env)
        out = fn(table)
        return pa.Table.from_arrays([out.column(n).cast(schema.field(n).type) for n in names], names=names)

    return df.groupBy(*keys).applyInArrow(run, to_spark_schema(schema))


def collect_arrow(df) -> pa.Table:
    """All rows of ``df`` as one Arrow table on the driver (results that fit in driver memory)."""
    return df.toArrow()


# ---------------------------------------------------------------- frame helpers
def join_frames(left, right, on: str | list[str], how: str = "left", broadcast_right: bool = False):
    """``left`` joined with ``right`` on key column(s) (``how``: left, inner, ...).
    ``broadcast_right``: ship ``right`` whole to every task (small frames), so ``left``
    is not shuffled."""
    if broadcast_right:
        from pyspark.sql import functions as F

        right = F.broadcast(right)
    return left.join(right, on=on, how=how)


def map_frame(df, fn: Callable[[pa.RecordBatch], pa.RecordBatch | pa.Table], schema: pa.Schema):
    """A DataFrame of ``fn`` applied to every Arrow batch of ``df`` (``mapInArrow``).

    ``fn`` returns a batch or table with (at least) the columns of ``schema``.
    """
    names = schema.names
    env = worker_env()

    def run(batches):
        apply_worker_env(env)
        for b in batches:
            out = fn(b)
            for ob in (out.to_batches() if isinstance(out, pa.Table) else [out]):
                if ob.num_rows:
                    yield ob.select(names)

    return df.mapInArrow(run, to_spark_schema(schema))


def sum_by_key(df, keys: list[str], value: str, min_total: int | float | None = None) -> pa.Table:
    """Sum of ``value`` per distinct ``keys`` (a shuffle), optionally only the groups whose
    sum is at least ``min_total``, collected to the driver as Arrow (column ``value``)."""
    from pyspark.sql import functions as F

    out = df.groupBy(*keys).agg(F.sum(value).alias(value))
    if min_total is not None:
        out = out.where(F.col(value) >= min_total)
    return out.toArrow()
