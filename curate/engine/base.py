"""Executor interface and the in-process executor."""

from __future__ import annotations

import threading
from typing import Any, Callable, Iterable, Protocol

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
    """Runs independent tasks; results come back in task order."""

    name: str

    def map_tasks(self, tasks: list[dict], fn: TaskFn, description: str = "") -> list[dict]: ...


class LocalExecutor:
    """Runs tasks one after another in this process, with a progress bar."""

    name = "local"

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
        return results


# ---------------------------------------------------------------- engine choice
ENGINES = ("auto", "local", "spark")

# Pools up to this many samples run in-process under ``--engine auto``: below it the JVM
# start-up and Spark's per-stage overhead (10-60 s on a laptop) outweigh Spark's parallelism
# (bench/small_pool.py, docs/engine.md). Override with CURATE_LOCAL_MAX_ROWS.
LOCAL_MAX_ROWS = 200_000


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
                dataset: str | None = None) -> tuple[str, str]:
    """(engine, why) for ``--engine auto``: Spark when a Spark master or setting is given, when
    running under spark-submit, or when the dataset is over ``local_max_rows()`` samples or
    of unknown size; in-process otherwise."""
    import os

    if master:
        return "spark", f"--master {master}"
    if conf:
        return "spark", "--conf given"
    if "PYSPARK_GATEWAY_PORT" in os.environ:
        return "spark", "running under spark-submit"
    rows = dataset_rows(dataset) if dataset else None
    if rows is None:
        return "spark", "dataset size unknown"
    limit = local_max_rows()
    if rows > limit:
        return "spark", f"{rows:,} samples > {limit:,} (CURATE_LOCAL_MAX_ROWS)"
    return "local", f"{rows:,} samples <= {limit:,} (CURATE_LOCAL_MAX_ROWS)"
