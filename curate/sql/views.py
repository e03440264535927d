"""The read-only views over a dataset's tables: one per table folder, one union per folder of
same-shaped sub-tables."""

from __future__ import annotations

import re

import pyarrow.parquet as pq

from curate.tables import Dataset


def view_name(table: str) -> str:
    name = re.sub(r"[^0-9a-zA-Z_]+", "_", table).strip("_").lower()
    return name if not name[:1].isdigit() else f"t_{name}"


def quote(s: str) -> str:
    """``s`` as a SQL string literal."""
    return "'" + s.replace("'", "''") + "'"


def shard_list(dataset: Dataset, table: str) -> str:
    """The table's shard files as a DuckDB list literal. Listed, not globbed: a dataset path such
    as ``pool [v2]`` holds glob characters, and ``allowed_directories`` checks paths literally."""
    return "[" + ", ".join(quote(str(p)) for p in dataset.shards(table)) + "]"


def table_views(dataset: Dataset) -> dict[str, str]:
    """view name -> SQL that reads it."""
    views: dict[str, str] = {}
    tables = dataset.tables()
    for t in tables:
        views[view_name(t)] = f"SELECT * FROM read_parquet({shard_list(dataset, t)})"
    groups: dict[str, list[str]] = {}
    for t in tables:
        if "/" in t:
            groups.setdefault(t.rsplit("/", 1)[0], []).append(t)
    for parent, members in groups.items():
        name = view_name(parent)
        if name in views:
            continue
        schemas = {tuple(pq.read_schema(dataset.open_shard(dataset.shards(m)[0])).names) for m in members}
        if len(schemas) != 1:
            continue
        parts = [f"SELECT *, {quote(m.rsplit('/', 1)[1])} AS _table FROM read_parquet({shard_list(dataset, m)})"
                 for m in members]
        views[name] = " UNION ALL BY NAME ".join(parts)
    return views
