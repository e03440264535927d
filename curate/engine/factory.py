"""Open the executor a job runs on: the one place that turns ``--engine/--master/--conf`` into
a LocalExecutor or a SparkExecutor (commands, recipes and the demo all come through here)."""

from __future__ import annotations

import os
from typing import Optional

from curate.engine.base import ENGINES, LocalExecutor, auto_engine
from curate.errors import CurateError


class EngineSettingError(CurateError, ValueError):
    """A bad ``--engine`` or ``--conf`` value (the CLI shows it as a usage error)."""


def parse_spark_conf(conf: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` Spark settings -> a dict (the value may itself hold '=')."""
    from curate.keyvalue import parse_key_values

    try:
        return parse_key_values(conf, "--conf")
    except ValueError as e:
        raise EngineSettingError(str(e)) from None


def open_executor(engine: str, master: Optional[str], conf: list[str], app_name: str,
                  dataset: Optional[str] = None, rows: Optional[int] = None, shared: Optional[str] = None):
    """LocalExecutor or SparkExecutor for ``engine`` auto/local/spark.

    ``auto`` sizes the job by the samples in ``dataset`` (a folder), or by ``rows`` (a job
    whose dataset does not exist yet: ingest); see ``auto_engine`` for the rule. On a cluster
    master, the executors must see ``shared`` (default ``dataset``; ingest's output) at the
    driver's path: checked once here (``curate.engine.shared_path``)."""
    if engine not in ENGINES:
        raise EngineSettingError(f"--engine must be one of {', '.join(ENGINES)}, got {engine!r}")
    settings = parse_spark_conf(conf)  # checked before any JVM starts, whatever the engine
    if engine == "auto":
        engine, why = auto_engine(master=master, conf=conf, dataset=dataset, rows=rows)
        if os.environ.get("CURATE_VERBOSE"):
            from curate.progress import info

            info(f"engine auto: {engine} ({why})")
    if engine == "local":
        return LocalExecutor(progress=True)
    from curate.engine.spark import SparkExecutor, get_session, ui_url
    from curate.progress import info

    spark = get_session(master=master, conf=settings, app_name=app_name)
    if ui_url(spark):
        info(f"Spark UI: {ui_url(spark)} (master {spark.sparkContext.master})")
    executor = SparkExecutor(spark)
    folder = shared or dataset
    from curate import storage

    if folder and not spark.sparkContext.master.startswith("local") and not storage.is_uri(folder):
        from curate.engine.shared_path import check_shared_path

        check_shared_path(executor, folder, max(2, min(16, spark.sparkContext.defaultParallelism)))
    return executor
