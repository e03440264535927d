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
