"""The table operations the filter job is written against, run by its executor.

The filter job is written once against these operations (frames from per-shard tasks, a
left join on uid, a per-batch map, sorted sharded write; no per-row collect: image_based's
bounded k-means input is drawn with the executor's frames). Each is an executor
method (``curate.engine``: Arrow tables in this process on ``LocalExecutor``, DataFrames on
``SparkExecutor``), so nothing here knows which engine runs the job.
"""

from __future__ import annotations

from typing import Callable, Iterator

import pyarrow as pa

from curate.tables import Dataset, load_schema

BatchFn = Callable[[pa.RecordBatch], pa.RecordBatch | pa.Table]


class ExecutorFrames:
    def __init__(self, executor):
        self.executor = executor
        self.name = executor.name

    def from_tasks(self, tasks: list[dict], fn: Callable[[dict], Iterator[pa.RecordBatch]], schema: pa.Schema):
        return self.executor.tasks_to_frame(tasks, fn, schema)

    def join(self, left, right, on: str = "uid", how: str = "left"):
        return self.executor.join_frames(left, right, on=on, how=how)

    def map(self, frame, fn: BatchFn, schema: pa.Schema):
        return self.executor.map_frame(frame, fn, schema)

    def write_sorted(self, frame, dataset: Dataset, table: str, schema_name: str, sort_by: list[str],
                     rows_per_shard: int) -> dict:
        return self.executor.write_sorted_table(frame, dataset, table, load_schema(schema_name).arrow(), sort_by,
                                                rows_per_shard)


def frames_for(executor) -> ExecutorFrames:
    return ExecutorFrames(executor)
