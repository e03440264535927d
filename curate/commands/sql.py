"""`curate sql` and `curate stats`: look at any dataset with SQL."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _console():
    import os

    from rich.console import Console

    # a terminal, or COLUMNS set: that width; other piped output: wide enough not to fold
    return Console() if Console().is_terminal or os.environ.get("COLUMNS") else Console(width=200)


def _print_table(table, max_rows: int, title: str | None = None) -> None:
    from rich.table import Table

    console = _console()
    if title:
        # a heading of its own, wrapped between words: a Table title is squeezed into the
        # table's width and breaks letter by letter on a narrow terminal
        console.print(f"[bold]{title}[/bold]", overflow="fold", highlight=False)
    t = Table(show_lines=False)
    import pyarrow.types as pat

    for field in table.schema:
        numeric = pat.is_integer(field.type) or pat.is_floating(field.type) or pat.is_decimal(field.type)
        t.add_column(field.name, overflow="fold", justify="right" if numeric else "left")
    for row in table.slice(0, max_rows).to_pylist():
        t.add_row(*["" if v is None else str(v) for v in row.values()])
    console.print(t)
    if table.num_rows > max_rows:
        console.print(f"... {table.num_rows - max_rows} more rows (use --limit or --out)")


def register(app: typer.Typer) -> None:
    @app.command("sql")
    def sql(
        dataset: str = typer.Argument(..., help="Dataset folder."),
        query: str = typer.Argument(..., help="SELECT statement; every table is a view (samples, rejects, "
                                              "decisions_<run>, embeddings_<model>, subsets_<name>, ...)."),
        out: Optional[str] = typer.Option(None, "--out", help="Write the result to a .csv or .parquet file instead of printing."),
        limit: int = typer.Option(50, "--limit", help="Rows to print."),
    ):
        """Run read-only SQL (DuckDB) over views of every table in DATASET."""
        from curate.sql import query as run_query

        result = run_query(dataset, query)
        if out:
            p = Path(out)
            if p.suffix == ".parquet":
                import pyarrow.parquet as pq

                pq.write_table(result, p)
            elif p.suffix == ".csv":
                import pyarrow.csv as pcsv

                pcsv.write_csv(result, p)
            else:
                raise typer.BadParameter("--out must end in .csv or .parquet")
            typer.echo(f"wrote {result.num_rows} rows to {p}")
            return
        _print_table(result, limit)

    @app.command("stats")
    def stats(dataset: str = typer.Argument(..., help="Dataset folder.")):
        """Row counts per table, download outcomes, and why rows were rejected or removed."""
        import pyarrow as pa

        from curate.download.job import IMAGES
        from curate.sql import query as run_query
        from curate.sql import table_views, view_name
        from curate.tables import Dataset

        ds = Dataset(dataset)
        views = table_views(ds)
        # images/*.parquet are img2dataset's raw per-shard results, one row per attempt (a
        # first all-blocked run and its retry both count): not a table of the dataset; the
        # downloads table holds each sample's latest outcome
        # one row per table folder (decisions/rep, not also the "decisions" view over all runs)
        tables = [t for t in ds.tables() if t != IMAGES]
        rows = [{"table": t, "rows": run_query(ds, f'SELECT count(*) AS n FROM "{view_name(t)}"').column(0)[0].as_py()}
                for t in tables]
        _print_table(pa.Table.from_pylist(rows, schema=pa.schema([("table", pa.string()), ("rows", pa.int64())])),
                     1000, title=f"tables in {ds.root}")
        if IMAGES in views:
            attempts = run_query(ds, f'SELECT count(*) FROM "{IMAGES}"').column(0)[0].as_py()
            files = len(ds.shards(IMAGES))
            _console().print(f"{IMAGES}/: img2dataset's raw results, {attempts:,} attempt rows in {files:,} "
                             "files (every attempt; not samples); see downloads for each sample's outcome",
                             highlight=False)
        if "downloads" in views:
            r = run_query(ds, "SELECT status, coalesce(error_class, '') AS error_class, count(*) AS samples "
                              "FROM downloads GROUP BY ALL ORDER BY samples DESC, status, error_class")
            if r.num_rows:
                _print_table(r, 100, title="downloads by outcome (one row per sample)")
        if "rejects" in views:
            r = run_query(ds, "SELECT reason, count(*) AS rows FROM rejects GROUP BY reason ORDER BY rows DESC, reason")
            if r.num_rows:
                _print_table(r, 100, title="reject reasons")
        if "duplicates" in views:
            r = run_query(ds, "SELECT reason, count(*) AS rows FROM duplicates GROUP BY reason ORDER BY rows DESC, reason")
            if r.num_rows:
                _print_table(r, 100, title="duplicates")
        if "decisions" in views:
            r = run_query(ds, "SELECT _table AS run, stage, reason, count(*) AS rows FROM decisions "
                              "GROUP BY ALL ORDER BY run, stage, rows DESC")
            _print_table(r, 500, title="decisions")
