"""SQL over a dataset: DuckDB views named after every table folder, read-only.

``samples/`` -> view ``samples``; nested tables join their path with ``_``
(``embeddings/ViT-B-32`` -> ``embeddings_vit_b_32``). A folder whose sub-tables share one
column set also gets a union view named after it (``decisions`` = all decision runs), with
a ``_table`` column saying which sub-table a row came from.
"""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import CurateError
from curate.tables import Dataset


def view_name(table: str) -> str:
    name = re.sub(r"[^0-9a-zA-Z_]+", "_", table).strip("_").lower()
    return name if not name[:1].isdigit() else f"t_{name}"


def _q(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def table_views(dataset: Dataset) -> dict[str, str]:
    """view name -> SQL that reads it."""
    views: dict[str, str] = {}
    tables = dataset.tables()
    for t in tables:
        glob = str(dataset.table_dir(t) / "*.parquet")
        views[view_name(t)] = f"SELECT * FROM read_parquet({_q(glob)})"
    groups: dict[str, list[str]] = {}
    for t in tables:
        if "/" in t:
            groups.setdefault(t.rsplit("/", 1)[0], []).append(t)
    for parent, members in groups.items():
        name = view_name(parent)
        if name in views:
            continue
        schemas = {tuple(pq.read_schema(dataset.shards(m)[0]).names) for m in members}
        if len(schemas) != 1:
            continue
        parts = [f"SELECT *, {_q(m.rsplit('/', 1)[1])} AS _table FROM read_parquet({_q(str(dataset.table_dir(m) / '*.parquet'))})"
                 for m in members]
        views[name] = " UNION ALL BY NAME ".join(parts)
    return views


def connect(dataset: Dataset | str | Path) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection with a view per table; external writes disabled."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    con = duckdb.connect(":memory:")
    for name, sql in table_views(ds).items():
        con.execute(f'CREATE VIEW "{name}" AS {sql}')
    # Read-only: the dataset folder may be read, nothing else may be touched (no COPY ... TO,
    # no ATTACH, no other files), and the settings are then locked.
    con.execute(f"SET allowed_directories = [{_q(str(ds.root) + '/')}]")
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


_READ_ONLY = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}


def check_read_only(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    """Only SELECT-like statements (SELECT, WITH, DESCRIBE, SHOW, SUMMARIZE, EXPLAIN) run."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise CurateError(f"SQL error: {e}") from e
    if not statements:
        raise CurateError("SQL error: no statement given")
    for st in statements:
        if st.type not in _READ_ONLY:
            raise CurateError(f"curate sql is read-only: {st.type.name} statements are not allowed")


def query(dataset: Dataset | str | Path, sql: str) -> pa.Table:
    """Run read-only SQL over the dataset's views; the last statement's result as Arrow."""
    con = connect(dataset)
    try:
        check_read_only(con, sql)
        return con.sql(sql).to_arrow_table()
    except duckdb.Error as e:
        raise CurateError(f"SQL error: {e}") from e
    finally:
        con.close()
