"""One small set of table operations, run either on Spark or in this process.

The filter job is written once against these operations (frames from per-shard tasks, a
left join on uid, a per-batch map, collect, sorted sharded write). ``SparkFrames`` maps them
onto Spark DataFrames through ``curate.engine.spark``; ``LocalFrames`` onto Arrow tables,
for ``--engine local``, tests and debugging.
"""

from __future__ import annotations

from typing import Callable, Iterator

import pyarrow as pa

from curate.tables import Dataset

BatchFn = Callable[[pa.RecordBatch], pa.RecordBatch | pa.Table]


class LocalFrames:
    name = "local"

    def from_tasks(self, tasks: list[dict], fn: Callable[[dict], Iterator[pa.RecordBatch]], schema: pa.Schema) -> pa.Table:
        batches = [b.select(schema.names) for t in tasks for b in fn(t)]
        if not batches:
            return schema.empty_table()
        return pa.Table.from_batches([b.cast(schema) if b.schema != schema else b for b in batches], schema=schema)

    def join(self, left: pa.Table, right: pa.Table, on: str = "uid", how: str = "left") -> pa.Table:
        return left.join(right, keys=on, join_type={"left": "left outer", "inner": "inner"}[how])

    def map(self, frame: pa.Table, fn: BatchFn, schema: pa.Schema) -> pa.Table:
        parts = []
        for b in frame.combine_chunks().to_batches(max_chunksize=65536):
            out = fn(b)
            parts.append(out if isinstance(out, pa.Table) else pa.Table.from_batches([out]))
        if not parts:
            return schema.empty_table()
        return pa.concat_tables([p.select(schema.names).cast(schema) for p in parts])

    def collect(self, frame: pa.Table) -> pa.Table:
        return frame

    def write_sorted(self, frame: pa.Table, dataset: Dataset, table: str, schema_name: str,
                     sort_by: list[str], rows_per_shard: int) -> dict:
        t = frame.sort_by([(c, "ascending") for c in sort_by])
        paths = dataset.write_table(table, t, schema=schema_name, rows_per_shard=rows_per_shard)
        return {"rows": t.num_rows, "shards": len(paths)}


class SparkFrames:
    name = "spark"

    def __init__(self, spark):
        self.spark = spark

    def from_tasks(self, tasks, fn, schema):
        from curate.engine.spark import tasks_to_frame

        return tasks_to_frame(self.spark, tasks, fn, schema)

    def join(self, left, right, on: str = "uid", how: str = "left"):
        from curate.engine.spark import join_frames

        return join_frames(left, right, on=on, how=how)

    def map(self, frame, fn: BatchFn, schema: pa.Schema):
        from curate.engine.spark import map_frame

        return map_frame(frame, fn, schema)

    def collect(self, frame) -> pa.Table:
        from curate.engine.spark import collect_arrow

        return collect_arrow(frame)

    def write_sorted(self, frame, dataset: Dataset, table: str, schema_name: str, sort_by: list[str],
                     rows_per_shard: int) -> dict:
        from curate.engine.spark import write_sorted_table
        from curate.tables import load_schema

        return write_sorted_table(frame, dataset, table, load_schema(schema_name).arrow(), sort_by, rows_per_shard)


def frames_for(executor) -> LocalFrames | SparkFrames:
    spark = getattr(executor, "spark", None)
    return SparkFrames(spark) if spark is not None else LocalFrames()
