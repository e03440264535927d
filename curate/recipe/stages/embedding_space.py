"""Embedding-space stages (issue 6): cluster, semdedup, prune (DBP/SSP), exact_dedup,
near_dedup, decontaminate. Each calls the job function of ``curate.embedding_space`` with
``input_uids`` = this stage's input, so the work is done on the current subset only.

``cluster`` keeps every sample; it writes ``clusters/<name>`` that ``semdedup`` and
``prune`` read (name it with ``clusters:`` in both; default ``recipe-<recipe>``).
"""

from __future__ import annotations

from typing import Literal, Optional

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.decisions import KEPT, decisions_table
from curate.params import Name
from curate.params.embedding_space import (ClusterParams, DBPParams, DecontaminateParams, ExactDedupParams,
                                           NearDedupParams, SemDeDupParams)
from curate.recipe.registry import StageContext, StageResult, register

_MODULES = ("curate.embedding_space",)


def _clusters_name(ctx: StageContext, name: Optional[str]) -> str:
    return name or f"recipe-{ctx.recipe_name}"


def _warnings(r: dict) -> dict:
    """The job's guard warnings (curate.embedding_space.guards) for the lineage and the report."""
    w = (r.get("guards") or {}).get("warnings")
    return {"warnings": w} if w else {}


def _model(ctx: StageContext, model: Optional[str]) -> str:
    if model:
        return model
    ctx.embeddings_table()  # clear error when the recipe names no model
    return ctx.embedding_model  # type: ignore[return-value]


class ClusterStageParams(ClusterParams):
    """``curate cluster``'s parameters; ``clusters`` names the clustering, as --name does there."""

    clusters: Optional[Name] = Field(None, description="Name of the clustering (clusters/<name>); default: "
                                     "recipe-<recipe>.")


@register("cluster", ClusterStageParams, family="clustering", reads=("{embeddings}",), code_modules=_MODULES)
def run_cluster_stage(ctx: StageContext, uids: pa.Array, p: ClusterStageParams) -> StageResult:
    """k-means over the input's embeddings; keeps everything, writes clusters/<name> for later stages."""
    from curate.embedding_space.clusters import run_cluster

    name = _clusters_name(ctx, p.clusters)
    distinct = pc.unique(uids)
    r = run_cluster(ctx.dataset, _model(ctx, p.embeddings), name=name, executor=ctx.executor(), input_uids=distinct,
                    **p.job_kwargs())
    c = ctx.dataset.read(f"clusters/{name}", columns=["uid", "cluster_id", "distance"])
    c = c.filter(pc.is_in(c.column("uid"), value_set=distinct))
    by = dict(zip(c.column("uid").to_pylist(), zip(c.column("cluster_id").to_pylist(), c.column("distance").to_pylist())))
    ids = distinct.to_pylist()
    has = [u in by for u in ids]
    kept = has  # a sample without an embedding cannot be clustered
    reason = [KEPT if h else "no_embedding" for h in has]
    value = [by[u][1] if u in by else None for u in ids]
    detail = [f"cluster {by[u][0]}" if u in by else None for u in ids]
    return StageResult(decisions_table(distinct, ctx.stage_name, kept, reason, value, detail),
                       stats={"clusters": f"clusters/{name}", **r.get("counts", {}), **_warnings(r)})


def _reads_clusters():
    def reads(p, dataset, model):
        name = p.clusters
        if name is None:  # default name depends on the recipe; fingerprint every clustering
            return [t for t in dataset.tables() if t.startswith("clusters/")] + [f"embeddings/{model}"]
        return [f"clusters/{name}", f"embeddings/{model}"]
    return reads


@register("semdedup", SemDeDupParams, family="dedup", reads=_reads_clusters(), code_modules=_MODULES)
def run_semdedup_stage(ctx: StageContext, uids: pa.Array, p: SemDeDupParams) -> StageResult:
    """SemDeDup: within each cluster, drop samples too similar to a kept one."""
    from curate.embedding_space.jobs.semdedup import run_semdedup

    r = run_semdedup(ctx.dataset, _clusters_name(ctx, p.clusters), run=ctx.run_name, input_uids=pc.unique(uids),
                     executor=ctx.executor(), **p.job_kwargs())
    return StageResult(ctx.restrict(r["decisions"], uids), stats={**r.get("counts", {}), **_warnings(r)})


class PruneStageParams(DBPParams):
    """``curate prune dbp``'s parameters (``ssp``'s are a subset); ``method`` picks the command."""

    method: Literal["dbp", "ssp"] = Field("dbp", description="dbp (`curate prune dbp`) or ssp (`curate prune ssp`; "
                                          "the DBP-only keys are ignored).")


@register("prune", PruneStageParams, family="pruning", reads=_reads_clusters(), code_modules=_MODULES)
def run_prune_stage(ctx: StageContext, uids: pa.Array, p: PruneStageParams) -> StageResult:
    """Density-based pruning (DBP) or SSP prototypes: keep a fraction, fewer from dense clusters."""
    from curate.embedding_space.jobs.prune import run_prune

    r = run_prune(ctx.dataset, _clusters_name(ctx, p.clusters), run=ctx.run_name, input_uids=pc.unique(uids),
                  executor=ctx.executor(), **p.job_kwargs())
    return StageResult(ctx.restrict(r["decisions"], uids), stats={**r.get("counts", {}), **_warnings(r)})


@register("exact_dedup", ExactDedupParams, family="dedup", reads=("downloads",), code_modules=_MODULES)
def run_exact_dedup_stage(ctx: StageContext, uids: pa.Array, p: ExactDedupParams) -> StageResult:
    """Exact image duplicates (same downloaded bytes): keep one per image."""
    from curate.embedding_space.jobs.exact_dedup import run_exact_dedup

    r = run_exact_dedup(ctx.dataset, run=ctx.run_name, input_uids=pc.unique(uids), executor=ctx.executor())
    return StageResult(ctx.restrict(r["decisions"], uids), stats={**r.get("counts", {}), **_warnings(r)})


def _reads_near(p: NearDedupParams, dataset, model):
    return [f"embeddings/{p.embeddings or model}", *([f"clusters/{p.clusters}"] if p.clusters else [])]


@register("near_dedup", NearDedupParams, family="dedup", reads=_reads_near, code_modules=_MODULES)
def run_near_dedup_stage(ctx: StageContext, uids: pa.Array, p: NearDedupParams) -> StageResult:
    """Near duplicates by embedding similarity (FAISS range search): keep one per group."""
    from curate.embedding_space.jobs.near_dedup import run_near_dedup

    r = run_near_dedup(ctx.dataset, _model(ctx, p.embeddings), run=ctx.run_name, input_uids=pc.unique(uids),
                       executor=ctx.executor(), **p.job_kwargs())
    return StageResult(ctx.restrict(r["decisions"], uids), stats={**r.get("counts", {}), **_warnings(r)})


@register("decontaminate", DecontaminateParams, family="decontamination", reads=("{embeddings}",),
          code_modules=_MODULES)
def run_decontaminate_stage(ctx: StageContext, uids: pa.Array, p: DecontaminateParams) -> StageResult:
    """Remove pool samples whose image is a near copy of an evaluation image."""
    from curate.embedding_space.jobs.decontaminate import run_decontaminate

    r = run_decontaminate(ctx.dataset, _model(ctx, p.embeddings), run=ctx.run_name, input_uids=pc.unique(uids),
                          executor=ctx.executor(), **p.job_kwargs())
    return StageResult(ctx.restrict(r["decisions"], uids), stats={**r.get("counts", {}), **_warnings(r)})
