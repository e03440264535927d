"""``curate run RECIPE.yaml``: run a curation recipe (cached per stage) into a subset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from curate.commands._common import ConfOpt, EngineOpt, MasterOpt, StorageOpt, use_storage_options
from curate.lock import hold_dataset_lock
from curate.names import model_id_callback, name_callback


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run(
        recipe: Path = typer.Argument(..., help="Recipe YAML (see docs/recipe.md)."),
        dataset: Optional[str] = typer.Option(None, "--dataset", "-d",
                                              help="Dataset folder or URI (s3://bucket/ds: run on a local working "
                                                   "copy, published back); overrides the recipe's 'dataset'."),
        output: Optional[str] = typer.Option(None, "--output", "-o", help="Subset name; overrides the recipe's 'output'.",
                                          callback=name_callback),
        embedding_model: Optional[str] = typer.Option(None, "--embedding-model", "-m",
                                                      help="Model id (embeddings/<id>); overrides the recipe's.",
                                                      callback=model_id_callback),
        no_cache: bool = typer.Option(False, "--no-cache", help="Recompute every stage (the cache is still refreshed)."),
        check: bool = typer.Option(False, "--check", help="Only validate the recipe and list its stages."),
        master: Optional[str] = MasterOpt,
        conf: list[str] = ConfOpt,
        engine: str = EngineOpt,
        storage_option: list[str] = StorageOpt,
    ) -> None:
        """Run RECIPE: stages in order from the pool to subsets/OUTPUT, with lineage and per-stage cache."""
        from curate.recipe import load_recipe, run_recipe

        from curate import storage
        from curate.tables.publish import publish_working_copies, working_copy

        use_storage_options(storage_option)
        loaded = load_recipe(recipe)
        if dataset is not None:
            loaded.recipe.dataset = dataset if storage.is_uri(dataset) else str(Path(dataset).resolve())
        if output is not None:
            loaded.recipe.output = output
        if embedding_model is not None:
            loaded.recipe.embedding_model = embedding_model
        if check:
            for s in loaded.stages:
                typer.echo(f"{loaded.path}:{s.line}: {s.name} ({s.kind}) {json.dumps(s.params, sort_keys=True)}"
                           f"{'' if s.enabled else '  [disabled]'}")
            typer.echo(f"recipe {loaded.name}: {len(loaded.stages)} stages, ok")
            return
        if storage.is_uri(loaded.recipe.dataset or ""):  # fetched here, published back below (docs/storage.md)
            loaded.recipe.dataset = working_copy(loaded.recipe.dataset, master)
        hold_dataset_lock(loaded.dataset_path())  # one writer per dataset
        run_recipe(loaded, engine=engine, master=master, conf=conf, use_cache=not no_cache)
        publish_working_copies()

    @app.command("stages")
    def stages() -> None:
        """List the stage kinds a recipe can use, with their parameters."""
        from curate.recipe.registry import all_kinds, describe_params

        for k in all_kinds():
            typer.echo(f"{k.kind:<22} [{k.family}] {k.doc}")
            for key, help in describe_params(k):
                typer.echo(f"    {key:<30} {help}".rstrip())
