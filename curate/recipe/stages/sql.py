"""``sql``: keep (or remove) the uids a DuckDB query over the dataset's tables returns.

The query sees every table as a view (``samples``, ``downloads``, ``embeddings_<model>``,
``decisions_<run>``...), ``embeddings`` for the recipe's model, and ``input_subset``
(the stage's input uids), so a threshold relative to the current subset is one query::

    - kind: sql
      name: top-half-clip
      query: >
        SELECT uid FROM input_subset JOIN embeddings USING (uid)
        WHERE clip_score >= (SELECT median(clip_score) FROM input_subset JOIN embeddings USING (uid))

A ``value`` column in the result is stored as the decision value of kept rows (a uid the query
returns more than once: its largest value). DuckDB joins the input with the result and
streams the decisions to a table (one batch in memory at a time); the runner checks and
counts them with the engine. The connection and the query checks are ``curate.sql.select``.
"""

from __future__ import annotations

from curate.decisions import KEPT
from curate.engine.frame import conform
from curate.params.sql import SQLParams
from curate.recipe.registry import StageContext, StageOutput, register
from curate.recipe.uid_tables import UidTable
from curate.sql.ranges import range_condition
from curate.sql.select import SQLError, relation_sql, selection_connection, tables_in_query, views_in_query


def _sql_list(paths: list[str]) -> str:
    return "[" + ", ".join("'" + x.replace("'", "''") + "'" for x in paths) + "]"


def decisions_query(con, inp_paths: list[str], p: SQLParams, lo: str | None = None, hi: str | None = None) -> str:
    """The stage's decisions as one DuckDB query: every distinct input uid in ``[lo, hi)`` (a
    task's uid range; None: unbounded), kept where the query returned it (``keep``) or where it
    did not (``remove``); a ``value`` column (keep mode) is the decision value (a uid returned
    more than once: the largest value)."""
    input_view(con, inp_paths)
    hits, has_value = hits_query(con, p, lo, hi)
    return decisions_from(f"({hits})", has_value, p, lo, hi)


def input_view(con, inp_paths: list[str]) -> None:
    """The ``input_subset`` view the query may read: the stage's distinct input uids."""
    con.execute("CREATE OR REPLACE VIEW input_subset AS SELECT DISTINCT uid FROM "
                + (f"read_parquet({_sql_list(inp_paths)})" if inp_paths else "(SELECT NULL::VARCHAR AS uid WHERE false)"))


def decisions_from(hits: str, has_value: bool, p: SQLParams, lo: str | None, hi: str | None) -> str:
    """The decisions of the input uids in ``[lo, hi)`` from ``hits`` (``hits_query``'s rows: a
    sub-query, or a table holding them)."""
    kept = "h.uid IS NOT NULL" if p.mode == "keep" else "h.uid IS NULL"
    return (f"SELECT i.uid AS uid, 'sql' AS stage, ({kept}) AS kept, "
            f"CASE WHEN {kept} THEN '{KEPT}' ELSE '{p.reason}' END AS reason, "
            f"{'h.value' if has_value else 'CAST(NULL AS DOUBLE)'} AS value, CAST(NULL AS VARCHAR) AS detail "
            f"FROM (SELECT uid FROM input_subset WHERE {range_condition(lo, hi)}) AS i "
            f"LEFT JOIN {hits} AS h ON i.uid = h.uid")


def hits_query(con, p: SQLParams, lo: str | None = None, hi: str | None = None) -> tuple[str, bool]:
    """(the distinct non-null uids the stage's query returns in ``[lo, hi)`` with their value,
    whether it has a value column)."""
    import duckdb

    relation_sql(con, p.query)  # read-only, binds, has a textual uid column (SQLError otherwise)
    body = p.query.strip().rstrip(";").strip()
    try:
        has_value = "value" in con.sql(p.query).columns and p.mode == "keep"
    except duckdb.Error as e:  # pragma: no cover - relation_sql bound the same query
        raise SQLError(f"query failed: {e}") from e
    value = "max(CAST(value AS DOUBLE))" if has_value else "CAST(NULL AS DOUBLE)"
    in_range = range_condition(lo, hi, "CAST(uid AS VARCHAR)")
    return (f"SELECT CAST(uid AS VARCHAR) AS uid, {value} AS value FROM ({body}) AS q "
            f"WHERE uid IS NOT NULL AND {in_range} GROUP BY 1"), has_value


