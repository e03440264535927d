"""``curate demo``: the whole product on a procedural pool, on this machine, in minutes. Options
come from curate/params/demo.py."""

from __future__ import annotations

from pathlib import Path

import typer

from curate.commands._jobcli import Common, JobRun, job_command
from curate.params.demo import DemoParams


def demo(run: JobRun, p: DemoParams) -> None:
    from curate.commands._common import require_local
    from curate.demo.run import SCALES, DemoConfig, run_demo
    from curate.names import check_folder_output

    require_local(p.workdir, "--workdir")
    check_folder_output(p.workdir, "--workdir")
    over = dict(SCALES[p.scale])
    if p.samples_seen:
        over["samples_seen"] = p.samples_seen
    if p.pool_size:
        over["pool_size"] = p.pool_size
    cfg = DemoConfig(workdir=Path(p.workdir), seeds=tuple(range(p.seeds)), recipe=p.recipe and Path(p.recipe),
                     master=p.master, engine=p.engine, **over)
    summary = run_demo(cfg)
    if p.open:
        import webbrowser

        webbrowser.open(Path(summary["report"]).resolve().as_uri())


def register(app: typer.Typer) -> None:
    app.command("demo")(job_command(
        DemoParams, demo, app_name="curate-demo",
        common=Common(None, dataset=False, subset=False, output=False, engine=False, storage=False, lock_first=False),
        help="Generate a pool, serve it on 127.0.0.1, ingest, download, train a DFN scorer, embed, curate with the "
        "recipe, reshard, train tiny CLIP baselines (raw / random / curated, equal samples seen), evaluate and write "
        "the report."))
