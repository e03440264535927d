"""Options shared by the job commands (engine selection, Spark settings, storage settings)."""

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
    "auto", "--engine",
    help="auto (default): in-process for a dataset of at most CURATE_LOCAL_MAX_ROWS samples "
    "(500,000), Spark above that and whenever --master/--conf is given or under spark-submit; "
    "spark; or local (plain in-process loop, no JVM). Same output bytes either way.")

StorageOpt = typer.Option(
    [], "--storage-option",
    help="Object-store setting KEY=VALUE for s3://, gs://, ... paths, repeatable (e.g. endpoint_url=http://host:9000, "
    "region=eu-west-1, anonymous=true); overrides the AWS_* environment variables (docs/storage.md).")


def use_storage_options(items: list[str]) -> dict[str, str]:
    """Parse ``--storage-option`` items once and make them every later path's settings (this
    process, its workers and subprocesses inherit them)."""
    from curate import storage

    try:
        options = storage.parse_options(items)
    except storage.StorageError as e:
        raise typer.BadParameter(str(e)) from None
    storage.configure(options)
    return options


def parse_conf(conf: list[str]) -> dict[str, str]:
    """``--conf KEY=VALUE`` items -> a dict; a bad item is a usage error (exit 2)."""
    from curate.engine.factory import EngineSettingError, parse_spark_conf

    try:
        return parse_spark_conf(conf)
    except EngineSettingError as e:
        raise typer.BadParameter(str(e)) from None


def require_local(path: str, what: str = "dataset") -> None:
    """A command whose paths are not yet converted to object storage refuses a URI in one line."""
    from curate import storage
    from curate.errors import DatasetError

    if storage.is_uri(path):
        raise DatasetError(f"{what} {path}: this command does not read or write object storage yet "
                           f"(docs/storage.md lists what does); use a local or mounted path")


def require_tables(dataset: str, tables: dict[str, str], remote_ok: bool = False) -> None:
    """Before any engine starts: the dataset folder exists and holds each table named in
    ``tables`` (table -> the command that makes it); else one line saying what to run.
    A URI dataset is refused unless the command says it handles one (``remote_ok``)."""
    from curate.errors import DatasetError
    from curate.tables import Dataset

    if not remote_ok:
        require_local(dataset)
    ds = Dataset(dataset)
    if not ds.exists():
        raise DatasetError(f"dataset folder {ds.root} does not exist")
    for table, maker in tables.items():
        if not ds.has_table(table):
            raise DatasetError(f"{ds.root} has no {table} table; run `{maker}` first")


def require_paths(paths, what: str) -> None:
    """Before any engine starts: every input path exists (a dangling link counts as there:
    the readers report it as an unreadable file)."""
    from pathlib import Path

    from curate import storage
    from curate.errors import InputFileError

    for raw in paths:
        if storage.is_uri(raw):
            if not storage.exists(raw):
                raise InputFileError(str(raw), f"no such {what}")
            continue
        p = Path(raw)
        if not p.exists() and not p.is_symlink():
            raise InputFileError(str(raw), f"no such {what}")


def open_executor(engine: str, master: Optional[str], conf: list[str], app_name: str,
                  dataset: Optional[str] = None, rows: Optional[int] = None, shared: Optional[str] = None):
    """``curate.engine.factory.open_executor`` with its setting errors shown as usage errors."""
    from curate.engine.factory import EngineSettingError, open_executor as open_engine

    try:
        return open_engine(engine, master, conf, app_name, dataset=dataset, rows=rows, shared=shared)
    except EngineSettingError as e:
        raise typer.BadParameter(str(e)) from None


def echo_guards(guards: dict | None) -> None:
    """The similarity distributions a job acted on, and its warnings (also in the run manifest)."""
    from curate.embedding_space.guards import summary_lines

    for line in summary_lines(guards):
        typer.echo(line)
