"""`curate sql` and `curate stats`: look at any dataset with SQL."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def _print_table(table, max_rows: int, title: str | None = None) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title=title, show_lines=False)
    for name in table.column_names:
        t.add_column(name, overflow="fold")
    for row in table.slice(0, max_rows).to_pylist():
        t.add_row(*["" if v is None else str(v) for v in row.values()])
    console = Console(width=200 if not Console().is_terminal else None)
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
        """Row counts per table, and why rows were rejected or removed."""
        import pyarrow as pa

        from curate.sql import query as run_query
        from curate.sql import table_views
        from curate.tables import Dataset

        ds = Dataset(dataset)
        views = table_views(ds)
        rows = [{"table": name, "rows": run_query(ds, f'SELECT count(*) AS n FROM "{name}"').column(0)[0].as_py()}
                for name in sorted(views)]
        _print_table(pa.Table.from_pylist(rows), 1000, title=f"tables in {ds.root}")
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
