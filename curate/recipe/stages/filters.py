"""DataComp filters (issue 4) as recipe stages: basic, clip_score, laion2b, image_based, text_based.

Each stage runs ``curate.filters.job.run_filters`` with one filter (parameters and defaults
are the filter job's own, see ``curate filter --help``) and keeps the decisions of the
stage's input uids (a semi-join by the engine). Filters decide each sample on its own, so running them over the pool
and restricting is the same as running them over the subset; the exception is a fraction,
which in a recipe means "of this stage's input": ``clip_score`` turns it into the matching
threshold over the input (DataComp's rule, the filter job's exact radix select over the
input's scores, written by the workers), ``image_based``'s ``clip_fraction`` stays pool-wide.
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa

from curate.filters.checks import NAMED_FILES
from curate.recipe.registry import Params, StageContext, StageOutput, register
from curate.recipe.uid_tables import UidTable

_MODULES = ("curate.filters",)
# parameters that name files: the filter job's (curate.filters.checks), and the WordNet folder
_FILE_KEYS = (*NAMED_FILES, "wordnet_dir")


def _spec(name: str, given: dict):
    from curate.filters.stages import filter_spec

    return filter_spec(name, given, f"{name} (recipe stage)")


def _input_threshold(ctx: StageContext, inp: UidTable, fraction: float) -> dict:
    """DataComp's fraction threshold over this stage's input: the input's scores written by the
    workers (a semi-join of the embeddings), then the filter job's exact radix select over them."""
    from curate.filters.threshold import top_fraction_threshold
    from curate.storage import remove_tree

    ex = ctx.executor()
    schema = pa.schema([("uid", pa.string()), ("clip_score", pa.float32())])
    emb = ctx.embeddings_table()
    scores = ex.frame_read([str(x) for x in ctx.dataset.shards(emb)], schema).semi_join(inp.frame(ctx.dataset, ex))
    tmp = f"_tmp/{ctx.run_name}/input_scores"
    try:
        scores.write_sorted(ctx.dataset, tmp, schema, ["uid"], 2_000_000)
        r = top_fraction_threshold([str(x) for x in ctx.dataset.shards(tmp)], "clip_score", fraction, ex)
    finally:
        remove_tree(ctx.dataset.table_dir(tmp))
    # no scored input: nothing can pass (DataComp's expression has no cut to take)
    thr = r["threshold"] if r["n"] else float("inf")
    return {"fraction": fraction, "threshold": thr, "over": int(r["n"])}


def _run(ctx: StageContext, inp: UidTable, name: str, p: Params) -> StageOutput:
    from curate.filters.job import run_filters

    given = p.model_dump()
    for k in _FILE_KEYS:  # in the dataset, beside the recipe, or here, as every stage's files
        if given.get(k):
            given[k] = ctx.find_path(given[k])
    if "model" in given and given["model"] is None and ctx.embedding_model and name != "text_based":
        given["model"] = ctx.embedding_model
    stats: dict[str, Any] = {}
    if name == "clip_score" and given.get("fraction") is not None:
        stats["threshold_from_fraction"] = _input_threshold(ctx, inp, given["fraction"])
        given = dict(given, fraction=None, threshold=stats["threshold_from_fraction"]["threshold"])
    result = run_filters(ctx.dataset, [_spec(name, given)], ctx.executor(), name=ctx.run_name)
    stats["resolved"] = result.get("resolved", {}).get(name, {})
    # the pool's decisions/<run>; the runner keeps the input's rows with a semi-join
    return StageOutput(f"decisions/{ctx.run_name}", stats=stats)


def _reads(name: str):
    def reads(p, dataset, model):
        out = ["samples"]  # text_stats is derived from samples by the filter job itself
        if name == "basic":
            out.append("downloads")
        # the filters that read embeddings have a model parameter (basic has none)
        if name != "text_based" and "model" in type(p).model_fields and (p.model or model):
            out.append(f"embeddings/{p.model or model}")
        if getattr(p, "clip_model", None):  # image_based's clip cut on another model's scores
            out.append(f"embeddings/{p.clip_model}")
        return out
    return reads


def _files(p, ctx: StageContext) -> list[str]:
    """image_based's target images or embeddings and centroids, text_based's synset list and
    WordNet folder: paths as the filter job reads them."""
    return [ctx.find_path(getattr(p, k)) for k in _FILE_KEYS if getattr(p, k, None)]


def _make(name: str, doc: str):
    from curate.params.filters import FILTERS

    params = FILTERS[name]  # the model `curate filter -f NAME:key=value` parses through

    def run(ctx: StageContext, inp: UidTable, p) -> StageOutput:
        return _run(ctx, inp, name, p)

    run.__doc__ = doc
    run.__name__ = f"run_{name}"
    register(name, params, family="filters", reads=_reads(name), files=_files, code_modules=_MODULES,
             frames=True)(run)


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
