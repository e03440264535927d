"""``SparkFrame``: the frame operations of ``curate.engine.frame`` on a Spark DataFrame.

Same rows as ``LocalFrame`` for every operation; the shuffles are Spark's (left-semi /
left-anti / inner joins, ``groupBy().agg``, grouped ``applyInArrow``) and sorted writes go through
``write_sorted_table`` (range partitions, exact-size shards written by the workers).
"""

from __future__ import annotations

import pyarrow as pa

from curate.engine import spark_shuffles as _spark
from curate.engine.frame import (AGGREGATIONS, BatchFn, CountsDriverRows, GroupFn, TaskBatchesFn, TooManyRows, conform,
                                 joined_schema, keep_value_set)
from curate.engine.spark_sorted_writes import write_sorted_table


class SparkFrame:
    def __init__(self, executor, df, schema: pa.Schema):
        self.executor = executor
        self.df = df
        self.schema = schema

    def _new(self, df, schema: pa.Schema) -> "SparkFrame":
        return SparkFrame(self.executor, df, schema)

    # ---- transformations
    def map_batches(self, fn: BatchFn, schema: pa.Schema) -> "SparkFrame":
        def conformed(batch):
            return conform(fn(batch), schema)

        return self._new(_spark.map_frame(self.df, conformed, schema), schema)

    def select(self, names: list[str]) -> "SparkFrame":
        return self._new(self.df.select(*names), pa.schema([self.schema.field(n) for n in names]))

    def select_as(self, columns: list[tuple[str, str]]) -> "SparkFrame":
        from pyspark.sql import functions as F

        return self._new(self.df.select(*[F.col(src).alias(out) for out, src in columns]),
                         pa.schema([self.schema.field(src).with_name(out) for out, src in columns]))

    def with_constant(self, column: str, value, type: pa.DataType) -> "SparkFrame":
        from pyspark.sql import functions as F

        schema = self.schema.append(pa.field(column, type))
        spark_type = _spark.to_spark_schema(pa.schema([pa.field(column, type)]))[column].dataType
        return self._new(self.df.withColumn(column, F.lit(value).cast(spark_type)), schema)

    def filter_true(self, column: str) -> "SparkFrame":
        from pyspark.sql import functions as F

        return self._new(self.df.where(F.coalesce(F.col(column), F.lit(False))), self.schema)

    def semi_join(self, keys: "SparkFrame", on: str = "uid") -> "SparkFrame":
        return self._new(self.df.join(keys.df.select(on), on=on, how="left_semi"), self.schema)

    def keep_values(self, on: str, values: pa.Array) -> "SparkFrame":
        from pyspark.sql import functions as F

        wanted = keep_value_set(values).cast(self.schema.field(on).type).to_pylist()
        return self._new(self.df.where(F.col(on).isin(wanted)), self.schema)

    def anti_join(self, keys: "SparkFrame", on: str = "uid") -> "SparkFrame":
        return self._new(self.df.join(keys.df.select(on), on=on, how="left_anti"), self.schema)

    def join(self, other: "SparkFrame", on: str, how: str = "inner") -> "SparkFrame":
        schema = joined_schema(self.schema, other.schema, on, how)
        return self._new(self.df.join(other.df, on=on, how=how).select(*schema.names), schema)

    def distinct(self) -> "SparkFrame":
        return self._new(self.df.distinct(), self.schema)

    def union(self, other: "SparkFrame") -> "SparkFrame":
        return self._new(self.df.unionByName(other.df.select(*self.schema.names)), self.schema)

    def group_apply(self, key: str, fn: GroupFn, schema: pa.Schema) -> "SparkFrame":
        return self._new(_spark.group_apply(self.df, [key], fn, schema), schema)

    def group_apply_many(self, key: str, fn: GroupFn, schema: pa.Schema) -> "SparkFrame":
        return self._new(_spark.group_apply_many(self.df, key, fn, schema), schema)

    def aggregate(self, keys: list[str], aggs: dict[str, tuple[str, str]]) -> "SparkFrame":
        from pyspark.sql import functions as F

        exprs, fields = [], [self.schema.field(k) for k in keys]
        for out, (col, how) in aggs.items():
            if how not in AGGREGATIONS:
                raise ValueError(f"aggregation {how!r} not in {AGGREGATIONS}")
            if how == "count":
                exprs.append(F.count(F.lit(1)).alias(out))
                fields.append(pa.field(out, pa.int64()))
            else:
                exprs.append(getattr(F, how)(col).alias(out))
                typ = self.schema.field(col).type
                if how == "sum":
                    typ = pa.float64() if pa.types.is_floating(typ) else pa.int64()
                fields.append(pa.field(out, typ))
        return self._new(self.df.groupBy(*keys).agg(*exprs), pa.schema(fields))

    def partition_by(self, key: str) -> "SparkFrame":
        # hash partitioning on key satisfies the clustering a grouped apply or an aggregate on
        # key (or on key and more columns) needs, so Spark adds no exchange for them
        return self._new(self.df.repartition(key), self.schema)

    def cache(self) -> "SparkFrame":
        from pyspark import StorageLevel

        return self._new(self.df.persist(StorageLevel.MEMORY_AND_DISK), self.schema)

    def release(self) -> None:
        # Spark re-plans (and recomputes) a cached frame built on this one when this one is
        # unpersisted: release a frame only when nothing cached on it is still needed
        self.df.unpersist()

    def checkpoint(self) -> "SparkFrame":
        """Computed now and kept by the executors, lineage cut (``localCheckpoint``)."""
        return self._new(self.df.localCheckpoint(eager=True), self.schema)

    # ---- results for the driver
    def count(self) -> int:
        self.executor.driver_counter.note("count", 1)
        return int(self.df.count())

    def collect_small(self, limit: int, sort_by: list[str] | None = None) -> pa.Table:
        t = self.df.limit(limit + 1).toArrow()
        if t.num_rows > limit:
            raise TooManyRows(f"more than {limit} rows for the driver (the bound of this result)")
        self.executor.driver_counter.note("collect_small", t.num_rows)
        t = conform(t, self.schema)
        return t.sort_by([(k, "ascending") for k in sort_by]) if sort_by and t.num_rows else t

    def write_sorted(self, dataset, table: str, schema, sort_by: list[str], rows_per_shard: int,
                     unique: str | None = None) -> dict:
        from curate.tables import load_schema

        arrow = load_schema(schema).arrow() if isinstance(schema, str) else (
            schema.arrow() if hasattr(schema, "arrow") else schema)
        out = write_sorted_table(self.df, dataset, table, arrow, sort_by, rows_per_shard, unique=unique)
        self.executor.driver_counter.note("write_sorted", out["shards"])
        return out


