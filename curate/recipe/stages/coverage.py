"""``coverage``: a pass-through step that counts concepts in its input (the selection so far;
the recipe's output when it is the last stage) against the pool, writing ``coverage/<name>``.

It keeps every uid (reason ``kept``), so it can sit anywhere after selection; put it last
to measure what the whole recipe starved. Counting is ``curate coverage``'s job
(``curate.coverage.job.run_coverage``) with the stage's input as the one subset.
"""

from __future__ import annotations

from typing import ClassVar, Optional

from pydantic import Field

from curate.params.coverage import CoverageParams
from curate.recipe.registry import StageContext, StageOutput, keep_all, register
from curate.recipe.uid_tables import UidTable, write_uid_table


class CoverageStageParams(CoverageParams):
    """``curate coverage``'s parameters; the stage's input is the one subset counted."""

    job_arg_exclude: ClassVar[frozenset[str]] = CoverageParams.job_arg_exclude | {"label", "table"}

    label: Optional[str] = Field(None, description="subset label in the table (default: the recipe's output)")
    table: Optional[str] = Field(None, description="table coverage/TABLE (default: recipe-<recipe>-<stage>)")


def _reads(p: CoverageStageParams, dataset, model):
    tables = ["samples"]
    if p.pool in ("auto", "downloaded") and dataset.has_table("downloads"):
        tables.append("downloads")
    if p.pool.startswith("subset:"):
        tables.append(f"subsets/{p.pool[7:]}")
    if p.threshold is not None and (p.embeddings or model):
        tables.append(f"embeddings/{p.embeddings or model}")
    return tables


def _path(ctx: StageContext, raw: str) -> str:
    """A concept source: a URI, or a path in the dataset, beside the recipe or here
    (``StageContext.find_path``); a URI's file or folder is copied here (small, read by libraries
    from disk)."""
    from curate import storage

    return storage.local_copy(ctx.find_path(raw))


def _files(p: CoverageStageParams, ctx: StageContext) -> list[str]:
    return [ctx.find_path(x) for x in (p.concepts, p.eval, p.metadata) if x]


def _names(p: CoverageStageParams, ctx: StageContext) -> dict:
    """coverage/<table> and the label its selection goes under (the recipe's output by default)."""
    return {"table": p.table or ctx.run_name, "label": p.label or ctx.output or ctx.stage_name}


@register("coverage", CoverageStageParams, family="report", reads=_reads, files=_files, code_modules=("curate.coverage",),
          names=_names, frames=True)
def run_coverage_stage(ctx: StageContext, inp: UidTable, p: CoverageStageParams) -> StageOutput:
    """Count concepts in the selection so far vs the pool (keeps every sample)."""
    from curate.coverage.concepts import from_eval_folder, from_file, from_metadata
    from curate.coverage.job import run_coverage
    from curate.names import check_name

    if p.concepts:
        concepts = from_file(_path(ctx, p.concepts))
    elif p.eval:
        concepts = from_eval_folder(_path(ctx, p.eval))
    else:
        concepts = from_metadata(_path(ctx, p.metadata))
    names = _names(p, ctx)
    name = check_name(names["table"], "coverage table")
    label = check_name(names["label"], "coverage label")
    # the selection as sorted distinct uid shards (written by the workers) the tasks read by uid range
    sel = f"coverage/{name}/_selection"
    write_uid_table(ctx.dataset, sel, inp.frame(ctx.dataset, ctx.executor()).distinct(), inp.distinct)
    summary = run_coverage(ctx.dataset, concepts, ctx.executor(), name=name, subsets={label: str(ctx.dataset.table_dir(sel))},
                           embeddings=(p.embeddings or ctx.embedding_model) if p.threshold is not None else None,
                           **p.job_kwargs(),
                           params={"stage": ctx.stage_name, "recipe": ctx.recipe_name})
    stats = {"table": f"coverage/{name}", "label": label, "writes": [f"coverage/{name}"],
             **{src: {"pool_size": s["pool_size"], "subset_size": s["subsets"][label]["size"],
                      "concepts_lost": s["subsets"][label]["concepts_lost"],
                      "starved": [r["concept"] for r in s["subsets"][label]["starved"][:5]]}
                for src, s in summary["sources"].items()}}
    return StageOutput(keep_all(ctx, inp), stats=stats)
