"""DuckDB over a dataset for SQL selection (``curate select --sql`` and the recipe's sql stage).

Same read-only views as ``curate sql`` (``curate.sql``): ``samples``, ``downloads``,
``embeddings_<model>``, ``decisions_<run>``, ``subsets_<name>``...; with an embedding
model given, ``embeddings`` is that model's table, so recipe queries need not spell its id.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from curate.errors import CurateError
from curate.sql import check_read_only, shard_list, view_name
from curate.sql import connect as _connect
from curate.tables import Dataset

__all__ = ["SQLError", "connect", "query_uids", "view_name"]


class SQLError(CurateError):
    """A selection query failed; the message carries DuckDB's explanation."""


def connect(dataset: Dataset, embedding_model: str | None = None) -> duckdb.DuckDBPyConnection:
    con = _connect(dataset)
    if embedding_model and dataset.has_table(f"embeddings/{embedding_model}"):
        files = shard_list(dataset, f"embeddings/{embedding_model}")
        con.execute(f"CREATE OR REPLACE VIEW embeddings AS SELECT * FROM read_parquet({files})")
    return con


def query_uids(con: duckdb.DuckDBPyConnection, query: str) -> pa.Table:
    """Run a read-only selection query; it must return a ``uid`` column (and may return ``value``)."""
    try:
        check_read_only(con, query)
    except CurateError as e:
        raise SQLError(str(e)) from e
    try:
        table = con.sql(query).to_arrow_table()
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
