"""SQL selection: a subset or a stage's decisions straight from a DuckDB query (DataComp's "bring
your own filter"), for ``curate select --sql`` and the recipe's ``sql`` stage.

Same read-only views as ``curate sql`` (``curate.sql.views``); with an embedding model given,
``embeddings`` is that model's table, so recipe queries need not spell its id. ``select_sql``
has the engine's tasks run the query one uid range each (``curate.sql.ranges``) with every
check (nulls, uid syntax, uids unknown to ``samples``) as SQL; the driver streams their sorted
parts into the subset's files, one batch at a time: the result is never held as a list, and
no process holds more than about one range.
"""

from __future__ import annotations

import re
import time

import duckdb

from curate.errors import CurateError, DatasetError
from curate.manifest import RunManifest
from curate.sql.connection import DEFAULT_MEMORY_LIMIT, check_read_only, connect
from curate.sql.views import shard_list, table_views, view_names
from curate.subset import read_subset_manifest
from curate.subset_parts import write_subset_from_table
from curate.tables import Dataset


class SQLError(CurateError):
    """A selection query failed; the message carries DuckDB's explanation."""


def selection_views(dataset: Dataset, embedding_model: str | None = None) -> dict[str, str]:
    """``curate.sql.views.table_views`` plus ``embeddings``, ``embedding_model``'s table."""
    views = table_views(dataset)
    if embedding_model and dataset.has_table(f"embeddings/{embedding_model}"):
        views["embeddings"] = f"SELECT * FROM read_parquet({shard_list(dataset, f'embeddings/{embedding_model}')})"
    return views


def views_in_query(views: dict[str, str], query: str, keep: tuple[str, ...] = ("samples",)) -> dict[str, str]:
    """The views a query can name (its words, case-insensitively) and ``keep``: what a task
    needs, so that a task's payload does not list every shard of every table."""
    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", query)} | set(keep)
    return {name: sql for name, sql in views.items() if name.lower() in words}


def selection_connection(dataset: Dataset, embedding_model: str | None = None,
                         memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
                         views: dict[str, str] | None = None) -> duckdb.DuckDBPyConnection:
    """``curate.sql.connect`` with ``selection_views`` (or ``views``, listed once by the driver)."""
    return connect(dataset, memory_limit=memory_limit,
                   views=selection_views(dataset, embedding_model) if views is None else views)


def tables_in_query(query: str, dataset: Dataset, embedding_model: str | None) -> list[str]:
    """Tables whose view name appears as a word in the query (a recipe stage's cache key), and
    every table of a folder whose union view it names (``decisions``, ``subsets``: a rerun of
    one filter changes what they hold); ``embeddings`` with a model given is that model's table."""
    from curate.sql.views import view_name

    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", query)}
    tables = dataset.tables()
    names = [t for t, name in view_names(tables).items() if name in words]
    if "embeddings" in words and embedding_model:
        names.append(f"embeddings/{embedding_model}")
    for t in tables:
        parent = t.rsplit("/", 1)[0] if "/" in t else None
        if parent is None or (parent == "embeddings" and embedding_model):
            continue
        if view_name(parent) in words and t not in names:
            names.append(t)
    return sorted(set(names))


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
               allow_unknown: bool = False, memory_limit: str | None = DEFAULT_MEMORY_LIMIT,
               executor=None, range_rows: int | None = None) -> dict:
    """Run ``query``, check its uids, write ``subsets/<name>``; returns counts and the path.

    The engine's tasks run the query one uid range each (``curate.sql.ranges``), each DuckDB
    holding up to ``memory_limit`` (it spills beyond); the driver binds the query once (its
    errors are one line before any task starts), sums the tasks' counts and streams their
    sorted parts into the subset."""
    from curate.engine import LocalExecutor
    from curate.sql import ranges
    from curate.storage import remove_tree

    if not dataset.exists():
        raise DatasetError(f"dataset folder {dataset.root} does not exist")
    t0 = time.perf_counter()
    from curate.models.scorers import embeddings_id

    embedding_model = embeddings_id(embedding_model, dataset.root)  # a scorer's name: its embeddings
    if embedding_model and not dataset.has_table(f"embeddings/{embedding_model}"):
        # else ``embeddings`` would be the union of every model's table: each sample once per model
        have = sorted(t.split("/", 1)[1] for t in dataset.tables() if t.startswith("embeddings/"))
        raise DatasetError(f"{dataset.root} has no embeddings/{embedding_model} (embeddings: "
                           f"{', '.join(have) or 'none; run `curate embed`'})")
    views = selection_views(dataset, embedding_model)
    con = selection_connection(dataset, memory_limit=memory_limit, views=views)
    try:
        relation_sql(con, query)  # read-only, binds, a textual uid column: SQLError before any task
    finally:
        con.close()
    bounds = ranges.query_ranges(dataset, query, tables_in_query(query, dataset, embedding_model) or dataset.tables(),
                                 range_rows)
    tmp = f"_tmp/select-{name}"
    remove_tree(dataset.table_dir(tmp))
    base = {"root": str(dataset.root), "query": query, "views": views_in_query(views, query),
            "memory_limit": memory_limit, "table": tmp,
            "has_samples": dataset.has_table("samples"), "allow_unknown": allow_unknown}
    tasks = [dict(base, index=i, lo=lo, hi=hi) for i, (lo, hi) in enumerate(bounds)]
    try:
        parts = (executor or LocalExecutor()).map_tasks(tasks, ranges.select_range, "select ranges")
        counts = _checked_counts(parts, allow_unknown, dataset.has_table("samples"))
        m = RunManifest(f"select-{name}", {"sql": query, "embedding_model": embedding_model})
        path = write_subset_from_table(executor, dataset, name, tmp, None, counts["selected"],
                                       manifest={"stage": "select_sql", "sql": query, "counts": counts,
                                                 "seconds": round(time.perf_counter() - t0, 4)})
    finally:
        remove_tree(dataset.table_dir(tmp))
    m["counts"] = counts
    m["ranges"] = len(tasks)
    m["outputs"] = {"subset": f"subsets/{name}"}
    m.write(dataset)
    # distinct uids: counted once, by the subset writer as it streams the parts (its manifest)
    return {"count": counts["selected"], "distinct": read_subset_manifest(dataset, name)["distinct"],
            "path": str(path), **counts}


