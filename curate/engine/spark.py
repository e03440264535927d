"""The one module that talks to Spark.

Stages are plain functions over Arrow batches or whole shards; this adapter ships them to
Spark tasks (``map_tasks``, ``tasks_to_frame``), runs the shuffles that need a cluster
(``write_sorted_table``), and builds the session. Nothing else in curate imports pyspark.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Callable, Iterator

import pyarrow as pa

from curate.tables import Dataset, write_parquet_atomic

TaskBatchesFn = Callable[[dict], Iterator[pa.RecordBatch]]


# ---------------------------------------------------------------- session
def _default_local_conf() -> dict[str, str]:
    cores = os.cpu_count() or 2
    return {
        # Sized for a small machine: few shuffle partitions, Arrow on, quiet UI.
        "spark.sql.shuffle.partitions": str(max(2, cores * 2)),
        "spark.default.parallelism": str(max(2, cores)),
        "spark.driver.memory": os.environ.get("CURATE_DRIVER_MEMORY", "4g"),
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.sql.execution.arrow.maxRecordsPerBatch": "65536",
        "spark.python.worker.reuse": "true",
        "spark.ui.showConsoleProgress": "false",
        "spark.ui.enabled": "true",
        "spark.sql.adaptive.enabled": "false",  # deterministic partition counts for exact sharding
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
    }


def get_session(master: str | None = None, conf: dict[str, str] | None = None, app_name: str = "curate"):
    """A SparkSession: ``master`` if given, else the one spark-submit set, else ``local[*]``.

    ``conf`` entries override our defaults, so any Spark setting passes through unchanged.
    """
    from pyspark import SparkConf
    from pyspark.sql import SparkSession

    os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
    os.environ.setdefault("PYSPARK_PYTHON", os.environ.get("PYSPARK_PYTHON") or _python())
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        # Started by spark-submit: attach to its JVM first, else SparkConf() cannot see the
        # settings spark-submit was given (--master, --conf) and we would fall back to local.
        from pyspark import SparkContext

        SparkContext._ensure_initialized()
    submitted = SparkConf()  # under spark-submit this already holds spark.master
    builder = SparkSession.builder.appName(app_name)
    settings = {}
    if master:
        settings["spark.master"] = master
    elif not submitted.contains("spark.master"):
        settings["spark.master"] = "local[*]"
    effective_master = settings.get("spark.master") or submitted.get("spark.master", "")
    defaults = _default_local_conf()
    if not effective_master.startswith("local"):
        defaults = {k: v for k, v in defaults.items() if not k.startswith("spark.driver.")}
    for k, v in defaults.items():
        if not submitted.contains(k):
            settings[k] = v
    settings.update(conf or {})
    for k, v in settings.items():
        builder = builder.config(k, v)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("CURATE_SPARK_LOG_LEVEL", "ERROR"))
    return spark


def activate(spark) -> None:
    """Make ``spark`` this thread's active session, for libraries that look it up with
    ``SparkSession.getActiveSession()`` (img2dataset's pyspark distributor)."""
    from pyspark.sql import SparkSession

    SparkSession._activeSession = spark
    SparkSession._get_j_spark_session_class(spark._jvm).setActiveSession(spark._jsparkSession)


def task_resource_addresses(name: str = "gpu") -> list[str]:
    """Addresses of resource ``name`` (e.g. GPU ordinals) assigned to the running Spark task;
    empty outside a task or when the task has none (``spark.task.resource.gpu.amount``)."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return []
    ctx = TaskContext.get()
    if ctx is None:
        return []
    info = ctx.resources().get(name)
    return list(info.addresses) if info is not None else []


def task_cpus() -> int | None:
    """CPU cores the running Spark task was given (``spark.task.cpus``); None outside a task."""
    try:
        from pyspark import TaskContext
    except ImportError:
        return None
    ctx = TaskContext.get()
    if ctx is None:
        return None
    try:
        return int(ctx.cpus())
    except Exception:  # noqa: BLE001 - older pyspark without TaskContext.cpus
        return None


def _python() -> str:
    import sys

    return sys.executable


def ui_url(spark) -> str | None:
    return spark.sparkContext.uiWebUrl


# ---------------------------------------------------------------- progress
class _StageProgress:
    """Shows Spark task progress (done / total, rate) while a job runs on the driver."""

    def __init__(self, spark, description: str, total: int, unit: str = "tasks"):
        self.sc = spark.sparkContext
        self.description, self.total, self.unit = description, total, unit
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        import sys

        if sys.stderr.isatty() and self.total > 0:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        from curate.progress import console

        tracker = self.sc.statusTracker()
        t0 = time.time()
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=console,
                      transient=True) as p:
            tid = p.add_task(self.description, total=self.total, rate="")
            while not self._stop.wait(0.5):
                done = 0
                for sid in tracker.getActiveStageIds():
                    info = tracker.getStageInfo(sid)
                    if info:
                        done = max(done, info.numCompletedTasks)
                rate = done / max(time.time() - t0, 1e-9)
                p.update(tid, completed=min(done, self.total), rate=f"{rate:.1f} {self.unit}/s")

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=2)


# ---------------------------------------------------------------- executor
class SparkExecutor:
    """Runs task functions as Spark tasks, one partition per task, results in task order."""

    name = "spark"

    def __init__(self, spark):
        self.spark = spark

    @property
    def parallelism(self) -> int:
        return self.spark.sparkContext.defaultParallelism

    def map_tasks(self, tasks: list[dict], fn: Callable[[dict], dict], description: str = "") -> list[dict]:
        if not tasks:
            return []
        payload = [json.dumps(t, sort_keys=True) for t in tasks]

        def run_partition(index, rows):
            for i, task_json in rows:
                yield i, json.dumps(fn(json.loads(task_json)), sort_keys=True, default=str)

        rdd = self.spark.sparkContext.parallelize(list(enumerate(payload)), len(payload))
        with _StageProgress(self.spark, description or "tasks", len(payload)):
            out = rdd.mapPartitionsWithIndex(run_partition).collect()
        out.sort(key=lambda x: x[0])
        return [json.loads(r) for _, r in out]

    def tasks_to_frame(self, tasks: list[dict], fn: TaskBatchesFn, schema: pa.Schema):
        """A DataFrame of the batches ``fn`` yields for each task (one partition per task)."""
        return tasks_to_frame(self.spark, tasks, fn, schema)


def to_spark_schema(schema: pa.Schema):
    from pyspark.sql.pandas.types import from_arrow_schema

    return from_arrow_schema(schema)


def tasks_to_frame(spark, tasks: list[dict], fn: TaskBatchesFn, schema: pa.Schema):
    payload = [(i, json.dumps(t, sort_keys=True)) for i, t in enumerate(tasks)]
    frame = spark.sparkContext.parallelize(payload, max(1, len(payload))).toDF("task_index int, task string")
    names = schema.names

    def run(batches):
        for b in batches:
            for task_json in b.column("task").to_pylist():
                for out in fn(json.loads(task_json)):
                    if out.num_rows:
                        yield out.select(names)

    return frame.mapInArrow(run, to_spark_schema(schema))


# ---------------------------------------------------------------- sharded writes
def write_sorted_table(df, dataset: Dataset, table: str, schema: pa.Schema, sort_by: list[str],
                       rows_per_shard: int, skip_existing: bool = False, presorted: bool = False) -> dict:
    """Write ``df`` as ``table``: globally sorted by ``sort_by``, shards of exactly
    ``rows_per_shard`` rows (the last may be smaller), each written by pyarrow with fixed
    options and committed atomically. Same rows in, same bytes out.

    ``presorted``: ``df``'s partitions are already in global ``sort_by`` order (e.g. from
    ``range_sorted``) and computed from persisted data, so no sort is run. With ``skip_existing``, shards already committed
    are left as they are (resume after a kill: the plan is deterministic, so a committed
    shard i has the same rows).
    """
    from pyspark import StorageLevel
    from pyspark.sql import functions as F

    # A presorted frame comes from cached data (the caller's contract), so caching it again
    # would only copy it; a sort result is cached so the count and write passes agree.
    ordered = df if presorted else df.orderBy(*sort_by).persist(StorageLevel.MEMORY_AND_DISK)
    try:
        pid_counts = (ordered.withColumn("_pid", F.spark_partition_id())
                      .groupBy("_pid").count().collect())
        counts = {r["_pid"]: r["count"] for r in pid_counts}
        total = sum(counts.values())
        offsets, acc = {}, 0
        for pid in sorted(counts):
            offsets[pid] = acc
            acc += counts[pid]
        nshards = max(1, -(-total // rows_per_shard))
        root = str(dataset.root)
        names = schema.names
        existing = {p.name for p in dataset.shards(table)} if skip_existing else set()

        def number(batches):
            import pyarrow.compute as pc
            from pyspark import TaskContext

            pid = TaskContext.get().partitionId()
            pos = offsets.get(pid, 0)
            for b in batches:
                idx = pa.array(range(pos, pos + b.num_rows), pa.int64())
                pos += b.num_rows
                shard = pc.divide(idx, pa.scalar(rows_per_shard, pa.int64()))
                yield b.append_column("_shard", shard).append_column("_pos", idx)

        numbered_schema = to_spark_schema(schema).add("_shard", "long", False).add("_pos", "long", False)
        numbered = ordered.select(*names).mapInArrow(number, numbered_schema)
        if existing:  # resume: committed shards need no rows at all
            done = [i for i in range(nshards) if dataset.shard_path(table, i).name in existing]
            if done:
                numbered = numbered.where(~F.col("_shard").isin(done))
        else:
            done = []
        grouped = numbered.repartition(max(1, min(nshards, 4096)), "_shard").sortWithinPartitions("_shard", "_pos")

        def write(batches):
            from curate.tables import Dataset as _Dataset

            ds = _Dataset(root)
            current, parts = None, []

            def flush(shard, parts):
                t = pa.Table.from_batches(parts).select(names)
                t = pa.Table.from_arrays([t.column(n).cast(schema.field(n).type) for n in names], schema=schema)
                write_parquet_atomic(t, ds.shard_path(table, shard))
                return pa.RecordBatch.from_pylist([{"shard": shard, "rows": t.num_rows}])

            for b in batches:
                values = b.column("_shard").to_numpy()
                start, n = 0, len(values)
                while start < n:  # batches arrive sorted by shard: split at boundaries
                    s = int(values[start])
                    end = start
                    while end < n and values[end] == s:
                        end += 1
                    if current is not None and s != current:
                        yield flush(current, parts)
                        parts = []
                    current = s
                    parts.append(b.slice(start, end - start))
                    start = end
            if current is not None:
                yield flush(current, parts)

        with _StageProgress(df.sparkSession, f"write {table}", max(1, min(nshards, 4096)), unit="shards"):
            written = grouped.mapInArrow(write, "shard long, rows long").collect()
    finally:
        if not presorted:
            ordered.unpersist()
    keep = {dataset.shard_path(table, r["shard"]).name for r in written}
    keep |= {dataset.shard_path(table, i).name for i in done}
    if total == 0:  # an empty table is one empty shard, so the table and its schema exist
        write_parquet_atomic(schema.empty_table(), dataset.shard_path(table, 0))
        keep = {dataset.shard_path(table, 0).name}
    for old in dataset.shards(table):
        if old.name not in keep:
            old.unlink()
    return {"rows": total, "shards": len(keep), "skipped_shards": len(done)}


def range_sorted(df, key: str, then_by: list[str], partitions: int | None = None):
    """Globally ordered by (key, *then_by), with all rows of one ``key`` value in one partition."""
    n = partitions or int(df.sparkSession.conf.get("spark.sql.shuffle.partitions"))
    return df.repartitionByRange(n, key).sortWithinPartitions(key, *then_by)


def first_of_groups(df, group_by: list[str], order_by: list[str], id_column: str, schema: pa.Schema,
                    presorted_by_group: bool = False, partitions: int | None = None):
    """Add ``_is_first`` (first row of its group in ``order_by`` order) and ``_first_id``
    (``id_column`` of that row), computed with Arrow inside each partition.

    Rows are hash-partitioned by ``group_by`` (or, with ``presorted_by_group``, arrive with
    each group whole in one partition and sorted by group then order). Deterministic when
    ``order_by`` is unique within a group.
    """
    if not presorted_by_group:
        n = partitions or int(df.sparkSession.conf.get("spark.sql.shuffle.partitions"))
        df = df.repartition(n, *group_by).sortWithinPartitions(*group_by, *order_by)
    out_schema = pa.schema(list(schema) + [pa.field("_is_first", pa.bool_(), False),
                                           pa.field("_first_id", pa.string())])
    names = schema.names

    def mark(batches):
        import numpy as np
        import pyarrow.compute as pc

        prev_key, prev_id = None, None  # carried across batch boundaries
        for b in batches:
            n = b.num_rows
            if n == 0:
                continue
            starts = np.zeros(n, dtype=bool)
            for k in group_by:
                col = b.column(k)
                diff = pc.fill_null(pc.not_equal(col.slice(1), col.slice(0, n - 1)), True).to_numpy(zero_copy_only=False)
                nulls = pc.is_null(col).to_numpy(zero_copy_only=False)
                both_null = nulls[1:] & nulls[:-1]
                starts[1:] |= diff & ~both_null
            first_key = tuple(b.column(k)[0].as_py() for k in group_by)
            starts[0] = first_key != prev_key
            ids = b.column(id_column).to_numpy(zero_copy_only=False)
            pos = np.where(starts, np.arange(n), 0)
            np.maximum.accumulate(pos, out=pos)
            first_ids = ids[pos].astype(object)
            if not starts[0]:  # group continues from the previous batch
                head = ~np.maximum.accumulate(starts)
                first_ids[head] = prev_id
            prev_key = tuple(b.column(k)[n - 1].as_py() for k in group_by)
            prev_id = first_ids[-1]
            yield pa.RecordBatch.from_arrays(
                [b.column(x).cast(schema.field(x).type) for x in names] + [pa.array(starts), pa.array(first_ids, pa.string())],
                schema=out_schema)

    return df.select(*names).mapInArrow(mark, to_spark_schema(out_schema))


# ---------------------------------------------------------------- small frame helpers
# Callers outside this module treat DataFrames as opaque handles and use these.
def persist(df):
    from pyspark import StorageLevel

    return df.persist(StorageLevel.MEMORY_AND_DISK)


def unpersist(df) -> None:
    df.unpersist()


def where(df, condition_sql: str):
    """Rows matching a Spark SQL condition."""
    return df.where(condition_sql)


def select_columns(df, names: list[str]):
    return df.select(*names)


def group_counts(df, columns: list[str]) -> list[dict]:
    """Row counts per distinct value combination of ``columns`` (small results only)."""
    return [r.asDict() for r in df.groupBy(*columns).count().collect()]


def mark_first(df, partition_by: list[str], order_by: list[str], id_column: str,
               is_first: str = "_is_first", first_id: str = "_first_id"):
    """Add ``is_first`` (row is the first of its group in ``order_by`` order) and ``first_id``
    (``id_column`` of that first row). Deterministic when ``order_by`` is unique per group."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    w = Window.partitionBy(*partition_by).orderBy(*order_by)
    wall = w.rowsBetween(Window.unboundedPreceding, Window.unboundedFollowing)
    return (df.withColumn("_rn", F.row_number().over(w))
              .withColumn(first_id, F.first(id_column).over(wall))
              .withColumn(is_first, F.col("_rn") == 1)
              .drop("_rn"))


