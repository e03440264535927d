"""Executors: where stages run. Stages never import Spark; only ``curate.engine.spark`` does.

- ``LocalExecutor`` runs per-task functions in a plain loop in this process (tests, benchmarks,
  a GPU box without Spark).
- ``SparkExecutor`` (in ``curate.engine.spark``) runs the same functions as Spark tasks, one
  partition per task, and adds the shuffles (sort, group, dedup) that need a cluster.

A task is a JSON-able dict. A task function takes the task and returns a JSON-able dict of
stats (counts that add up across tasks); it reads and writes its own shards with pyarrow,
committing each output atomically, so a rerun can skip tasks whose outputs exist.
"""

from curate.engine.base import Executor, LocalExecutor, worker_cache

__all__ = ["Executor", "LocalExecutor", "worker_cache"]
