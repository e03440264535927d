"""Spark's data operations on DataFrames: frames from shard tasks, Parquet reads, lookups,
grouped apply, joins, maps, sums (sorted sharded writes are in ``spark_sorted_writes``,
key-range exact dedup in ``spark_key_ranges``). Part of ``curate.engine.spark``; callers
outside the engine use frames (``curate.engine.frame``)."""

from __future__ import annotations

import json
from typing import Callable, Iterator

import pyarrow as pa

from curate.storage import apply_worker_env, worker_env

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


def group_apply_many(df, key: str, fn: Callable[[pa.Table], pa.Table], schema: pa.Schema):
    """``fn`` on tables of several whole groups of ``key`` (see ``LocalFrame.group_apply_many``):
    rows hash-partitioned by ``key`` and sorted within each partition, streamed through
    ``mapInArrow``; each Arrow batch's complete groups go to ``fn`` at once and the last group
    waits for the next batch, as it may continue there. Memory per task: a batch plus the
    largest group, whatever the number of groups (``applyInArrow`` calls Python once a group)."""
    names = schema.names
    env = worker_env()
    partitions = int(df.sparkSession.conf.get("spark.sql.shuffle.partitions"))

    def run(batches):
        import pyarrow.compute as pc

        apply_worker_env(env)
        carry = None
        for b in batches:
            if not b.num_rows:
                continue
            t = pa.Table.from_batches([b]) if carry is None else pa.concat_tables([carry, pa.Table.from_batches([b])])
            cut = pc.index(t.column(key), t.column(key)[t.num_rows - 1]).as_py()  # the last group's first row
            if cut:
                yield from _conformed(fn(t.slice(0, cut)), schema, names)
            carry = t.slice(cut)
        if carry is not None:
            yield from _conformed(fn(carry), schema, names)

    return df.repartition(partitions, key).sortWithinPartitions(key).mapInArrow(run, to_spark_schema(schema))


def _conformed(out: pa.Table, schema: pa.Schema, names: list[str]):
    if out.num_rows:
        yield from pa.Table.from_arrays([out.column(n).cast(schema.field(n).type) for n in names],
                                        names=names).to_batches()


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
