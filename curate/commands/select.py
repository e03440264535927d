"""``curate select --sql QUERY``: a subset from a DuckDB query over the dataset's tables."""

from __future__ import annotations

from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command("select")
    def select(
        dataset: Path = typer.Argument(..., help="Dataset folder."),
        sql: str = typer.Option(..., "--sql", help="SELECT returning a uid column; every table is a view "
                                "(samples, downloads, embeddings_<model>, decisions_<run>, subsets_<name>...). "
                                "A uid returned k times is kept k times (upsampling)."),
        name: str = typer.Option(..., "--name", "-n", help="Subset name: written to subsets/NAME/."),
        embedding_model: str = typer.Option(None, "--embedding-model", help="Model whose table is also the view 'embeddings'."),
        allow_unknown: bool = typer.Option(False, "--allow-unknown",
                                           help="Drop uids that are not in samples instead of failing."),
    ) -> None:
        """Write subsets/NAME (uids.parquet, DataComp uids.npy, manifest) from a SQL query."""
        from curate.recipe.select import select_sql
        from curate.tables import Dataset

        info = select_sql(Dataset(dataset), sql, name, embedding_model=embedding_model, allow_unknown=allow_unknown)
        typer.echo(f"subset {name}: {info['count']:,} uids ({info['distinct']:,} distinct) -> {info['path']}")
