"""Executor interface and the in-process executor."""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, Protocol

from curate.engine.frame import LocalFrameBuilder
from curate.engine.local_frames import ArrowFrameOps

TaskFn = Callable[[dict], dict]

_cache: dict[Any, Any] = {}
_cache_lock = threading.Lock()


def worker_cache(key: Any, factory: Callable[[], Any]) -> Any:
    """Object built once per Python worker process and reused across tasks and batches.

    Spark reuses Python workers between tasks (``spark.python.worker.reuse``), so a model
    or an Aho-Corasick automaton is built once per worker, not once per batch. The key must
    capture everything the object depends on (model name, checkpoint path, device...).
    """
    with _cache_lock:
        if key not in _cache:
            _cache[key] = factory()
        return _cache[key]


class Executor(Protocol):
    """Runs independent tasks (results come back in task order) and builds frames: lazy
    distributed tables (``curate.engine.frame``) that jobs transform and write without the
    rows reaching the driver. ``driver_counter`` counts the rows that do come back."""

    name: str
    # tasks map_tasks runs at once (1: one after another in this process); where there are
    # many, a serial pass of the driver's is worth sharing out (a subset's files, ``subset_parts``)
    task_slots: int

    def map_tasks(self, tasks: list[dict], fn: TaskFn, description: str = "") -> list[dict]: ...

    def frame_from_tasks(self, tasks: list[dict], fn: Callable, schema) -> Any: ...

    def frame_read(self, paths: list[str], schema) -> Any: ...

    def frame_from_table(self, table) -> Any: ...


class LocalExecutor(LocalFrameBuilder, ArrowFrameOps):
    """Runs tasks one after another in this process, with a progress bar. Frames
    (``LocalFrameBuilder``) and frame operations (``ArrowFrameOps``) hold their rows in memory."""

    name = "local"
    task_slots = 1

    def __init__(self, progress: bool = False):
        self.progress = progress

    def map_tasks(self, tasks: list[dict], fn: TaskFn, description: str = "") -> list[dict]:
        results = []
        it: Iterable[dict] = tasks
        if self.progress and tasks:
            from curate.progress import track

            it = track(tasks, description or "tasks")
        for t in it:
            results.append(fn(t))
        self.driver_counter.note("map_tasks", len(results))
        return results

    # Data operations jobs ask of any executor (SparkExecutor has the same methods); tables
    # come back with the columns of ``schema`` as produced, callers cast them.
    def collect_task_rows(self, tasks: list[dict], fn: Callable, schema):
        """Every batch ``fn`` yields for every task, concatenated in task order."""
        import pyarrow as pa

        batches = [b for t in tasks for b in fn(t) if b.num_rows]
        return pa.Table.from_batches(batches) if batches else schema.empty_table()

    def grouped_apply(self, tasks: list[dict], rows_fn: Callable, row_schema, key: str,
                      group_fn: Callable, out_schema):
        """Rows from the tasks grouped by ``key`` (sort and slice), ``group_fn`` per group."""
        import numpy as np
        import pyarrow as pa

        rows = self.collect_task_rows(tasks, rows_fn, row_schema)
        if rows.num_rows == 0:
            return out_schema.empty_table()
        rows = rows.sort_by([(key, "ascending")])
        keys = rows.column(key).to_numpy()
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        ends = np.r_[starts[1:], len(keys)]
        outs = [group_fn(rows.slice(s, e - s)) for s, e in zip(starts, ends)]
        outs = [o.select(out_schema.names).cast(out_schema) for o in outs if o.num_rows]
        return pa.concat_tables(outs) if outs else out_schema.empty_table()

    def sum_task_rows(self, tasks: list[dict], fn: Callable, schema, keys: list[str], value: str,
                      min_total: int):
        """Rows from the tasks summed by ``keys``; groups whose total is below ``min_total`` dropped."""
        import pyarrow as pa
        import pyarrow.compute as pc

        batches = [b for t in tasks for b in fn(t)]
        table = pa.Table.from_batches(batches, schema=schema)
        summed = table.group_by(keys).aggregate([(value, "sum")]).rename_columns([*keys, value])
        return summed.filter(pc.greater_equal(summed[value], min_total))

    def run_img2dataset(self, downloader: Callable, reader, processes: int, subjob_size: int,
                        max_shard_retry: int) -> None:
        """img2dataset's shards downloaded in this process, failed shards retried as its
        distributors do."""
        failed = [row for row in reader if not downloader(row)[0]]
        for _ in range(max_shard_retry):
            failed = [row for row in failed if not downloader(row)[0]]


# ---------------------------------------------------------------- engine choice
ENGINES = ("auto", "local", "spark")

# Pools up to this many samples run in-process under ``--engine auto``: below it the JVM
# start-up and Spark's per-stage overhead outweigh Spark's parallelism. Measured with
# bench/engine_threshold.py (docs/engine.md): in-process was faster for every job at 10k, 50k,
# 200k and 500k rows on 2 cores, SemDeDup nearly even at 500k. Override with CURATE_LOCAL_MAX_ROWS.
LOCAL_MAX_ROWS = 500_000


def local_max_rows() -> int:
    import os

    return int(os.environ.get("CURATE_LOCAL_MAX_ROWS", LOCAL_MAX_ROWS))


def dataset_rows(dataset: str) -> int | None:
    """Samples in the dataset (Parquet footers only), else its downloads; None if neither."""
    from curate.tables import Dataset

    ds = Dataset(dataset)
    for table in ("samples", "downloads"):
        if ds.has_table(table):
            try:
                return ds.count(table)
            except Exception:  # noqa: BLE001 - an unreadable shard is the job's error to report
                return None
    return None


def auto_engine(master: str | None = None, conf: list[str] | None = None,
                dataset: str | None = None, rows: int | None = None) -> tuple[str, str]:
    """(engine, why) for ``--engine auto``: Spark when a Spark master or setting is given, when
    running under spark-submit, or when the dataset is over ``local_max_rows()`` samples or
    of unknown size; in-process otherwise. ``rows`` sizes a job whose dataset does not exist
    yet (ingest: its inputs' rows, ``curate.ingest.job.estimate_input_rows``)."""
    import os

    if master:
        return "spark", f"--master {master}"
    if conf:
        return "spark", "--conf given"
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        return "spark", "running under spark-submit"
    what = "input rows" if rows is not None else "samples"
    if rows is None:
        rows = dataset_rows(dataset) if dataset else None
    if rows is None:
        return "spark", "dataset size unknown"
    limit = local_max_rows()
    if rows > limit:  # input rows: counted until past the limit (``estimate_input_rows``)
        least = "at least " if what == "input rows" else ""
        return "spark", f"{least}{rows:,} {what} > {limit:,} (CURATE_LOCAL_MAX_ROWS)"
    return "local", f"{rows:,} {what} <= {limit:,} (CURATE_LOCAL_MAX_ROWS)"
