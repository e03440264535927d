"""``scorer``: train a data-filtering network (DFN) on a trusted seed set, as `curate scorer train`.

The stage keeps every uid (it decides nothing); it leaves ``DATASET/scorers/<name>/`` behind,
named by the stage's ``name`` (the key every stage has; without it the stage and the scorer
are called ``scorer``), so a recipe whose ``embedding_model`` is that name embeds the pool with
the scorer before the next stage and filters on its CLIP scores:

    embedding_model: dfn
    stages:
      - kind: scorer
        name: dfn                   # the scorer: DATASET/scorers/dfn
        seed_set: trusted/          # or a subset name, or WebDataset shards
        samples_seen: 8192
      - kind: clip_score
        fraction: 0.5

The other parameters are those of ``curate.params.scorer.ScorerTrainParams``, the command's
own. Cached like any stage (by its parameters and input); a finished scorer of the same name
is reused by the trainer, ``overwrite: true`` retrains it.
"""

from __future__ import annotations

from curate.recipe.registry import StageContext, StageOutput, keep_all, register
from curate.recipe.uid_tables import UidTable
from curate.params.scorer import ScorerTrainParams
from curate.train.scorer import seed_kind


def _scorer_names(p, ctx: StageContext) -> dict:
    return {"name": ctx.stage_name}  # the stage's name names the scorer (DATASET/scorers/NAME)


@register("scorer", ScorerTrainParams, family="scorer", code_modules=("curate.train.scorer", "curate.params.scorer"),
          names=_scorer_names, frames=True)
def run_scorer(ctx: StageContext, inp: UidTable, p: ScorerTrainParams) -> StageOutput:
    """Train a DFN scorer on a trusted seed set (`curate scorer train`); later stages use it by name."""
    from curate.models.scorers import check_scorer_name

    # A stage's ``name`` key names the stage; here it also names the scorer (DATASET/scorers/NAME).
    p = p.model_copy(update={"name": check_scorer_name(ctx.stage_name)})
    executor = ctx.executor() if seed_kind(ctx.dataset, p.seed_set) == "subset" else None
    m = p.train(ctx.dataset, executor)
    stats = {"scorer": m["name"], "model_id": m["model_id"], "arch": m["arch"], "seed_set": m["seed_set"].get("source"),
             "seed_samples": m["seed_set"].get("samples"), "samples_seen": m["samples_seen"],
             "loss_first": m["loss_first"], "loss_last": m["loss_last"]}
    return StageOutput(keep_all(ctx, inp), stats=stats)
