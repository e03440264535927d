"""Embedding-space stages (issue 6): cluster, semdedup, prune (DBP/SSP), exact_dedup,
near_dedup, decontaminate. Each calls the job function of ``curate.embedding_space`` with
``input_uids`` = this stage's input uid table (read and joined by the engine), so the work is
done on the current subset only; the job's workers write ``decisions/<run>``, which the
runner restricts, checks and counts with the engine (no per-row data on the driver).

``cluster`` keeps every sample; it writes ``clusters/<name>`` that ``semdedup`` and
``prune`` read (name it with ``clusters:`` in both; default ``recipe-<recipe>``).
"""

from __future__ import annotations

from typing import Literal, Optional

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from curate.decisions import KEPT
from curate.params import Name
from curate.params.embedding_space import (ClusterParams, DBPParams, DecontaminateParams, ExactDedupParams,
                                           NearDedupParams, SemDeDupParams)
from curate.recipe.registry import StageContext, StageOutput, register
from curate.recipe.uid_tables import UidTable

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


_DECISION_COLUMNS = ("uid", "stage", "kept", "reason", "value", "detail")


def _clustered(stage: str):
    def rows(b: pa.RecordBatch) -> pa.Table:
        n = b.num_rows
        detail = pc.binary_join_element_wise("cluster ", pc.cast(b.column("cluster_id"), pa.string()), "")
        return pa.table([b.column("uid"), pa.array([stage] * n, pa.string()), pa.array([True] * n),
                         pa.array([KEPT] * n, pa.string()), pc.cast(b.column("distance"), pa.float64()), detail],
                        names=list(_DECISION_COLUMNS))
    return rows


def _reads_embeddings(p, dataset, model):
    """The stage's own ``embeddings:``, else the recipe's model."""
    return [f"embeddings/{p.embeddings or model}"]


@register("cluster", ClusterStageParams, family="clustering", reads=_reads_embeddings, code_modules=_MODULES,
          frames=True)
def run_cluster_stage(ctx: StageContext, inp: UidTable, p: ClusterStageParams) -> StageOutput:
    """k-means over the input's embeddings; keeps every sample with an embedding (one without
    is removed as no_embedding: it cannot be clustered), writes clusters/<name> for later stages."""
    from curate.embedding_space.clusters import run_cluster
    from curate.selection import DECISIONS, uniform_decisions

    name = _clusters_name(ctx, p.clusters)
    ex = ctx.executor()
    r = run_cluster(ctx.dataset, _model(ctx, p.embeddings), name=name, executor=ex,
                    input_uids=inp.uid_list(ctx.dataset), **p.job_kwargs())
    # decisions by the engine: a clustered input uid is kept (its distance and cluster), one
    # without an embedding cannot be clustered
    schema = pa.schema([("uid", pa.string()), ("cluster_id", pa.int32()), ("distance", pa.float32())])
    clusters = ex.frame_read([str(x) for x in ctx.dataset.shards(f"clusters/{name}")], schema)
    uids = inp.frame(ctx.dataset, ex)
    stage = ctx.stage_name
    decisions = (clusters.semi_join(uids).map_batches(_clustered(stage), DECISIONS)
                 .union(uniform_decisions(uids.anti_join(clusters), stage, False, "no_embedding")))
    return StageOutput(decisions, stats={"clusters": f"clusters/{name}", **r.get("counts", {}), **_warnings(r),
                                         "writes": [f"clusters/{name}", f"cluster_stats/{name}"]})


def _reads_clusters():
    def reads(p, dataset, model):
        name = p.clusters
        if name is None:  # default name depends on the recipe; fingerprint every clustering
            return [t for t in dataset.tables() if t.startswith("clusters/")] + [f"embeddings/{model}"]
        return [f"clusters/{name}", f"embeddings/{model}"]
    return reads


def _output(ctx: StageContext, r: dict) -> StageOutput:
    """The job's decisions/<run> (the runner restricts it to the input with the engine)."""
    return StageOutput(f"decisions/{r.get('run', ctx.run_name)}", stats={**r.get("counts", {}), **_warnings(r)})


