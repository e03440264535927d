"""``curate filter``: DataComp's filtering baselines over a dataset's pool. Options come from
the job's model (curate/params/filters.py), whose filter models are the recipe's filter stages."""

from __future__ import annotations

import typer

from curate.commands._jobcli import Common, JobRun, job_command
from curate.params.filters import FilterRunParams


def filter_job(run: JobRun, p: FilterRunParams) -> None:
    from curate.commands._common import echo_guards
    from curate.filters.job import check_filters, run_filters
    from curate.filters.stages import parse_filter
    from curate.progress import info as say

    specs = [parse_filter(f) for f in p.filter]
    check_filters(run.ds, specs, p.lid_model)
    result = run_filters(run.ds, specs, run.executor(), name=run.name, **p.job_kwargs())
    c = result["counts"]
    say(f"filter {result['params']['name']}: kept {c['kept']:,} of {c['samples']:,} samples")
    fraction_used = False
    for stage, reasons in c["filters"].items():
        info = result["resolved"].get(stage, {})
        thr = f" (threshold {info['threshold']:.6g})" if isinstance(info.get("threshold"), float) else ""
        if isinstance(info.get("pool_rows"), int):  # a fraction: of how many scored rows
            thr = f" (threshold {info['threshold']:.6g}: top {info['fraction']:g} of {info['pool_rows']:,} scored rows)"
            fraction_used = True
        say(f"  {stage}{thr}: " + ", ".join(f"{r} {n:,}" for r, n in reasons.items()))  # one line each, piped too
    note = _left_out_note(run.ds) if fraction_used else ""
    if note:
        say(note)
    say(f"  subset: {result['outputs']['subset']}  decisions: {result['outputs']['decisions']}")
    echo_guards(result.get("guards"))


def _left_out_note(ds) -> str:
    """A fraction's N is the pool as ingested; say how many input rows ingest left out (DataComp's
    apply_filter.py counts the scored ones among them: its cut then differs)."""
    from curate.manifest import read_manifest

    c = (read_manifest(ds, "ingest") or {}).get("counts") or {}
    left = int(c.get("rejects") or 0) + int(c.get("duplicates") or 0)
    if not left:
        return ""
    return (f"  note: the fraction is of the pool as ingested; ingest left out {left:,} input rows (rejects and "
            "repeats, _runs/ingest.json), which DataComp's apply_filter.py would count in N where they have a score")


def register(app: typer.Typer) -> None:
    from curate.filters.stages import describe_filters

    app.command("filter")(job_command(
        FilterRunParams, filter_job, app_name="curate-filter",
        common=Common(None, name_option=True, subset=False, output=False, storage=True,
                      name_help="Run name (decisions/NAME, subsets/NAME); default: filter names joined by '+'",
                      dataset_help="Dataset folder or URI (with samples, and embeddings/<model> for CLIP filters)"),
        help="Run DataComp's filtering baselines: one decision per sample and filter in "
        "decisions/NAME, the samples every filter kept in subsets/NAME (uids.parquet + DataComp "
        "uids.npy), counts per filter and reason in _runs/filter-NAME.json, caption language and "
        "counts in the text_stats table.\n\n"
        "Filters (--filter NAME or NAME:key=value,key=value; defaults are DataComp's):\n\n"
        + describe_filters().replace("\n", "\n\n")))
