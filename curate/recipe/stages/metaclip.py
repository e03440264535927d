"""MetaCLIP balancing (issue 5) as a recipe stage: match captions to metadata, cap each entry.

``metadata`` may be a worldwide folder (one <lang>.json per language, issue 18): captions are
then matched against their fastText language's list and t is set per language (MetaCLIP 2).

Matching and balancing run over the whole pool (entry counts are pool counts, as in
MetaCLIP); the stage keeps the balanced decisions of its input uids. Put it first, or
accept that the caps were computed on the pool rather than on the current subset.
"""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from curate.recipe.registry import Params, StageContext, StageOutput, register
from curate.recipe.uid_tables import UidTable


class BalanceParams(Params):
    metadata: str = Field(description="metadata file (curate metadata build), JSON list of entries; or a "
                                      "worldwide folder of <lang>.json lists (MetaCLIP 2)")
    t: float = Field(20_000, gt=0, description="per-entry cap (MetaCLIP: 20,000 for 400M)")
    t_reference_pool: Optional[int] = Field(None, ge=1, description="scale t by pool size / this")
    seed: int = 0
    tail_proportion: Optional[float] = Field(None, ge=0, le=1, description="worldwide: the tail proportion "
                                             "each language's t is set from (default: English's at t)")
    nospace_match: Literal["substring", "tokens"] = Field("substring", description="worldwide, zh/ja/th: "
                                                          "MetaCLIP 2 substring or whole-token matching")
    lid_model: Optional[str] = Field(None, description="worldwide: fastText language model (default lid.176.ftz)")


def _reads(p, dataset, model):
    return ["samples"]


@register("metaclip_balance", BalanceParams, family="balancing", reads=_reads, code_modules=("curate.metaclip",),
          frames=True)
def run_balance_stage(ctx: StageContext, inp: UidTable, p: BalanceParams) -> StageOutput:
    """MetaCLIP: substring-match captions to metadata entries, then sample each entry up to t."""
    from curate.metaclip.jobs import run_balance, run_match
    from curate.errors import RecipeError

    from pathlib import Path

    meta = Path(p.metadata)
    if not meta.is_absolute():
        meta = (ctx.dataset.root / meta) if (ctx.dataset.root / meta).exists() else meta.resolve()
    if not meta.exists():
        raise RecipeError(f"stage {ctx.stage_name!r}: metadata file {meta} not found (curate metadata build)")
    ex = ctx.executor()
    match = run_match(ctx.dataset, meta, ex, lid_model=p.lid_model, nospace_match=p.nospace_match)
    bal = run_balance(ctx.dataset, ex, t=p.t, t_reference_pool=p.t_reference_pool, seed=p.seed, name=ctx.run_name,
                      tail_proportion=p.tail_proportion)
    # the pool's decisions/<run>; the runner keeps the input's rows with a semi-join
    return StageOutput(f"decisions/{ctx.run_name}",
                       stats={"counts": bal.get("counts", {}), "match": match.get("counts", {}),
                              **({"languages": bal["languages"]} if "languages" in bal else {})})