def _checked_counts(parts: list[dict], allow_unknown: bool, has_samples: bool) -> dict:
    """The tasks' counts summed; DatasetError for a malformed uid or (unless allowed) one not in
    samples, naming the first in uid order and how many."""
    total = {k: sum(p[k] for p in parts) for k in ("returned", "null_uid", "bad", "unknown", "selected")}
    if total["bad"]:
        first = min(p["first_bad"] for p in parts if p["bad"])
        raise DatasetError(f"query result: {first!r} is not a 32-char lowercase hex uid "
                           f"({total['bad']} such rows; the first in uid order is named)")
    if total["unknown"] and not allow_unknown:
        first = min(p["first_unknown"] for p in parts if p["unknown"])
        raise DatasetError(f"query returned {total['unknown']} uids that are not in samples (first: {first}); "
                           f"pass --allow-unknown to drop them")
    return {"returned": total["returned"], "null_uid": total["null_uid"],
            "unknown_uid": total["unknown"] if has_samples else 0, "selected": total["selected"]}


def check_uid_file(dataset: Dataset, uids_file: str, table: str, allow_unknown: bool, executor=None,
                   range_rows: int | None = None) -> dict:
    """The uids of one sorted uid Parquet file under ``dataset`` (an imported subset) checked
    against ``samples`` by the engine's tasks, one uid range each, as ``select_sql`` checks a
    query's result: {"unknown": rows whose uid is not in samples, "first_unknown": the smallest}.
    With ``allow_unknown`` the tasks also write the known rows, sorted, as the parts of
    ``table`` (stream them with ``sorted_uids_from_table``); nothing per row reaches the driver."""
    from curate.engine import LocalExecutor
    from curate.sql import ranges
    from curate.sql.views import quote
    from curate.storage import remove_tree

    views = {"samples": f"SELECT uid FROM read_parquet({shard_list(dataset, 'samples')})",
             "imported": f"SELECT uid FROM read_parquet({quote(uids_file)})"}
    base = {"root": str(dataset.root), "query": "SELECT uid FROM imported", "views": views,
            "memory_limit": DEFAULT_MEMORY_LIMIT, "table": table, "has_samples": True,
            "allow_unknown": allow_unknown, "write": allow_unknown}
    remove_tree(dataset.table_dir(table))
    bounds = ranges.uid_ranges(dataset, ["samples"], range_rows)
    tasks = [dict(base, index=i, lo=lo, hi=hi) for i, (lo, hi) in enumerate(bounds)]
    parts = (executor or LocalExecutor()).map_tasks(tasks, ranges.select_range, "subset check")
    unknown = sum(p["unknown"] for p in parts)
    return {"unknown": unknown, "first_unknown": min((p["first_unknown"] for p in parts if p["unknown"]), default=None),
            "ranges": len(tasks)}

