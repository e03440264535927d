"""A selection query run by the engine's workers, one uid range per task.

``curate select --sql`` returns uids; DataComp-size pools return billions. Instead of one DuckDB
query in the driver (its joins and sort grow with the pool), the uid space is cut into ranges
of about ``RANGE_ROWS`` rows of the largest table the query names, and each task runs the
query with its result restricted to one range (``SELECT uid FROM (query) WHERE lo <= uid <
hi``). The restriction is on the query's result, so any query means what it meant in one
process (a global top-N or a quantile over a whole table is still global; a query that draws
at random, ``ORDER BY random()`` or ``USING SAMPLE``, runs as one task, since each task would
draw a sample of its own); where the query
joins or filters tables on ``uid`` DuckDB pushes the range down into every scan and the
uid-sorted row groups outside the range are skipped, so a task reads and holds about one
range. Each task checks its uids (syntax, present in ``samples``) and writes them sorted to
one part of a temporary table; the driver gets a few counts per task and streams the parts,
in range order, into the subset's files.
"""

from __future__ import annotations

import math
import re

import pyarrow.parquet as pq

from curate.tables import Dataset
from curate.uid import UID_RE

RANGE_ROWS = 1_000_000  # rows of the query's largest table per task (a task's DuckDB holds ~ one range)
MAX_RANGES = 65_536
_HEX = 16  # cut points are 16-hex-digit prefixes: 2^64 positions, finer than any pool


def table_rows_and_uid_bounds(dataset: Dataset, table: str) -> tuple[int, str | None, str | None]:
    """(rows, smallest uid, largest uid) of a table from its shards' footers (no data read)."""
    rows, lo, hi = 0, None, None
    for path in dataset.shards(table):
        md = pq.ParquetFile(dataset.open_shard(path)).metadata
        rows += md.num_rows
        names = [md.schema.column(i).name for i in range(md.num_columns)]
        if "uid" not in names:
            continue
        col = names.index("uid")
        for g in range(md.num_row_groups):
            st = md.row_group(g).column(col).statistics
            if st is None or not st.has_min_max or not isinstance(st.min, str):
                continue
            lo = st.min if lo is None else min(lo, st.min)
            hi = st.max if hi is None else max(hi, st.max)
    return rows, lo, hi


def _prefix(uid: str | None, default: int) -> int:
    head = (uid or "")[:_HEX].ljust(_HEX, "0")
    return int(head, 16) if re.fullmatch(r"[0-9a-f]+", head) else default


def uid_ranges(dataset: Dataset, tables: list[str], range_rows: int | None = None) -> list[tuple[str | None, str | None]]:
    """Contiguous ranges ``[lo, hi)`` of text covering every string (the first has no lower
    bound, the last no upper one), about ``range_rows`` rows of the largest of ``tables`` each:
    cut at evenly spaced 16-hex-digit prefixes between the smallest and largest uid the
    tables' footers record (uids are hashes, so rows spread evenly between them)."""
    rows, lo, hi = 0, None, None
    for t in tables:
        n, a, b = table_rows_and_uid_bounds(dataset, t)
        rows = max(rows, n)
        lo = a if lo is None or (a is not None and a < lo) else lo
        hi = b if hi is None or (b is not None and b > hi) else hi
    parts = min(MAX_RANGES, max(1, math.ceil(rows / max(1, range_rows or RANGE_ROWS))))
    a, b = _prefix(lo, 0), _prefix(hi, 16**_HEX - 1)
    if b <= a:
        a, b = 0, 16**_HEX - 1
    cuts = sorted({f"{a + (b - a) * i // parts:0{_HEX}x}" for i in range(1, parts)})
    return list(zip([None, *cuts], [*cuts, None]))


# functions whose value differs from one call (or one process) to the next: a query using one,
# or a sample clause, draws differently in each range task, so it runs as one task
VOLATILE_FUNCTIONS = frozenset({"random", "setseed", "uuid", "gen_random_uuid", "uuidv4", "uuidv7"})


