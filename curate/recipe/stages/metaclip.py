"""MetaCLIP balancing (issue 5) as a recipe stage: match captions to metadata, cap each entry.

``metadata`` may be a worldwide folder (one <lang>.json per language, issue 18): captions are
then matched against their fastText language's list and t is set per language (MetaCLIP 2).

Matching and balancing run over the whole pool (entry counts are pool counts, as in
MetaCLIP); the stage keeps the balanced decisions of its input uids. Put it first, or
accept that the caps were computed on the pool rather than on the current subset.
"""

from __future__ import annotations

from curate.params.metaclip import MetaclipStageParams
from curate.recipe.registry import StageContext, StageOutput, register
from curate.recipe.uid_tables import UidTable

# the keys of `curate metadata match` and `curate metadata balance` (one model of both jobs)
BalanceParams = MetaclipStageParams


def _reads(p, dataset, model):
    return ["samples"]


@register("metaclip_balance", BalanceParams, family="balancing", reads=_reads,
          files=lambda p, ctx: [ctx.find_path(p.metadata)], code_modules=("curate.metaclip",),
          frames=True)
def run_balance_stage(ctx: StageContext, inp: UidTable, p: BalanceParams) -> StageOutput:
    """MetaCLIP: substring-match captions to metadata entries, then sample each entry up to t."""
    from curate.metaclip.jobs import run_balance, run_match
    from curate.errors import RecipeError

    from pathlib import Path

    from curate import storage

    meta = ctx.find_path(p.metadata)  # a URI; or in the dataset, beside the recipe, here
    if not storage.exists(meta):
        where = "" if storage.is_uri(p.metadata) or Path(p.metadata).is_absolute() else \
            " (looked for in the dataset, beside the recipe and here)"
        raise RecipeError(f"stage {ctx.stage_name!r}: metadata file {p.metadata} not found{where}; make it with "
                          f"`curate metadata build`")
    ex = ctx.executor()
    match = run_match(ctx.dataset, meta, ex, **p.match_kwargs())
    bal = run_balance(ctx.dataset, ex, name=ctx.run_name, **p.balance_kwargs())
    # the pool's decisions/<run>; the runner keeps the input's rows with a semi-join
    return StageOutput(f"decisions/{ctx.run_name}",
                       stats={"counts": bal.get("counts", {}), "match": match.get("counts", {}),
                              **({"languages": bal["languages"]} if "languages" in bal else {})})
