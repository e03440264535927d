"""``curate demo``: the whole product on a procedural pool, on this machine, in minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def register(app: typer.Typer) -> None:
    @app.command("demo")
    def demo(
        workdir: str = typer.Option("demo-output", "--workdir", "-w", help="Local folder for everything the demo "
                                    "writes (the demo serves and trains on this machine; no object storage)."),
        scale: str = typer.Option("default", "--scale", help="default (about 15 min on 2 cores) or tiny (smoke run)."),
        seeds: int = typer.Option(3, "--seeds", help="Training seeds per arm."),
        samples_seen: Optional[int] = typer.Option(None, "--samples-seen", help="Samples seen per baseline model."),
        pool_size: Optional[int] = typer.Option(None, "--pool-size", help="Samples in the generated pool."),
        recipe: Optional[Path] = typer.Option(None, "--recipe", help="Recipe to curate with (default recipes/demo.yaml)."),
        master: str = typer.Option("local[2]", "--master", help="Spark master for the jobs."),
        engine: str = typer.Option("spark", "--engine", help="spark or local."),
        open_report: bool = typer.Option(False, "--open", help="Open the report in a browser at the end."),
    ) -> None:
        """Generate a pool, serve it on 127.0.0.1, ingest, download, train a DFN scorer, embed, curate with
        the recipe, reshard, train tiny CLIP baselines (raw / random / curated, equal samples seen), evaluate
        and write the report."""
        from curate.commands._common import require_local
        from curate.demo.run import SCALES, DemoConfig, run_demo

        require_local(workdir, "--workdir")

        if scale not in SCALES:
            raise typer.BadParameter(f"--scale must be one of {', '.join(SCALES)}")
        over = dict(SCALES[scale])
        if samples_seen:
            over["samples_seen"] = samples_seen
        if pool_size:
            over["pool_size"] = pool_size
        cfg = DemoConfig(workdir=Path(workdir), seeds=tuple(range(seeds)), recipe=recipe, master=master, engine=engine, **over)
        summary = run_demo(cfg)
        if open_report:
            import webbrowser

            webbrowser.open(Path(summary["report"]).resolve().as_uri())
