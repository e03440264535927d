"""``curate run RECIPE.yaml``: run a curation recipe (cached per stage) into a subset."""

from __future__ import annotations

import json
from pathlib import Path
import typer

from curate.commands._jobcli import Common, JobRun, job_command
from curate.lock import hold_dataset_lock
from curate.params.recipe_run import RunParams


def run_cmd(run: JobRun, p: RunParams) -> None:
    from curate import storage
    from curate.recipe import load_recipe, run_recipe

    loaded = load_recipe(p.recipe)
    if p.dataset is not None:
        loaded.recipe.dataset = p.dataset if storage.is_uri(p.dataset) else str(Path(p.dataset).resolve())
    if p.output is not None:
        loaded.recipe.output = p.output
    if p.embedding_model is not None:
        loaded.recipe.embedding_model = p.embedding_model
    if p.check:
        for s in loaded.stages:
            typer.echo(f"{loaded.path}:{s.line}: {s.name} ({s.kind}) {json.dumps(s.params, sort_keys=True)}"
                       f"{'' if s.enabled else '  [disabled]'}")
        from curate.recipe.preflight import check_dataset_inputs
        from curate.tables import Dataset

        if loaded.recipe.dataset is None:
            typer.echo(f"recipe {loaded.name}: {len(loaded.stages)} stages, ok (no dataset: run it with --dataset)")
            return
        dataset = Dataset(loaded.dataset_path())
        if dataset.exists():  # a recipe may be written before its dataset: then only the file is checked
            check_dataset_inputs(loaded, dataset)
            typer.echo(f"recipe {loaded.name}: {len(loaded.stages)} stages, ok (inputs found in {dataset.root})")
        else:
            typer.echo(f"recipe {loaded.name}: {len(loaded.stages)} stages, ok (dataset {dataset.root} not found: "
                       f"its tables were not checked)")
        return
    from curate.errors import RecipeError
    from curate.tables import Dataset

    if not Dataset(loaded.dataset_path()).exists():  # said with the recipe line, before the lock makes it
        where = loaded.where(("dataset",)) if p.dataset is None else "--dataset"
        raise RecipeError(f"{where}: dataset folder {loaded.dataset_path()} does not exist")
    hold_dataset_lock(loaded.dataset_path())  # one writer per dataset
    run_recipe(loaded, engine=run.engine, master=run.master, conf=run.conf, use_cache=not p.no_cache)


def register(app: typer.Typer) -> None:
    app.command("run")(job_command(
        RunParams, run_cmd, app_name="curate-run",
        common=Common(None, dataset=False, subset=False, output=False, storage=True, lock_first=False),
        help="Run RECIPE: stages in order from the pool to subsets/OUTPUT, with lineage and per-stage cache."))

    @app.command("stages")
    def stages() -> None:
        """List the stage kinds a recipe can use, with their parameters."""
        from curate.recipe.registry import all_kinds, describe_params

        for k in all_kinds():
            typer.echo(f"{k.kind:<22} [{k.family}] {k.doc}")
            for key, help in describe_params(k):
                typer.echo(f"    {key:<30} {help}".rstrip())
