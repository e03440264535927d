"""The read-only views over a dataset's tables: one per table folder, one union per folder of
same-shaped sub-tables."""

from __future__ import annotations

import re

import pyarrow.parquet as pq

from curate.errors import DatasetError
from curate.tables import Dataset


def view_name(table: str) -> str:
    """A table's view name as written in SQL: characters other than letters, digits and ``_``
    become ``_`` (``decisions/basic+clip_score`` -> ``decisions_basic_clip_score``). Tables that
    meet on one name are told apart by ``view_names``."""
    name = re.sub(r"[^0-9a-zA-Z_]+", "_", table).strip("_").lower()
    return name if not name[:1].isdigit() else f"t_{name}"


def view_names(tables: list[str]) -> dict[str, str]:
    """table -> its view name, one each: where tables meet on a ``view_name``, the one whose
    name is that name with only ``/`` for ``_`` keeps it and the others take a suffix from a
    hash of their own name (``decisions_basic_clip_score_5d41a2``), so no table is hidden by
    another and a name never changes when other tables come."""
    import hashlib

    by_name: dict[str, list[str]] = {}
    for t in tables:
        by_name.setdefault(view_name(t), []).append(t)
    out = {}
    for name, same in by_name.items():
        plain = [t for t in same if t.replace("/", "_").lower() == name] if len(same) > 1 else same
        for t in same:
            out[t] = name if t in plain[:1] else f"{name}_{hashlib.sha1(t.encode()).hexdigest()[:6]}"
    return out


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
    from curate.download.job import IMAGES
    from curate.download.results import image_results_files

    tables = [t for t in dataset.tables() if t != IMAGES]
    try:  # img2dataset's raw results: complete shards only
        images = image_results_files(dataset)
    except DatasetError:  # shard names of several widths: the images view is left out, nothing else
        images = []
    for t, name in view_names(tables + ([IMAGES] if images else [])).items():
        files = images if t == IMAGES else dataset.shards(t)
        views[name] = "SELECT * FROM read_parquet([" + ", ".join(quote(str(p)) for p in files) + "])"
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