class SparkFrameBuilder(CountsDriverRows):
    """The frame constructors of ``SparkExecutor``."""

    def frame_from_tasks(self, tasks: list[dict], fn: TaskBatchesFn, schema: pa.Schema) -> SparkFrame:
        if not tasks:
            return self.frame_from_table(schema.empty_table())
        return SparkFrame(self, _spark.tasks_to_frame(self.spark, tasks, fn, schema), schema)

    def frame_read(self, paths: list[str], schema: pa.Schema) -> SparkFrame:
        if not paths:
            return self.frame_from_table(schema.empty_table())
        return SparkFrame(self, _spark.read_parquet(self.spark, [str(p) for p in paths], schema), schema)

    def frame_from_table(self, table: pa.Table) -> SparkFrame:
        """A frame over a driver-side table (small, or a job not distributed yet): shipped in
        one task, not through the JVM's row converter (Spark has no float16)."""
        schema = table.schema
        blobs = [_ipc(b) for b in table.to_batches(max_chunksize=65536) if b.num_rows]
        payload = [{"i": i} for i in range(max(1, len(blobs)))]

        def rows(task: dict):
            if blobs:
                yield _from_ipc(blobs[task["i"]])

        return SparkFrame(self, _spark.tasks_to_frame(self.spark, payload, rows, schema), schema)


def _ipc(batch: pa.RecordBatch) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, batch.schema) as w:
        w.write_batch(batch)
    return sink.getvalue().to_pybytes()


def _from_ipc(blob: bytes) -> pa.RecordBatch:
    return pa.ipc.open_stream(blob).read_next_batch()
