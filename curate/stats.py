"""`curate stats`: a dataset's tables, and why its rows were rejected, removed or not downloaded.

Rows per table come from the shards' footers (no data read). The outcome counts (downloads by
status and error class, rejects and duplicates by reason, decisions by run, stage and reason)
are aggregates the engine's workers compute; the driver receives one row per distinct outcome.
Reasons and error classes are the code's names, a bounded set. Before, DuckDB scanned every row
of these tables on the driver: hours at DataComp's xlarge pool on a store.
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from curate.download.job import IMAGES
from curate.tables import Dataset

# Distinct outcomes a table may hold (statuses x error classes, reasons x stages): the code's
# names; more means the table holds something else.
MAX_OUTCOMES = 100_000


def table_rows(dataset: Dataset) -> pa.Table:
    """(table, rows) for every table but ``images`` (img2dataset's raw per-shard results, one
    row per attempt: not samples), from the shards' footers."""
    tables = [t for t in dataset.tables() if t != IMAGES]
    return pa.table({"table": pa.array(tables, pa.string()),
                     "rows": pa.array([dataset.count(t) for t in tables], pa.int64())})


def image_attempts(dataset: Dataset) -> tuple[int, int] | None:
    """(attempt rows, files) of img2dataset's raw results (every attempt, not samples), or None."""
    from curate.download.results import image_results_files

    files = image_results_files(dataset)
    return (sum(dataset.shard_rows(IMAGES, f) for f in files), len(files)) if files else None


def outcome_rows(dataset: Dataset, rows: pa.Table | None = None) -> int:
    """Rows of the largest table ``outcome_tables`` aggregates, from ``table_rows`` (read from
    the footers when not given): what sizes the engine."""
    rows = table_rows(dataset) if rows is None else rows
    return max((n for t, n in zip(rows["table"].to_pylist(), rows["rows"].to_pylist()) if _is_outcome(t)),
               default=0)


def _is_outcome(table: str) -> bool:
    return table in ("downloads", "rejects", "duplicates") or table.rsplit("/", 1)[0] == "decisions"


def outcome_tables(dataset: Dataset, executor, tables: list[str] | None = None) -> list[tuple[str, pa.Table, int]]:
    """(title, table, rows to print) for each outcome table the dataset has (the decisions one
    always, empty without decisions). ``tables``: the dataset's tables, when already listed."""
    tables = dataset.tables() if tables is None else tables
    out = []
    if "downloads" in tables:
        t = _counts(dataset, executor, "downloads", ["status", "error_class"], "samples")
        # no error class and an empty one read alike (as SQL's coalesce(error_class, ''))
        t = _merged(t.set_column(1, "error_class", pc.fill_null(t.column("error_class"), "")),
                    ["status", "error_class"], "samples")
        out.append(("downloads by outcome (one row per sample)",
                    t.sort_by([("samples", "descending"), ("status", "ascending"), ("error_class", "ascending")]),
                    100))
    for table, title in (("rejects", "reject reasons"), ("duplicates", "duplicates")):
        if table in tables:
            t = _counts(dataset, executor, table, ["reason"], "rows")
            if t.num_rows:
                out.append((title, t.sort_by([("rows", "descending"), ("reason", "ascending")]), 100))
    parts = []
    for table in (t for t in tables if t.rsplit("/", 1)[0] == "decisions"):
        t = _counts(dataset, executor, table, ["stage", "reason"], "rows")
        parts.append(pa.table({"run": pa.array([table.rsplit("/", 1)[1]] * t.num_rows, pa.string()),
                               "stage": t.column("stage"), "reason": t.column("reason"), "rows": t.column("rows")}))
    decisions = pa.concat_tables(parts) if parts else pa.table(
        {"run": pa.array([], pa.string()), "stage": pa.array([], pa.string()), "reason": pa.array([], pa.string()),
         "rows": pa.array([], pa.int64())})
    out.append(("decisions", decisions.sort_by([("run", "ascending"), ("stage", "ascending"), ("rows", "descending"),
                                                ("reason", "ascending")]), 500))
    return out


def _counts(dataset: Dataset, executor, table: str, keys: list[str], name: str) -> pa.Table:
    """Rows of ``table`` counted by ``keys`` by the engine: one row per distinct key."""
    schema = pa.schema([pa.field(k, pa.string()) for k in keys])
    return (executor.frame_read([str(p) for p in dataset.shards(table)], schema)
            .aggregate(keys, {name: (keys[0], "count")}).collect_small(MAX_OUTCOMES))


def _merged(t: pa.Table, keys: list[str], name: str) -> pa.Table:
    """Rows with equal ``keys`` added up (after a mapping made two groups one)."""
    g = t.group_by(keys, use_threads=False).aggregate([(name, "sum")])
    return pa.table({**{k: g.column(k) for k in keys}, name: g.column(f"{name}_sum")})
