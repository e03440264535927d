"""``curate decontaminate``: drop pool samples that are near copies of evaluation images.
Options come from the job's model (curate/params/embedding_space.py)."""

from __future__ import annotations

import typer

from curate.commands._jobcli import Common, JobRun, echo_result, job_command
from curate.params.embedding_space import DecontaminateParams


def decontaminate(run: JobRun, p: DecontaminateParams) -> None:
    from curate.embedding_space.jobs.decontaminate import check_decontaminate, check_eval_source, run_decontaminate
    from curate.embedding_space.jobs.shared import check_dataset
    from curate.models.resolve import resolve_embeddings

    check_eval_source(check_dataset(run.ds), p.eval)  # the path the user typed, before the dataset's tables
    model = resolve_embeddings(run.ds, p.embeddings)
    check_decontaminate(run.ds, model, p.eval, p.threshold, p.eval_model, p.eval_pretrained)
    uids = run.input_uids()
    r = run_decontaminate(run.ds, model, run=run.name, input_uids=uids, executor=run.executor(), output=run.output,
                          **p.job_kwargs())
    echo_result(r)
    typer.echo(f"{r['counts']['eval_images_with_copies']} of {r['counts']['eval_images']} evaluation images had "
               f"near copies in the pool -> decontamination/{run.name}")


def register(app: typer.Typer) -> None:
    app.command("decontaminate")(job_command(
        DecontaminateParams, decontaminate, app_name="curate-decontaminate",
        common=Common("decontaminate", name_help="Run name (decisions/, subsets/, decontamination/<name>)."),
        help="Remove pool samples within a cosine threshold of any evaluation image; report eval images with "
        "copies."))