@register("semdedup", SemDeDupParams, family="dedup", reads=_reads_clusters(), code_modules=_MODULES, frames=True)
def run_semdedup_stage(ctx: StageContext, inp: UidTable, p: SemDeDupParams) -> StageOutput:
    """SemDeDup: within each cluster, drop samples too similar to a kept one."""
    from curate.embedding_space.jobs.semdedup import run_semdedup

    r = run_semdedup(ctx.dataset, _clusters_name(ctx, p.clusters), run=ctx.run_name,
                     input_uids=inp.uid_list(ctx.dataset), executor=ctx.executor(), **p.job_kwargs())
    return _output(ctx, r)


class PruneStageParams(DBPParams):
    """``curate prune dbp``'s parameters (``ssp``'s are a subset); ``method`` picks the command."""

    method: Literal["dbp", "ssp"] = Field("dbp", description="dbp (`curate prune dbp`) or ssp (`curate prune ssp`; "
                                          "the DBP-only keys are ignored).")


@register("prune", PruneStageParams, family="pruning", reads=_reads_clusters(), code_modules=_MODULES, frames=True)
def run_prune_stage(ctx: StageContext, inp: UidTable, p: PruneStageParams) -> StageOutput:
    """Density-based pruning (DBP) or SSP prototypes: keep a fraction, fewer from dense clusters."""
    from curate.embedding_space.jobs.prune import run_prune

    r = run_prune(ctx.dataset, _clusters_name(ctx, p.clusters), run=ctx.run_name,
                  input_uids=inp.uid_list(ctx.dataset), executor=ctx.executor(), **p.job_kwargs())
    return _output(ctx, r)


@register("exact_dedup", ExactDedupParams, family="dedup", reads=("downloads",), code_modules=_MODULES, frames=True)
def run_exact_dedup_stage(ctx: StageContext, inp: UidTable, p: ExactDedupParams) -> StageOutput:
    """Exact image duplicates (same downloaded bytes): keep one per image."""
    from curate.embedding_space.jobs.exact_dedup import run_exact_dedup

    r = run_exact_dedup(ctx.dataset, run=ctx.run_name, input_uids=inp.uid_list(ctx.dataset), executor=ctx.executor())
    return _output(ctx, r)


def _reads_near(p: NearDedupParams, dataset, model):
    return [f"embeddings/{p.embeddings or model}", *([f"clusters/{p.clusters}"] if p.clusters else [])]


@register("near_dedup", NearDedupParams, family="dedup", reads=_reads_near, code_modules=_MODULES, frames=True)
def run_near_dedup_stage(ctx: StageContext, inp: UidTable, p: NearDedupParams) -> StageOutput:
    """Near duplicates by embedding similarity (FAISS range search): keep one per group."""
    from curate.embedding_space.jobs.near_dedup import run_near_dedup

    r = run_near_dedup(ctx.dataset, _model(ctx, p.embeddings), run=ctx.run_name,
                       input_uids=inp.uid_list(ctx.dataset), executor=ctx.executor(), **p.job_kwargs())
    return _output(ctx, r)


def _eval_files(p: DecontaminateParams, ctx: StageContext) -> list[str]:
    """The evaluation images (a folder, a Parquet file or a dataset table) as the stage finds
    them, and a checkpoint file that embeds them (a pretrained tag names no file)."""
    return [ctx.find_path(p.eval), *([p.eval_pretrained] if p.eval_pretrained else [])]


@register("decontaminate", DecontaminateParams, family="decontamination", reads=_reads_embeddings,
          files=_eval_files, code_modules=_MODULES, frames=True)
def run_decontaminate_stage(ctx: StageContext, inp: UidTable, p: DecontaminateParams) -> StageOutput:
    """Remove pool samples whose image is a near copy of an evaluation image."""
    from curate.embedding_space.jobs.decontaminate import run_decontaminate

    p = p.model_copy(update={"eval": ctx.find_path(p.eval)})  # in the dataset, beside the recipe, here
    r = run_decontaminate(ctx.dataset, _model(ctx, p.embeddings), run=ctx.run_name,
                          input_uids=inp.uid_list(ctx.dataset), executor=ctx.executor(), **p.job_kwargs())
    return _output(ctx, r)
