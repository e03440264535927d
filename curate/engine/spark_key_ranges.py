"""Exact dedup on Spark in key ranges the caller gives: rows routed so that partition i holds
key range i (no sampling pass), the first row per key kept and written one file per range in
key order, the others listed as duplicates. Part of ``curate.engine.spark``."""

from __future__ import annotations

from curate.engine.spark_session import _StageProgress


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


# A range file is written in row groups of up to this many rows (batches are buffered to it):
# gather reads a shard's slice of a range file by row group.
RANGE_ROW_GROUP = 1 << 20


def _write_ranges(df, out_dir: str, description: str, ranges: int) -> list[dict]:
    """Each partition of ``df`` written in its order to ``out_dir/part-NNNNN.parquet`` (NNNNN
    its partition, one key range) by a Python task through ``curate.storage``, so ``out_dir``
    may be a URI on any store pyarrow reaches (Spark's own writer would need a Hadoop
    connector for it). Partitions without rows write no file, unless none has rows: then one
    empty part-00000. Returns [{part, rows, first, last}] (the first and last value of the
    frame's first column) in partition order."""
    import pyarrow as pa
    from pyspark.sql.pandas.types import to_arrow_schema

    from curate.storage import apply_worker_env, join, worker_env

    schema = to_arrow_schema(df.schema)
    env = worker_env()

    def write(batches):
        import itertools

        import pyarrow.parquet as pq
        from pyspark import TaskContext

        from curate.tables.atomic import atomic_path, parquet_options

        apply_worker_env(env)
        part = TaskContext.get().partitionId()
        batches = (b for b in batches if b.num_rows)
        first = next(batches, None)
        if first is None:  # an empty range: no file
            return
        rows, pending, held = 0, [], 0
        last = first
        with atomic_path(join(out_dir, f"part-{part:05d}.parquet"), shard=False) as tmp, \
                pq.ParquetWriter(tmp, schema, **parquet_options(schema)) as w:
            for b in itertools.chain([first], batches):
                pending.append(b)
                held += b.num_rows
                rows += b.num_rows
                last = b
                if held >= RANGE_ROW_GROUP:
                    w.write_table(pa.Table.from_batches(pending, schema), row_group_size=RANGE_ROW_GROUP)
                    pending, held = [], 0
            if pending:
                w.write_table(pa.Table.from_batches(pending, schema), row_group_size=RANGE_ROW_GROUP)
        span = {"first": str(first.column(0)[0].as_py()), "last": str(last.column(0)[last.num_rows - 1].as_py())}
        yield pa.RecordBatch.from_pylist([{"part": part, "rows": rows, **span}])

    with _StageProgress(df.sparkSession, description, ranges):
        out = sorted(df.mapInArrow(write, "part long, rows long, first string, last string").collect(),
                     key=lambda r: r["part"])
    if not out:  # no rows at all: one empty file, so readers find the table's schema
        from curate.tables.atomic import write_parquet_atomic

        write_parquet_atomic(schema.empty_table(), join(out_dir, "part-00000.parquet"), shard=False)
        return [{"part": 0, "rows": 0, "first": None, "last": None}]
    return [r.asDict() for r in out]


def first_by_key_ranges(df, key: str, id_column: str, order_column: str, boundaries: list[str],
                        kept_dir: str) -> list[tuple[str, int]]:
    """Exact dedup on the JVM: for each ``key`` the row with the smallest ``order_column`` (a
    long, unique per row) is kept. Writes the kept rows as (uid = its ``id_column``,
    ``order_column``) to ``kept_dir`` (a path or URI), one file per key range in key order
    (see ``_route_key_ranges``); returns [(file, rows)] in range order. One shuffle: the
    aggregation groups on the routing column too, so it needs none of its own.
    """
    from pyspark.sql import functions as F

    from curate.storage import join

    aggs = [F.min(order_column).alias(order_column)]
    if id_column != key:
        aggs.append(F.min_by(id_column, order_column).alias("_id"))
    firsts = _route_key_ranges(df, key, boundaries).groupBy("_to", key).agg(*aggs)
    uid = F.col(key) if id_column == key else F.col("_id")
    kept = firsts.sortWithinPartitions(key).select(uid.alias("uid"), order_column)
    parts = _write_ranges(kept, kept_dir, f"dedup by {key}", len(boundaries) + 1)
    if id_column == key:  # the files must follow each other in uid order: check the routing
        spans = [(r["first"], r["last"]) for r in parts if r["rows"]]
        if any(a[1] >= b[0] for a, b in zip(spans, spans[1:])):
            raise RuntimeError(f"key ranges out of order in {kept_dir}: Spark's hash partitioning changed?")
    return [(join(kept_dir, f"part-{r['part']:05d}.parquet"), r["rows"]) for r in parts]


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
    _write_ranges(dups, out_dir, f"duplicates by {key}", len(boundaries) + 1)
