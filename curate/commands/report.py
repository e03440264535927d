"""``curate report``: a static, self-contained HTML report of a subset and its run."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from curate.commands._common import StorageOpt, use_storage_options
from curate.names import check_output_path, name_callback


def register(app: typer.Typer) -> None:
    @app.command("report")
    def report(
        dataset: str = typer.Argument(..., help="Dataset folder or URI (s3://bucket/ds: worked on a local copy)."),
        subset: Optional[str] = typer.Option(None, "--subset", "-s", help="Subset to report on, however it was made (run, select, "
                                             "filter, import): its lineage, galleries and the evaluations its manifest lists. "
                                             "Default: the output of the latest `curate run`, else the only subset.",
                                             callback=name_callback),
        out: Optional[str] = typer.Option(None, "--out", "-o", help="HTML file: a path or a URI (s3://bucket/report.html; default DATASET/reports/SUBSET.html)."),
        eval_: list[str] = typer.Option([], "--eval", help="LABEL=PATH of an evaluation JSON (curate eval), repeatable; "
                                    "those the subset's manifest lists are added."),
        comparison: Optional[Path] = typer.Option(None, "--comparison", help="Multi-seed comparison JSON (curate demo writes one)."),
        pool_subset: Optional[str] = typer.Option(None, "--pool-subset", help="Subset to compare against (default: every downloaded sample)."),
        embedding_model: Optional[str] = typer.Option(None, "--embeddings", "--embedding-model",
                                                      help="Embeddings for the CLIP score histogram: table id, "
                                                      "open_clip NAME[:TAG] or checkpoint (default: the recipe's)."),
        title: Optional[str] = typer.Option(None, "--title"),
        open_: bool = typer.Option(False, "--open", help="Open the report in a browser when done."),
        storage_option: list[str] = StorageOpt,
    ) -> None:
        """Write the HTML report: funnel, evaluation results, distributions, galleries per stage, lineage."""
        from curate.report import build_report
        from curate.tables import Dataset

        from curate.tables.publish import publish_working_copies, working_copy

        use_storage_options(storage_option)
        out = out and check_output_path(out, dataset, "--out")  # a URI: one object, written whole
        dataset = working_copy(dataset)  # a URI: fetched here; the report is published back below
        evals = {}
        for item in eval_:
            if "=" not in item:
                raise typer.BadParameter(f"--eval expects LABEL=PATH, got {item!r}")
            k, v = item.split("=", 1)
            evals[k] = Path(v)
        from curate.report.build import default_subset

        ds = Dataset(dataset)
        if embedding_model:
            from curate.models.resolve import resolve_embeddings

            embedding_model = resolve_embeddings(ds, embedding_model)
        subset = subset or default_subset(ds)
        path = build_report(ds, subset, out=out, evals=evals, comparison=comparison,
                            pool_subset=pool_subset, embedding_model=embedding_model, title=title)
        published = publish_working_copies()
        typer.echo(f"report: {path}" + (f" (published to {published[0]['target']})" if published else ""))
        if open_:
            import webbrowser

            webbrowser.open(path if isinstance(path, str) else path.resolve().as_uri())
