"""Options shared by the job commands (engine selection, Spark settings)."""

from __future__ import annotations

from typing import Optional

import typer

MasterOpt = typer.Option(
    None, "--master",
    help="Spark master URL (local[*], spark://host:7077, yarn, k8s://...). Default: the one "
    "spark-submit gave, else local[*] sized for this machine.")
ConfOpt = typer.Option(
    [], "--conf", help="Spark setting KEY=VALUE, repeatable (e.g. spark.executor.memory=8g).")
EngineOpt = typer.Option(
    "spark", "--engine",
    help="spark (default: the one engine at scale) or local (plain in-process loop, no JVM; "
    "for debugging and GPU boxes without Spark).")


def parse_conf(conf: list[str]) -> dict[str, str]:
    out = {}
    for item in conf:
        if "=" not in item:
            raise typer.BadParameter(f"--conf expects KEY=VALUE, got {item!r}")
        k, v = item.split("=", 1)
        out[k.strip()] = v.strip()
    return out


def open_executor(engine: str, master: Optional[str], conf: list[str], app_name: str):
    """The executor for a job: SparkExecutor (default) or LocalExecutor."""
    if engine == "local":
        from curate.engine import LocalExecutor

        return LocalExecutor(progress=True)
    if engine != "spark":
        raise typer.BadParameter(f"--engine must be spark or local, got {engine!r}")
    from curate.engine.spark import SparkExecutor, get_session, ui_url
    from curate.progress import info

    spark = get_session(master=master, conf=parse_conf(conf), app_name=app_name)
    info(f"Spark UI: {ui_url(spark)} (master {spark.sparkContext.master})")
    return SparkExecutor(spark)
