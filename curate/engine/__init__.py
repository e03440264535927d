"""Executors: where stages run. Stages never import Spark; only ``curate.engine.spark`` does.

- ``LocalExecutor`` runs per-task functions in a plain loop in this process (tests, benchmarks,
  a GPU box without Spark).
- ``SparkExecutor`` (in ``curate.engine.spark``) runs the same functions as Spark tasks, one
  partition per task, and adds the shuffles (sort, group, dedup) that need a cluster.

A task is a JSON-able dict. A task function takes the task and returns a JSON-able dict of
stats (counts that add up across tasks); it reads and writes its own shards with pyarrow,
committing each output atomically, so a rerun can skip tasks whose outputs exist.

``auto_engine`` picks one for ``--engine auto`` (the CLI default): in-process for small pools,
Spark for large ones and whenever a cluster is named (docs/engine.md).
"""

from curate.engine.base import ENGINES, Executor, LocalExecutor, auto_engine, local_max_rows, worker_cache

__all__ = ["ENGINES", "Executor", "LocalExecutor", "auto_engine", "local_max_rows", "worker_cache"]
