"""``curate select``: a subset from a DuckDB query over the dataset's tables, or imported from
a DataComp subset file."""

from __future__ import annotations

from typing import List, Optional

import typer

from curate.commands._common import StorageOpt, use_storage_options
from curate.lock import hold_dataset_lock
from curate.names import model_id_callback, name_callback


def register(app: typer.Typer) -> None:
    @app.command("select")
    def select(
        dataset: str = typer.Argument(..., help="Dataset folder or URI (s3://bucket/ds, docs/storage.md)."),
        sql: Optional[str] = typer.Option(None, "--sql", help="SELECT returning a uid column; every table is a view "
                                          "(samples, downloads, embeddings_<model>, decisions_<run>, subsets_<name>...). "
                                          "A uid returned k times is kept k times (upsampling)."),
        from_file: Optional[str] = typer.Option(None, "--from-file", help="Import a DataComp subset file (a path or URI) instead: "
                                                 "a u8,u8 .npy (apply_filter.py's output) or the same records "
                                                 "without a header (raw memmap), or a curate subset folder/uids.parquet. "
                                                 "Unsorted files are sorted, with a warning."),
        name: str = typer.Option(..., "--name", "-n", help="Subset name: written to subsets/NAME/.", callback=name_callback),
        embedding_model: str = typer.Option(None, "--embedding-model", help="Model whose table is also the view 'embeddings'.",
                                           callback=model_id_callback),
        allow_unknown: bool = typer.Option(False, "--allow-unknown",
                                           help="Drop uids that are not in samples instead of failing."),
        storage_option: List[str] = StorageOpt,
    ) -> None:
        """Write subsets/NAME (uids.parquet, DataComp uids.npy, manifest) from a SQL query or a DataComp subset file."""
        from curate.errors import CurateError
        from curate.tables import Dataset

        if (sql is None) == (from_file is None):
            raise CurateError("curate select needs exactly one of --sql QUERY or --from-file PATH")
        use_storage_options(storage_option)
        ds = Dataset(dataset)
        hold_dataset_lock(dataset)  # one writer per dataset
        if from_file is not None:
            from curate.subset_import import import_subset

            if not ds.exists():
                raise CurateError(f"dataset folder {ds.root} does not exist")
            info = import_subset(ds, name, from_file, allow_unknown=allow_unknown)
            dropped = info["counts"]["unknown_uid"]
            typer.echo(f"subset {name}: {info['count']:,} uids ({info['distinct']:,} distinct) from {from_file} "
                       f"({info['format']}{'' if info['sorted_input'] else ', sorted'}"
                       f"{f', {dropped:,} unknown dropped' if dropped else ''}) -> {info['path']}")
            return
        from curate.sql.select import select_sql

        info = select_sql(ds, sql, name, embedding_model=embedding_model, allow_unknown=allow_unknown)
        typer.echo(f"subset {name}: {info['count']:,} uids ({info['distinct']:,} distinct) -> {info['path']}")
