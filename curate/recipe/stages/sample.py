"""``sample``: a seeded uniform random sample of the current subset (a fraction or a count).

Useful as the random baseline of an experiment (same size as a curated subset) and to
cap a subset's size. The draw depends only on (seed, sorted distinct uids), so it is stable.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field, model_validator

from curate.decisions import KEPT, decisions_table
from curate.recipe.registry import Params, StageContext, StageResult, register


class SampleParams(Params):
    fraction: float | None = Field(None, gt=0, le=1)
    count: int | None = Field(None, ge=0)
    seed: int = 0

    @model_validator(mode="after")
    def _one(self):
        if (self.fraction is None) == (self.count is None):
            raise ValueError("give exactly one of fraction or count")
        return self


def sample_uids(uids: pa.Array, fraction: float | None, count: int | None, seed: int) -> pa.Array:
    """Sorted distinct uids, then a seeded draw without replacement: the kept uids."""
    distinct = pc.unique(uids)
    distinct = distinct.take(pc.array_sort_indices(distinct))
    n = len(distinct)
    k = min(n, count if count is not None else int(round(n * fraction)))
    idx = np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False)) if k else np.array([], np.int64)
    return distinct.take(pa.array(idx, pa.int64()))


@register("sample", SampleParams, family="sample")
def run_sample(ctx: StageContext, uids: pa.Array, p: SampleParams) -> StageResult:
    """Keep a seeded uniform random sample (fraction or count) of the current subset."""
    distinct = pc.unique(uids)
    chosen = sample_uids(uids, p.fraction, p.count, p.seed)
    kept = pc.is_in(distinct, value_set=chosen)
    return StageResult(decisions_table(distinct, ctx.stage_name, kept, pc.if_else(kept, KEPT, "not_sampled")))
