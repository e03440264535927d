"""``curate report``: a static, self-contained HTML report of a subset and its run."""

from __future__ import annotations

from pathlib import Path

import typer

from curate.commands._jobcli import Common, JobRun, job_command
from curate.params.report import ReportParams


def report(run: JobRun, p: ReportParams) -> None:
    from curate.names import check_file_output, check_output_path
    from curate.report import build_report
    from curate.report.build import default_subset
    from curate.tables import Dataset

    out = p.out and check_output_path(p.out, run.dataset, "--out")  # a URI: one object, written whole
    if out:
        check_file_output(out, "--out", "report.html")
    ds = Dataset(run.dataset).require()  # a URI: read in place; the default page goes to DATASET/reports/ there
    embeddings = p.embeddings
    if embeddings:
        from curate.models.resolve import resolve_embeddings

        embeddings = resolve_embeddings(ds, embeddings)
    subset = p.subset or default_subset(ds)
    path = build_report(ds, subset, out=out, evals=p.evals(), comparison=p.comparison and Path(p.comparison),
                        pool_subset=p.pool_subset, embedding_model=embeddings, title=p.title,
                        executor=run.executor())
    typer.echo(f"report: {path}")
    if p.open:
        import webbrowser

        webbrowser.open(path if isinstance(path, str) else path.resolve().as_uri())


def register(app: typer.Typer) -> None:
    app.command("report")(job_command(
        ReportParams, report, app_name="curate-report",
        common=Common(None, dataset_help="Dataset folder or URI (s3://bucket/ds).",
                      subset=False, output=False, engine=True, storage=True, lock_first=False),
        help="Write the HTML report: funnel, evaluation results, distributions, galleries per stage, lineage."))
