"""SQL selection: a subset or a stage's decisions straight from a DuckDB query (DataComp's "bring
your own filter"), for ``curate select --sql`` and the recipe's ``sql`` stage.

Same read-only views as ``curate sql`` (``curate.sql.views``); with an embedding model given,
``embeddings`` is that model's table, so recipe queries need not spell its id. ``select_sql``
runs the query and every check (nulls, uid syntax, uids unknown to ``samples``) as SQL, and
streams the selected uids in uid order into the subset's files, one batch at a time: the
result is never held as a list.
"""

from __future__ import annotations

import re
import time

import duckdb

from curate.errors import CurateError, DatasetError
from curate.manifest import RunManifest
from curate.sql.connection import DEFAULT_MEMORY_LIMIT, check_read_only, connect
from curate.sql.views import shard_list, view_name
from curate.subset import write_subset_sorted
from curate.tables import Dataset
from curate.uid import UID_RE


class SQLError(CurateError):
    """A selection query failed; the message carries DuckDB's explanation."""


def selection_connection(dataset: Dataset, embedding_model: str | None = None,
                         memory_limit: str | None = DEFAULT_MEMORY_LIMIT) -> duckdb.DuckDBPyConnection:
    """``curate.sql.connect`` plus an ``embeddings`` view of ``embedding_model``'s table."""
    con = connect(dataset, memory_limit=memory_limit)
    if embedding_model and dataset.has_table(f"embeddings/{embedding_model}"):
        files = shard_list(dataset, f"embeddings/{embedding_model}")
        con.execute(f"CREATE OR REPLACE VIEW embeddings AS SELECT * FROM read_parquet({files})")
    return con


def tables_in_query(query: str, dataset: Dataset, embedding_model: str | None) -> list[str]:
    """Tables whose view name appears as a word in the query (a recipe stage's cache key)."""
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", query)}
    names = [t for t in dataset.tables() if view_name(t).lower() in words]
    if "embeddings" in words and embedding_model:
        names.append(f"embeddings/{embedding_model}")
    return names


def _scalar(con, sql: str):
    """The first row of ``sql`` (None when it has none)."""
    rows = con.execute(sql).fetchall()
    return rows[0] if rows else None


def relation_sql(con, query: str) -> str:
    """The query as a sub-select with ``uid`` as text; SQLError for a failing query or no uid."""
    try:
        check_read_only(con, query)
    except Exception as e:  # noqa: BLE001 - curate's own error class, re-raised as the SQL one
        raise SQLError(str(e)) from e
    try:
        rel = con.sql(query)
        columns, types = rel.columns, [str(t) for t in rel.types]
    except duckdb.Error as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SQLError(f"query failed: {msg}") from e
    if "uid" not in columns:
        raise SQLError(f"query must return a 'uid' column; it returned {columns}")
    if types[columns.index("uid")] in ("BLOB", "BIT") or types[columns.index("uid")].startswith(("STRUCT", "MAP")) \
            or types[columns.index("uid")].endswith("]"):
        raise SQLError(f"query's uid column has type {types[columns.index('uid')]}, expected text")
    body = query.strip().rstrip(";").strip()
    return f"SELECT CAST(uid AS VARCHAR) AS uid FROM ({body}) AS q"


def select_sql(dataset: Dataset, query: str, name: str, embedding_model: str | None = None,
               allow_unknown: bool = False, memory_limit: str | None = DEFAULT_MEMORY_LIMIT) -> dict:
    """Run ``query``, check its uids, write ``subsets/<name>``; returns counts and the path.
    DuckDB holds up to ``memory_limit`` for the query's joins and sort and spills beyond it."""
    if not dataset.exists():
        raise DatasetError(f"dataset folder {dataset.root} does not exist")
    t0 = time.perf_counter()
    from curate.models.scorers import embeddings_id

    embedding_model = embeddings_id(embedding_model, dataset.root)  # a scorer's name: its embeddings
    con = selection_connection(dataset, embedding_model, memory_limit)
    rel = relation_sql(con, query)
    try:
        returned, nulls = _scalar(con, f"SELECT count(*), count(*) - count(uid) FROM ({rel})")
        present = f"SELECT uid FROM ({rel}) WHERE uid IS NOT NULL"
        bad = _scalar(con, f"SELECT i, uid FROM (SELECT row_number() OVER () - 1 AS i, uid FROM ({present})) "
                           f"WHERE NOT regexp_full_match(uid, '{UID_RE.pattern.strip('^$')}') ORDER BY i LIMIT 1")
        if bad is not None:
            raise DatasetError(f"query result row {bad[0]}: {bad[1]!r} is not a 32-char lowercase hex uid")
        unknown = 0
        selected_sql = present
        if dataset.has_table("samples"):
            outside = f"SELECT uid FROM ({present}) WHERE uid NOT IN (SELECT uid FROM samples)"
            unknown = _scalar(con, f"SELECT count(*) FROM ({outside})")[0]
            if unknown and not allow_unknown:
                first = _scalar(con, f"{outside} LIMIT 1")[0]
                raise DatasetError(f"query returned {unknown} uids that are not in samples (first: {first}); "
                                   f"pass --allow-unknown to drop them")
            selected_sql = f"SELECT uid FROM ({present}) WHERE uid IN (SELECT uid FROM samples)"
        selected, distinct = _scalar(con, f"SELECT count(*), count(DISTINCT uid) FROM ({selected_sql})")
        m = RunManifest(f"select-{name}", {"sql": query, "embedding_model": embedding_model})
        counts = {"returned": returned, "null_uid": nulls, "unknown_uid": unknown, "selected": selected}
        reader = con.sql(f"{selected_sql} ORDER BY uid").fetch_record_batch(65536)
        path = write_subset_sorted(dataset, name, (b.column(0) for b in reader), selected,
                                   manifest={"stage": "select_sql", "sql": query, "counts": counts,
                                             "seconds": round(time.perf_counter() - t0, 4)})
    except duckdb.Error as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SQLError(f"query failed: {msg}") from e
    m["counts"] = counts
    m["outputs"] = {"subset": f"subsets/{name}"}
    m.write(dataset)
    return {"count": selected, "distinct": distinct, "path": str(path), **counts}
