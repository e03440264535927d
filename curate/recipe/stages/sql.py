"""``sql``: keep (or remove) the uids a DuckDB query over the dataset's tables returns.

The query sees every table as a view (``samples``, ``downloads``, ``embeddings_<model>``,
``decisions_<run>``...), ``embeddings`` for the recipe's model, and ``input_subset``
(the stage's input uids), so a threshold relative to the current subset is one query::

    - kind: sql
      name: top-half-clip
      query: >
        SELECT uid FROM input_subset JOIN embeddings USING (uid)
        WHERE clip_score >= (SELECT median(clip_score) FROM input_subset JOIN embeddings USING (uid))

A ``value`` column in the result is stored as the decision value of kept rows.
"""

from __future__ import annotations

from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.decisions import KEPT, decisions_table
from curate.recipe.duck import connect, query_uids
from curate.recipe.registry import Params, StageContext, StageResult, register


class SQLParams(Params):
    query: str = Field(min_length=1, description="SELECT returning a uid column (and optionally value)")
    mode: Literal["keep", "remove"] = "keep"
    reason: str = Field("sql_excluded", pattern=r"^[a-z0-9_]+$", description="removal reason recorded")


def select_decisions(ctx: StageContext, uids: pa.Array, p: SQLParams, stage: str) -> pa.Table:
    con = connect(ctx.dataset, ctx.embedding_model)
    distinct = pc.unique(uids)
    con.register("input_subset", pa.table({"uid": distinct}))
    result = query_uids(con, p.query)
    hit = result.column("uid").combine_chunks()
    in_result = pc.is_in(distinct, value_set=hit.drop_null() if hit.null_count else hit)
    kept = in_result if p.mode == "keep" else pc.invert(in_result)
    reason = pc.if_else(kept, KEPT, p.reason)
    value = None
    if "value" in result.column_names and p.mode == "keep":
        by_uid = dict(zip(hit.to_pylist(), result.column("value").cast(pa.float64()).to_pylist()))
        value = [by_uid.get(u) for u in distinct.to_pylist()]
    return decisions_table(distinct, stage, kept, reason, value)


def _tables_in_query(p: SQLParams, dataset, embedding_model: str | None) -> list[str]:
    """Tables whose view name appears as a word in the query (for the cache key)."""
    import re

    from curate.recipe.duck import view_name

    words = {w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]*", p.query)}
    names = [t for t in dataset.tables() if view_name(t).lower() in words]
    if "embeddings" in words and embedding_model:
        names.append(f"embeddings/{embedding_model}")
    return names


@register("sql", SQLParams, family="sql", reads=_tables_in_query)
def run_sql(ctx: StageContext, uids: pa.Array, p: SQLParams) -> StageResult:
    """Keep or remove the uids a DuckDB query over the dataset returns."""
    return StageResult(select_decisions(ctx, uids, p, ctx.stage_name))