def with_column_sql(df, name: str, expression_sql: str):
    from pyspark.sql import functions as F

    return df.withColumn(name, F.expr(expression_sql))


def union(a, b):
    """Rows of both frames (same column names)."""
    return a.unionByName(b)


def group_apply(df, keys: list[str], fn: Callable[[pa.Table], pa.Table], schema: pa.Schema):
    """``fn(group_table) -> pa.Table`` once per distinct value of ``keys`` (Spark's grouped
    ``applyInArrow``): each group arrives whole in one Python worker, so per-group work (a
    cluster's similarity matrix) runs there as vectorised code. Output columns follow ``schema``."""
    names = schema.names

    def run(table: pa.Table) -> pa.Table:
        out = fn(table)
        return pa.Table.from_arrays([out.column(n).cast(schema.field(n).type) for n in names], names=names)

    return df.groupBy(*keys).applyInArrow(run, to_spark_schema(schema))


def collect_arrow(df) -> pa.Table:
    """All rows of ``df`` as one Arrow table on the driver (results that fit in driver memory)."""
    return df.toArrow()


# ---------------------------------------------------------------- frame helpers
def join_frames(left, right, on: str | list[str], how: str = "left"):
    """``left`` joined with ``right`` on key column(s) (``how``: left, inner, ...)."""
    return left.join(right, on=on, how=how)


def map_frame(df, fn: Callable[[pa.RecordBatch], pa.RecordBatch | pa.Table], schema: pa.Schema):
    """A DataFrame of ``fn`` applied to every Arrow batch of ``df`` (``mapInArrow``).

    ``fn`` returns a batch or table with (at least) the columns of ``schema``.
    """
    names = schema.names

    def run(batches):
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