def draws_at_random(query: str) -> bool:
    """Whether the query's result depends on a random draw (``ORDER BY random()``, ``USING
    SAMPLE``, ``TABLESAMPLE``, ``uuid()``): from DuckDB's own parse of it, so a word inside a
    string or a column name does not count."""
    import json

    import duckdb

    try:
        with duckdb.connect() as con:
            tree = json.loads(con.execute("SELECT json_serialize_sql(?)", [query]).fetchone()[0])
    except (duckdb.Error, TypeError, ValueError):  # no json support: the words decide, erring towards one task
        words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", query)}
        return bool(words & (VOLATILE_FUNCTIONS | {"sample", "tablesample"}))
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if node.get("sample") is not None or str(node.get("function_name", "")).lower() in VOLATILE_FUNCTIONS:
                return True
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return False


def query_ranges(dataset: Dataset, query: str, tables: list[str],
                 range_rows: int | None = None) -> list[tuple[str | None, str | None]]:
    """The uid ranges a query runs in: ``uid_ranges``, or one range (the whole query in one
    task) for a query that draws at random, since each task would draw its own sample."""
    if draws_at_random(query):
        return [(None, None)]
    return uid_ranges(dataset, tables, range_rows)


def range_condition(lo: str | None, hi: str | None, column: str = "uid") -> str:
    from curate.sql.views import quote

    parts = ([f"{column} >= {quote(lo)}"] if lo is not None else []) + ([f"{column} < {quote(hi)}"] if hi is not None else [])
    return " AND ".join(parts) or "true"


def select_range(task: dict) -> dict:
    """One range of a selection (runs on a worker): counts, the first bad and unknown uids in
    uid order, and the range's selected uids sorted into ``task["part"]`` (when it has any and
    the query passed its checks in this range)."""
    from curate.sql.select import SQLError, relation_sql, selection_connection

    import duckdb

    ds = Dataset(task["root"])
    con = selection_connection(ds, memory_limit=task["memory_limit"], views=task["views"])
    try:
        return _run_range(con, ds, task, relation_sql(con, task["query"]))
    except duckdb.Error as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SQLError(f"query failed: {msg}") from e
    finally:
        con.close()


def _run_range(con, ds: Dataset, task: dict, rel: str) -> dict:
    cond = range_condition(task["lo"], task["hi"])
    # nulls belong to no range: the first task counts them
    where = f"uid IS NULL OR ({cond})" if task["index"] == 0 else cond
    known = (f"uid IN (SELECT uid FROM samples WHERE {cond})" if task["has_samples"] else "true")
    pattern = UID_RE.pattern.strip("^$")
    n, nulls, bad, first_bad, unknown, first_unknown = con.execute(
        f"SELECT count(*), count(*) - count(uid), count(*) FILTER (WHERE NOT ok), min(uid) FILTER (WHERE NOT ok), "
        f"count(*) FILTER (WHERE ok AND NOT known), min(uid) FILTER (WHERE ok AND NOT known) "
        f"FROM (SELECT uid, regexp_full_match(uid, '{pattern}') AS ok, {known} AS known "
        f"FROM ({rel}) AS r WHERE {where}) AS c").fetchall()[0]
    out = {"index": task["index"], "returned": n, "null_uid": nulls, "bad": bad, "first_bad": first_bad,
           "unknown": unknown, "first_unknown": first_unknown, "selected": 0, "written": False}
    if bad or (unknown and not task["allow_unknown"]) or n - nulls - unknown == 0 or not task.get("write", True):
        return out
    import pyarrow as pa

    from curate.tables import load_schema
    from curate.tables.atomic import atomic_path, parquet_options

    schema = load_schema("subset").arrow()
    reader = con.sql(f"SELECT uid FROM ({rel}) AS r WHERE {cond} AND {known} ORDER BY uid").to_arrow_reader(65536)
    with atomic_path(ds.shard_path(task["table"], task["index"])) as tmp:
        with pq.ParquetWriter(tmp, schema, **parquet_options(schema)) as writer:
            for batch in reader:
                out["selected"] += batch.num_rows
                writer.write_table(pa.Table.from_batches([batch]).cast(schema))
    out["written"] = True
    return out