def _tables_in_query(p: SQLParams, dataset, embedding_model: str | None) -> list[str]:
    return tables_in_query(p.query, dataset, embedding_model)


@register("sql", SQLParams, family="sql", reads=_tables_in_query, frames=True, code_modules=("curate.sql",),
          names=None)  # its decisions live in _tmp/ until the cache entry holds them
def run_sql(ctx: StageContext, inp: UidTable, p: SQLParams) -> StageOutput:
    """Keep or remove the uids a DuckDB query over the dataset returns."""
    # the engine's tasks run the query one uid range each (curate.sql.ranges) and write that
    # range's decisions, one batch in memory at a time; the runner reads the parts as a frame
    from curate.sql import ranges
    from curate.sql.select import selection_views
    from curate.storage import remove_tree

    views = selection_views(ctx.dataset, ctx.embedding_model)
    inputs = [str(x) for x in inp.paths(ctx.dataset)]
    con = selection_connection(ctx.dataset, views=views)
    try:
        decisions_query(con, inputs, p)  # read-only, binds, a textual uid column: SQLError before any task
    finally:
        con.close()
    table = f"_tmp/{ctx.run_name}/sql_decisions"
    remove_tree(ctx.dataset.table_dir(table))
    bounds = ranges.query_ranges(ctx.dataset, p.query,
                                 _tables_in_query(p, ctx.dataset, ctx.embedding_model) or ["samples"])
    base = {"root": str(ctx.dataset.root), "views": views_in_query(views, p.query), "inputs": inputs,
            "params": p.model_dump(mode="json"), "table": table}
    parts = ctx.executor().map_tasks([dict(base, index=i, lo=lo, hi=hi) for i, (lo, hi) in enumerate(bounds)],
                                     sql_decisions_range, "sql stage ranges")
    bad = sum(r["bad"] for r in parts)
    if bad:  # as `curate select --sql`: a malformed uid matches no sample, and would remove in silence
        first = min(r["first_bad"] for r in parts if r["bad"])
        raise SQLError(f"query result: {first!r} is not a 32-char lowercase hex uid ({bad} such rows; the first "
                       "in uid order is named)")
    return StageOutput(table)


def sql_decisions_range(task: dict) -> dict:
    """One uid range of the stage's decisions, written to part ``index`` of ``task["table"]``."""
    import duckdb
    import pyarrow.parquet as pq

    from curate.selection import DECISIONS
    from curate.tables import Dataset
    from curate.tables.atomic import atomic_path, parquet_options

    ds, p = Dataset(task["root"]), SQLParams(**task["params"])
    con = selection_connection(ds, views=task["views"])
    rows = 0
    try:
        input_view(con, task["inputs"])
        hits, has_value = hits_query(con, p, task["lo"], task["hi"])
        con.execute(f"CREATE TEMP TABLE stage_hits AS {hits}")  # the query run once (spilled past memory)
        bad, first_bad = con.execute("SELECT count(*), min(uid) FROM stage_hits "
                                     "WHERE NOT regexp_full_match(uid, '[0-9a-f]{32}')").fetchall()[0]
        query = decisions_from("stage_hits", has_value, p, task["lo"], task["hi"])
        reader = con.sql(query).to_arrow_reader(65536)
        with atomic_path(ds.shard_path(task["table"], task["index"])) as tmp:
            with pq.ParquetWriter(tmp, DECISIONS, **parquet_options(DECISIONS)) as writer:
                for batch in reader:
                    rows += batch.num_rows
                    writer.write_table(conform(batch, DECISIONS))
    except duckdb.Error as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SQLError(f"query failed: {msg}") from e
    finally:
        con.close()
    return {"index": task["index"], "rows": rows, "bad": int(bad), "first_bad": first_bad}
