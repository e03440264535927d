"""What a recipe needs from its dataset, checked before its first stage runs (and by ``curate
run --check`` when the dataset is there): its input, and every table a stage reads, is in the
dataset or made by an earlier stage of the recipe (a ``scorer`` stage's embeddings, a
``cluster`` stage's clustering). A missing model then fails at once, naming the recipe line,
not after the stages before it ran, nor never when an earlier stage removed everything."""

from __future__ import annotations

from curate.errors import RecipeError
from curate.recipe.registry import get_kind, tables_read
from curate.recipe.spec import LoadedRecipe
from curate.tables import Dataset

# stages that read a clustering by name, made by a ``cluster`` stage or `curate cluster`
_CLUSTERED = ("semdedup", "prune")


def check_dataset_inputs(loaded: LoadedRecipe, dataset: Dataset) -> None:
    """RecipeError, one line naming the recipe line, for the first input or table that is
    neither in ``dataset`` nor made by an earlier enabled stage."""
    from curate.models.scorers import resolve_scorer

    recipe = loaded.recipe
    _check_input(loaded, dataset)
    made: set[str] = set()  # tables earlier stages of this recipe write
    scorers: set[str] = set()  # scorers earlier stages train (their embeddings are made on the way)
    for i, spec in enumerate(loaded.stages):
        if not spec.enabled:
            continue
        kind = get_kind(spec.kind)
        params = kind.params.model_validate(spec.params)
        needed = tables_read(kind, params, dataset, recipe.embedding_model)
        default_clusters = f"clusters/{getattr(params, 'clusters', None) or f'recipe-{recipe.name}'}"
        if spec.kind in _CLUSTERED:
            needed = [t for t in needed if not t.startswith("clusters/")] + [default_clusters]
        for table in needed:
            if table in made or dataset.has_table(table):
                continue
            family, _, name = table.partition("/")
            if family == "embeddings" and (name in scorers or resolve_scorer(name, dataset.root) is not None):
                continue
            raise RecipeError(f"{loaded.where(('stages', i))}: stage {spec.name!r} reads {table}, which is not "
                              f"in {dataset.root}; {_hint(table, dataset)}")
        if kind.files is not None:
            _check_files(loaded, dataset, i, spec, kind, params)
        if spec.kind == "sql":
            _check_query_parses(loaded, i, spec, params.query)
        if spec.kind == "scorer":
            scorers.add(spec.name)
        if spec.kind == "cluster":
            made.add(default_clusters)


def _check_files(loaded: LoadedRecipe, dataset: Dataset, i: int, spec, kind, params) -> None:
    """The files and folders the stage's parameters name (evaluation images, a metadata file, a
    synset list) exist where the stage looks for them (``StageContext.find_path``)."""
    import glob

    from curate import storage
    from curate.recipe.registry import StageContext

    ctx = StageContext(dataset=dataset, embedding_model=loaded.recipe.embedding_model, stage_name=spec.name,
                       recipe_name=loaded.recipe.name, output=loaded.output, recipe_dir=loaded.folder)
    for f in kind.files(params, ctx):
        if any(c in f for c in "*?["):  # a glob of target files: its matches, or a store's listing later
            if storage.is_uri(f) or glob.glob(f):
                continue
        elif storage.exists(f):
            continue
        raise RecipeError(f"{loaded.where(('stages', i))}: stage {spec.name!r}: {f} does not exist (a relative "
                          "path is looked for in the dataset, beside the recipe, then here)")


def _check_query_parses(loaded: LoadedRecipe, i: int, spec, query: str) -> None:
    """A sql stage's query is one read-only statement DuckDB can parse. Parsed only, not bound:
    a table an earlier stage makes is not there yet, so names are left to the stage's run."""
    import duckdb

    from curate.errors import CurateError
    from curate.sql.connection import check_read_only

    con = duckdb.connect(":memory:")
    try:
        check_read_only(con, query)
    except CurateError as e:
        raise RecipeError(f"{loaded.where(('stages', i))}: stage {spec.name!r}: {e}") from None
    finally:
        con.close()


def _check_input(loaded: LoadedRecipe, dataset: Dataset) -> None:
    spec = loaded.recipe.input
    table = ("downloads" if spec == "downloaded" else f"subsets/{spec[len('subset:'):]}"
             if spec.startswith("subset:") else "samples")
    if not dataset.has_table(table):
        hint = ("run `curate download` first, or start from `input: all`" if table == "downloads"
                else _hint(table, dataset))
        raise RecipeError(f"{loaded.where(('input',))}: input {spec!r} needs {table}, which is not in "
                          f"{dataset.root}; {hint}")


def _hint(table: str, dataset: Dataset) -> str:
    family, _, name = table.partition("/")
    if family == "embeddings":
        have = sorted(t.partition("/")[2] for t in dataset.tables() if t.startswith("embeddings/"))
        return (f"run `curate embed` with that model first, or set embedding_model to one of the dataset's: "
                f"{', '.join(have)}" if have else "run `curate embed` first (the dataset has no embeddings yet)")
    if family == "clusters":
        return f"add a cluster stage before it (clusters: {name}) or run `curate cluster --name {name}` first"
    if family == "subsets":
        have = sorted(t.partition("/")[2] for t in dataset.tables() if t.startswith("subsets/"))
        return f"subsets here: {', '.join(have[:10]) or 'none'}{' ...' if len(have) > 10 else ''}"
    if table == "downloads":
        return "run `curate download` first"
    return "run `curate ingest` first"
