"""``curate coverage``: concept frequencies in the pool and in subsets (the long tail, the
concepts a curation step starved, per-class accuracy against frequency)."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Optional

import typer
from pydantic import Field

from curate.commands._common import require_tables
from curate.commands._jobcli import Common, JobRun, job_command
from curate.names import check_name
from curate.params import Name, cli_extra
from curate.params.coverage import CoverageParams


def load_concepts(p: CoverageParams):
    """The concept list from the one source the parameters name (errors name file and line)."""
    from curate import storage
    from curate.coverage.concepts import from_eval_folder, from_file, from_metadata

    # a URI (a file or an eval folder on a store) is copied here: small, read by libraries from disk
    if p.concepts:
        return from_file(storage.local_copy(p.concepts))
    if p.eval:
        return from_eval_folder(storage.local_copy(p.eval))
    return from_metadata(storage.local_copy(p.metadata))


def default_name(source: str) -> str:
    """The table name from the concept source: its file stem or folder name."""
    import re

    p = Path(source)
    stem = p.name if p.is_dir() else p.stem
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", stem).strip("-.") or "concepts"


def echo_summary(summary: dict) -> None:
    out = typer.echo
    c = summary["concepts"]
    out(f"coverage {summary['name']}: {c['concepts']:,} concepts ({c['kind']}: {c['source']}), "
        f"pool = {summary['pool']} -> {summary['table']}")
    for source, s in summary["sources"].items():
        out(f"  {source}: pool {s['pool_size']:,} samples, {s['concepts_seen']:,} concepts seen, "
            f"{s['matches']:,} concept matches")
        for sub, d in s["subsets"].items():
            out(f"    subset {sub}: {d['size']:,} samples, {d['concepts_seen']:,} concepts seen, "
                f"{d['concepts_lost']:,} lost")
            if d["starved"]:
                top = ", ".join(f"{r['concept']} ({r['pool_count']:,} -> {r['count']:,}, drop {r['relative_drop']:+.2f})"
                                for r in d["starved"][:5])
                out(f"      most starved (pool count >= {summary['min_pool_count']}): {top}")
            acc = d.get("accuracy")
            if acc:
                rho = acc["spearman_count"]
                out(f"      accuracy vs frequency: {acc['classes']} classes, Spearman rho "
                    f"{'n/a' if rho is None else f'{rho:+.3f}'}")
    out(f"  plots: {', '.join(summary['plots'].values())} in {summary['table']}/")


class CoverageCommandParams(CoverageParams):
    """The job's parameters plus what only the command line has (a recipe stage counts its
    own input as the one subset and names its table after the stage)."""

    job_arg_exclude: ClassVar[frozenset[str]] = CoverageParams.job_arg_exclude | {"subset", "accuracy", "output"}

    subset: list[Name] = Field([], description="Subset to count in (repeatable).", json_schema_extra=cli_extra("-s"))
    accuracy: list[str] = Field([], description="SUBSET=EVAL_JSON: per-class accuracy of a model trained on SUBSET "
                                "(curate eval output), repeatable; those the subset's manifest lists are added.")
    output: Optional[Name] = Field(None, description="Table name: coverage/NAME (default: the concept file's stem or "
                                   "eval folder's name).", json_schema_extra=cli_extra("-o"))


def coverage(run: JobRun, p: CoverageCommandParams) -> None:
    from curate import storage
    from curate.coverage.job import population_spec, run_coverage, subset_uids_path
    from curate.errors import CurateError

    # everything is checked before any engine starts
    require_tables(run.dataset, {"samples": "curate ingest"}, remote_ok=True)
    ds = run.ds
    cl = load_concepts(p)
    name = p.output or default_name(cl.source)
    check_name(name, "--output")
    subsets = {s: subset_uids_path(ds, s) for s in p.subset}
    population_spec(ds, p.pool)
    if (p.embeddings is None) != (p.threshold is None):
        raise CurateError("image matching needs both --embeddings and --threshold")
    emb_id = None
    if p.embeddings is not None:
        from curate.evaluate import load_templates
        from curate.models.resolve import resolve_embeddings, resolve_model

        emb_id = resolve_embeddings(ds, p.embeddings)
        resolve_model(emb_id, dataset=ds)  # the model that made them is known (no weights loaded)
        load_templates(p.templates)
    acc_files: dict[str, list[str]] = {}
    for item in p.accuracy:
        sub, sep, path = item.partition("=")
        if not sep or not path:
            raise CurateError(f"--accuracy expects SUBSET=EVAL_JSON, got {item!r}")
        if sub not in subsets:
            raise CurateError(f"--accuracy {item}: subset {sub!r} is not one of the --subset names")
        if not storage.is_file(path):
            raise CurateError(f"--accuracy {item}: {path} does not exist")
        acc_files.setdefault(sub, []).append(path)
    run.lock()
    summary = run_coverage(ds, cl, run.executor(), name=name, subsets=subsets, embeddings=emb_id,
                           accuracy_files=acc_files, params={"engine": run.engine, "master": run.master},
                           **p.job_kwargs())
    echo_summary(summary)


def register(app: typer.Typer) -> None:
    app.command("coverage")(job_command(
        CoverageCommandParams, coverage, job_model=CoverageParams, app_name="curate-coverage",
        common=Common(None, dataset_help="Dataset folder or URI with a samples table.", subset=False, output=False,
                      lock_first=False),
        help="Count concepts (eval class names, a concept list or MetaCLIP entries) in the pool and in each subset: "
        "captions with the MetaCLIP matcher, images by prompt similarity.\n\n"
        "Writes coverage/NAME (queryable: curate sql DATASET \"SELECT * FROM coverage_NAME\"), the long-tail plot "
        "and _summary.json beside it; the report shows a coverage section."))
