"""``curate select``: a subset from a DuckDB query over the dataset's tables, or imported from
a DataComp subset file."""

from __future__ import annotations

import typer

from curate.commands._jobcli import Common, JobRun, job_command
from curate.params.select import SelectParams


def select(run: JobRun, p: SelectParams) -> None:
    from curate.errors import CurateError
    ds = run.ds
    if p.from_file is not None:
        from curate.subset_import import import_subset

        if not ds.exists():
            raise CurateError(f"dataset folder {ds.root} does not exist")
        info = import_subset(ds, p.name, p.from_file, allow_unknown=p.allow_unknown, executor=run.executor())
        dropped = info["counts"]["unknown_uid"]
        typer.echo(f"subset {p.name}: {info['count']:,} uids ({info['distinct']:,} distinct) from {p.from_file} "
                   f"({info['format']}{'' if info['sorted_input'] else ', sorted'}"
                   f"{f', {dropped:,} unknown dropped' if dropped else ''}) -> {info['path']}")
        return
    from curate.sql.select import select_sql

    info = select_sql(ds, p.sql, p.name, embedding_model=p.embedding_model, allow_unknown=p.allow_unknown,
                      memory_limit=p.memory_limit, executor=run.executor())
    # rows the query returned that are not in the subset are said, not dropped in silence
    dropped = "".join(f", {info[k]:,} {what} dropped" for k, what in (("null_uid", "NULL uids"),
                                                                        ("unknown_uid", "unknown uids")) if info.get(k))
    typer.echo(f"subset {p.name}: {info['count']:,} uids ({info['distinct']:,} distinct{dropped}) -> {info['path']}")


def register(app: typer.Typer) -> None:
    app.command("select")(job_command(
        SelectParams, select, app_name="curate-select",
        common=Common(None, dataset_help="Dataset folder or URI (s3://bucket/ds, docs/storage.md).", subset=False,
                      output=False, engine=True, storage=True),
        help="Write subsets/NAME (uids.parquet, DataComp uids.npy, manifest) from a SQL query or a DataComp subset "
        "file."))
