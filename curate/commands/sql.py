"""`curate sql` and `curate stats`: look at any dataset with SQL, or at its tables and outcomes."""

from __future__ import annotations


import typer

from curate.commands._jobcli import Common, JobRun, job_command
from curate.names import check_output_path
from curate.params import JobParams
from curate.params.sql import SQLQueryParams

# `curate sql` and `curate stats` read (DuckDB over the tables): no engine, no lock
_READ_ONLY = dict(run_name=None, dataset_help="Dataset folder or URI (s3://bucket/ds, gs://..., file://...).",
                  subset=False, output=False, engine=False, storage=True, lock_first=False)


def data_console():
    """A console that prints data as it is: no markup ([red]), no emoji codes, no highlighting.
    On a terminal, or with COLUMNS set, that width; other piped output: wide enough not to fold."""
    import os

    from rich.console import Console

    width = None if Console().is_terminal or os.environ.get("COLUMNS") else 200
    return Console(width=width, markup=False, emoji=False, highlight=False)


def wrap_words(text: str, width: int) -> list[str]:
    """Lines of at most ``width`` characters broken between words; a word longer than a line
    (a path, a URL) is cut into pieces of even length, so no line is a lone letter, which is
    what folding at the terminal edge leaves."""
    import math

    width = max(width, 1)
    lines: list[str] = []
    line = ""
    for word in text.split():
        if len(word) > width:
            n = math.ceil(len(word) / width)
            size = math.ceil(len(word) / n)
            pieces = [word[i:i + size] for i in range(0, len(word), size)]
        else:
            pieces = [word]
        for piece in pieces:
            # a whole word joins the line if it fits; the pieces of a cut word start lines
            if line and len(pieces) == 1 and len(line) + 1 + len(piece) <= width:
                line += " " + piece
            else:
                if line:
                    lines.append(line)
                line = piece
    if line:
        lines.append(line)
    return lines or [""]


def _print_wrapped(console, text: str, bold_prefix: int = 0) -> None:
    """Print ``text`` wrapped by :func:`wrap_words` at the console's width; the first
    ``bold_prefix`` characters (a heading or a column name) in bold."""
    from rich.text import Text

    for line in wrap_words(text, console.width):
        t = Text(line)
        if bold_prefix > 0:
            t.stylize("bold", 0, min(bold_prefix, len(line)))
            bold_prefix -= len(line) + 1
        console.print(t, overflow="ignore", no_wrap=True)


def _print_table(table, max_rows: int, title: str | None = None, more: int = 0) -> None:
    """Print up to ``max_rows`` rows; every cell, header and title is plain text, never markup."""
    import pyarrow.types as pat
    from rich.measure import Measurement
    from rich.table import Table
    from rich.text import Text

    console = data_console()
    if title:
        # a heading of its own, wrapped between words: a Table title is squeezed into the
        # table's width and breaks letter by letter on a narrow terminal
        _print_wrapped(console, title, bold_prefix=len(title))
    t = Table(show_lines=False)
    for field in table.schema:
        numeric = pat.is_integer(field.type) or pat.is_floating(field.type) or pat.is_decimal(field.type)
        t.add_column(Text(field.name), overflow="fold", justify="right" if numeric else "left")
    # rows as value lists, never dicts: two result columns may share a name (``SELECT 1 AS a, 2 AS a``)
    shown = table.slice(0, max_rows)
    names = shown.column_names
    rows = list(zip(*(c.to_pylist() for c in shown.columns))) if names else []
    for row in rows:
        t.add_row(*[Text("" if v is None else str(v)) for v in row])
    natural = Measurement.get(console, console.options.update_width(1 << 20), t).maximum
    if natural <= console.width:
        console.print(t)
    else:
        # Too narrow for the table's natural width: a grid would fold every cell mid-word, so
        # each row is printed as "column: value" lines (psql's expanded mode), wrapped by words.
        for i, row in enumerate(rows):
            if i:
                console.print()
            for name, v in zip(names, row):
                _print_wrapped(console, f"{name}: {'' if v is None else v}", bold_prefix=len(name) + 1)
        console.print()
    more += max(0, table.num_rows - max_rows)
    if more:
        console.print(f"... {more} more rows (use --limit or --out)")


def _write_out(batches, p) -> int:
    """Stream the result into a .parquet or .csv file or object (committed whole at the end)."""
    from curate.outputs import write_batches

    return write_batches(batches, p)


class StatsParams(JobParams):
    """``curate stats`` has no parameters of its own."""


def sql(run: JobRun, p: SQLQueryParams) -> None:
    from curate.tables import Dataset

    Dataset(run.dataset).require()
    _run_sql(run.dataset, p.query, p.out, p.limit, p.limits())


def stats(run: JobRun, p: StatsParams) -> None:
    from curate.commands._common import open_executor
    from curate.stats import image_attempts, outcome_rows, outcome_tables, table_rows
    from curate.tables import Dataset

    ds = Dataset(run.dataset).require()
    rows = table_rows(ds)  # one listing and one footer read per shard, for every use below
    _print_table(rows, 1000, title=f"tables in {ds.root}")
    images = image_attempts(ds)
    if images is not None:
        data_console().print(f"images/: img2dataset's raw results, {images[0]:,} attempt rows in {images[1]:,} "
                             "files (every attempt; not samples); see downloads for each sample's outcome",
                             highlight=False)
    # --engine auto: sized by the largest table the outcome counts read (in-process when none)
    executor = open_executor(run.engine, run.master, run.conf, run.app_name, rows=outcome_rows(ds, rows))
    for title, table, rows_max in outcome_tables(ds, executor, rows["table"].to_pylist()):
        _print_table(table, rows_max, title=title)


def register(app: typer.Typer) -> None:
    app.command("sql")(job_command(SQLQueryParams, sql, common=Common(**_READ_ONLY), app_name="curate-sql",
                                   help="Run read-only SQL (DuckDB) over views of every table in DATASET."))
    app.command("stats")(job_command(
        StatsParams, stats, common=Common(**{**_READ_ONLY, "engine": True,
                                             "dataset_help": "Dataset folder or URI (s3://bucket/ds, ...)."}),
        app_name="curate-stats",
        help="Row counts per table, download outcomes, and why rows were rejected or removed."))


def _run_sql(dataset: str, query: str, out: str | None, limit: int, limits: dict) -> None:
    """Print the first ``limit`` rows (the rest counted), or stream every row into ``out``."""
    from curate.outputs import display, suffix
    from curate.sql import query_batches

    if out:
        if suffix(out) not in (".parquet", ".csv"):
            raise typer.BadParameter("--out must end in .csv or .parquet")
        p = check_output_path(out, dataset, "--out")  # never inside the dataset's tables (a URI too)
        n = _write_out(query_batches(dataset, query, **limits), p)
        typer.echo(f"wrote {n} rows to {display(p)}")
        return
    import pyarrow as pa

    shown, more, schema = [], 0, None
    for batch in query_batches(dataset, query, **limits):
        schema = batch.schema
        room = limit - sum(b.num_rows for b in shown)
        if room > 0:
            shown.append(batch.slice(0, room))
        more += max(0, batch.num_rows - max(room, 0))  # the rest is counted, not kept
    if schema is None:  # no batch at all (LIMIT 0, an empty table): said, not a blank
        typer.echo("(no rows)")
        return
    _print_table(pa.Table.from_batches(shown, schema=schema), limit, more=more)
