"""The one module that talks to Spark (with its parts ``spark_session``, ``spark_shuffles``,
``spark_sorted_writes``, ``spark_key_ranges`` and ``spark_frame``, which only the engine imports).

Stages are plain functions over Arrow batches or whole shards; this adapter ships them to
Spark tasks (``map_tasks``, ``tasks_to_frame``), runs the shuffles that need a cluster
(``write_sorted_table``), and builds the session. Nothing else in curate imports pyspark.
Every name of the parts is importable from here.
"""

from __future__ import annotations

import json
from typing import Callable

import pyarrow as pa

from curate.engine.spark_frame import SparkFrameBuilder
from curate.storage import apply_worker_env, worker_env
from curate.engine.spark_frames import SparkFrameOps
from curate.engine.spark_session import (  # noqa: F401 - re-exported: curate.engine.spark is the public module
    LOG4J2_CONFIG, JVM_NOISE, verbose, under_spark_submit, _log_level, log4j_java_options, _free_port,
    _default_local_conf, _launch_quiet_gateway, _apply_log_config, get_session, kill_driver_jvm, activate,
    context_running, task_resource_addresses, task_cpus, _python, ui_url, _StageProgress,
)
from curate.engine.spark_key_ranges import (  # noqa: F401 - re-exported: curate.engine.spark is the public module
    spark_hash_long, first_by_key_ranges, duplicates_by_key_ranges,
)
from curate.engine.spark_shuffles import (  # noqa: F401 - re-exported: curate.engine.spark is the public module
    to_spark_schema, tasks_to_frame, read_parquet, with_lookup, unpersist, select_columns, with_column_sql,
    group_apply, group_apply_many, collect_arrow, join_frames, map_frame, sum_by_key, TaskBatchesFn,
)
from curate.engine.spark_sorted_writes import (  # noqa: F401 - re-exported: curate.engine.spark is the public module
    rank_rows, range_sorted, write_ranked_table, write_sorted_table,
)


# ---------------------------------------------------------------- executor
class SparkExecutor(SparkFrameBuilder, SparkFrameOps):
    """Runs task functions as Spark tasks, one partition per task, results in task order.
    Frames (``SparkFrameBuilder``) and frame operations (``SparkFrameOps``) are DataFrame
    operations and key-range shuffles."""

    name = "spark"

    def __init__(self, spark):
        self.spark = spark

    @property
    def parallelism(self) -> int:
        return self.spark.sparkContext.defaultParallelism

    @property
    def task_slots(self) -> int:
        return self.parallelism

    def map_tasks(self, tasks: list[dict], fn: Callable[[dict], dict], description: str = "") -> list[dict]:
        if not tasks:
            return []
        payload = [json.dumps(t, sort_keys=True) for t in tasks]
        env = worker_env()

        def run_partition(index, rows):
            apply_worker_env(env)
            for i, task_json in rows:
                yield i, json.dumps(fn(json.loads(task_json)), sort_keys=True, default=str)

        rdd = self.spark.sparkContext.parallelize(list(enumerate(payload)), len(payload))
        with _StageProgress(self.spark, description or "tasks", len(payload)):
            out = rdd.mapPartitionsWithIndex(run_partition).collect()
        out.sort(key=lambda x: x[0])
        self.driver_counter.note("map_tasks", len(out))
        return [json.loads(r) for _, r in out]

    # The data operations of LocalExecutor, on Spark.
    def collect_task_rows(self, tasks: list[dict], fn: TaskBatchesFn, schema: pa.Schema) -> pa.Table:
        return collect_arrow(tasks_to_frame(self.spark, tasks, fn, schema))

    def grouped_apply(self, tasks: list[dict], rows_fn: TaskBatchesFn, row_schema: pa.Schema, key: str,
                      group_fn: Callable[[pa.Table], pa.Table], out_schema: pa.Schema) -> pa.Table:
        """A shuffle by ``key`` and a grouped ``applyInArrow``."""
        frame = tasks_to_frame(self.spark, tasks, rows_fn, row_schema)
        return collect_arrow(group_apply(frame, [key], group_fn, out_schema))

    def sum_task_rows(self, tasks: list[dict], fn: TaskBatchesFn, schema: pa.Schema, keys: list[str],
                      value: str, min_total: int) -> pa.Table:
        return sum_by_key(tasks_to_frame(self.spark, tasks, fn, schema), keys, value, min_total=min_total)

    def run_img2dataset(self, downloader, reader, processes: int, subjob_size: int, max_shard_retry: int) -> None:
        """img2dataset's own pyspark distributor on this session (0 processes: the default
        parallelism)."""
        from img2dataset.distributor import pyspark_distributor

        activate(self.spark)  # img2dataset finds the session with getActiveSession()
        pyspark_distributor(processes or self.parallelism, downloader, reader, subjob_size, max_shard_retry)
