"""DuckDB over a dataset for SQL selection (``curate select --sql`` and the recipe's sql stage).

Uses ``curate.sql`` (the views behind ``curate sql``) when it offers a connection factory,
so a query reads the same view names everywhere; otherwise makes the same views here:
each table folder becomes a view named by its path with ``/`` and other non-identifier
characters as ``_`` (``embeddings/curate-tiny`` -> ``embeddings_curate_tiny``).
"""

from __future__ import annotations

import re

import duckdb
import pyarrow as pa

from curate.errors import CurateError
from curate.tables import Dataset


class SQLError(CurateError):
    """A selection query failed; the message carries DuckDB's explanation."""


def view_name(table: str) -> str:
    return re.sub(r"[^0-9A-Za-z_]", "_", table)


def connect(dataset: Dataset, embedding_model: str | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with one view per table of ``dataset``.

    With ``embedding_model`` the view ``embeddings`` is that model's table, so recipe
    queries need not spell the model id.
    """
    con = _from_curate_sql(dataset)
    if con is None:
        con = duckdb.connect(":memory:")
        for t in dataset.tables():
            glob = str(dataset.table_dir(t) / "*.parquet").replace("'", "''")
            con.execute(f'CREATE OR REPLACE VIEW "{view_name(t)}" AS SELECT * FROM read_parquet(\'{glob}\')')
    if embedding_model and dataset.has_table(f"embeddings/{embedding_model}"):
        glob = str(dataset.table_dir(f"embeddings/{embedding_model}") / "*.parquet").replace("'", "''")
        con.execute(f"CREATE OR REPLACE VIEW embeddings AS SELECT * FROM read_parquet('{glob}')")
    return con


def _from_curate_sql(dataset: Dataset):
    try:
        from curate import sql as cs  # the lead's module; optional here
    except ImportError:
        return None
    for fn_name in ("connect", "open_connection", "connection"):
        fn = getattr(cs, fn_name, None)
        if callable(fn):
            try:
                return fn(dataset)
            except TypeError:
                try:
                    return fn(dataset.root)
                except Exception:
                    return None
    return None


def query_uids(con: duckdb.DuckDBPyConnection, query: str) -> pa.Table:
    """Run a selection query; it must return a ``uid`` column (and may return ``value``)."""
    try:
        rel = con.sql(query)
        if rel is None:
            raise SQLError("query must be a SELECT returning a 'uid' column")
        table = rel.to_arrow_table()
    except duckdb.Error as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SQLError(f"query failed: {msg}") from e
    if "uid" not in table.column_names:
        raise SQLError(f"query must return a 'uid' column; it returned {table.column_names}")
    try:
        table = table.set_column(table.schema.get_field_index("uid"), "uid", table.column("uid").cast(pa.string()))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
        raise SQLError(f"query's uid column has type {table.schema.field('uid').type}, expected text") from e
    return table
