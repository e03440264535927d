"""DataComp filters (issue 4) as recipe stages: basic, clip_score, laion2b, image_based, text_based.

Each stage runs ``curate.filters.job.run_filters`` with one filter (parameters and defaults
are the filter job's own, see ``curate filter --help``) and keeps the decisions of the
stage's input uids. Filters decide each sample on its own, so running them over the pool
and restricting is the same as running them over the subset; the exception is a fraction,
which in a recipe means "of this stage's input": ``clip_score`` turns it into the matching
threshold over the input (DataComp's rule), ``image_based``'s ``clip_fraction`` stays pool-wide.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.recipe.registry import Params, StageContext, StageResult, register

_MODULES = ("curate.filters",)


def _spec(name: str, given: dict):
    from curate.filters.stages import filter_spec

    return filter_spec(name, given, f"{name} (recipe stage)")


def _run(ctx: StageContext, uids: pa.Array, name: str, p: Params) -> StageResult:
    from curate.filters.job import run_filters

    given = p.model_dump()
    if "model" in given and given["model"] is None and ctx.embedding_model and name != "text_based":
        given["model"] = ctx.embedding_model
    stats: dict[str, Any] = {}
    if name == "clip_score" and given.get("fraction") is not None:
        from curate.filters.threshold import reference_threshold

        emb = ctx.dataset.read(ctx.embeddings_table(), columns=["uid", "clip_score"])
        scores = emb.filter(pc.is_in(emb.column("uid"), value_set=pc.unique(uids))).column("clip_score")
        s = scores.to_numpy(zero_copy_only=False).astype(np.float32)
        thr = reference_threshold(s, given["fraction"]) if len(s) else float("inf")
        stats["threshold_from_fraction"] = {"fraction": given["fraction"], "threshold": thr, "over": int(len(s))}
        given = dict(given, fraction=None, threshold=thr)
    result = run_filters(ctx.dataset, [_spec(name, given)], ctx.executor(), name=ctx.run_name)
    decisions = ctx.dataset.read(f"decisions/{ctx.run_name}")
    stats["resolved"] = result.get("resolved", {}).get(name, {})
    return StageResult(ctx.restrict(decisions, uids), stats=stats)


def _reads(name: str):
    def reads(p, dataset, model):
        out = ["samples"]  # text_stats is derived from samples by the filter job itself
        if name == "basic":
            out.append("downloads")
        if name != "text_based" and (getattr(p, "model", None) or model):
            out.append(f"embeddings/{getattr(p, 'model', None) or model}")
        return out
    return reads


def _make(name: str, doc: str):
    from curate.params.filters import FILTERS

    params = FILTERS[name]  # the model `curate filter -f NAME:key=value` parses through

    def run(ctx: StageContext, uids: pa.Array, p) -> StageResult:
        return _run(ctx, uids, name, p)

    run.__doc__ = doc
    run.__name__ = f"run_{name}"
    register(name, params, family="filters", reads=_reads(name), code_modules=_MODULES)(run)


try:
    import curate.filters.stages  # noqa: F401  (issue 4; the kinds exist only where it is installed)
except ImportError:  # pragma: no cover
    pass
else:
    _make("basic", "DataComp basic filter: English, caption length, image size and aspect ratio.")
    _make("clip_score", "Keep CLIP score >= threshold, or the top fraction of this stage's input.")
    _make("laion2b", "LAION-2B rule: CLIP score >= 0.28 and English caption.")
    _make("image_based", "DataComp image-based filter: clusters that target images fall into.")
    _make("text_based", "DataComp text-based filter: a caption word names a target WordNet synset.")
