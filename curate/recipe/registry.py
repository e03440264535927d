"""Stage kinds a recipe can name, registered by small adapter modules in ``curate/recipe/stages/``.

An adapter declares a pydantic model of its parameters and a function. A stage registered
with ``frames=True`` has ``run(ctx, inp: UidTable, params) -> StageOutput``: its input is a
reference to a uid table of the dataset (``inp.uid_list(ctx.dataset)`` is a job's
``input_uids``), its output the decisions table its job's workers wrote (or a frame of
decision rows); the runner restricts, checks, counts and writes with the engine, so no
per-row data reaches the driver. A stage not converted yet has the legacy
``run(ctx, uids, params) -> StageResult`` over a uid array, which the runner feeds through a
bounded adapter (``stage_run.LEGACY_MAX_ROWS``, rows counted in ``executor.driver_counter``).
Adding a stage family means adding one module there; the runner, the cache and the other
stages are untouched. Every module in ``curate/recipe/stages/`` is imported on first use.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import pkgutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pyarrow as pa
from curate.params import JobParams
from curate.tables import Dataset

# Base of every stage's parameter model: unknown keys are errors (typos never pass). A stage
# wrapping a job takes that job's model (curate/params/), so recipe keys are the CLI options.
Params = JobParams


@dataclass
class StageResult:
    """A stage's output: decisions over its input, and the uids passed on.

    ``uids`` defaults to the kept uids of ``decisions``; a stage that upsamples (repeats a
    uid) sets it explicitly.
    """

    decisions: pa.Table
    uids: pa.Array | None = None
    stats: dict[str, Any] = field(default_factory=dict)


@dataclass
class StageOutput:
    """A converted stage's output: ``decisions`` is a decisions table of the dataset (e.g. the
    ``decisions/<run>`` its job wrote; it may decide more uids than the input, the runner keeps
    the input's rows with a semi-join) or a frame of decision rows; ``stats`` is small."""

    decisions: Any
    stats: dict[str, Any] = field(default_factory=dict)


def keep_all(ctx: "StageContext", inp) -> Any:
    """Decision rows keeping every distinct uid of ``inp`` (pass-through stages), as a frame."""
    from curate.decisions import KEPT
    from curate.selection import DECISIONS

    stage = ctx.stage_name

    def rows(b: pa.RecordBatch) -> pa.Table:
        n = b.num_rows
        return pa.table([b.column("uid"), pa.array([stage] * n, pa.string()), pa.array([True] * n),
                         pa.array([KEPT] * n, pa.string()), pa.nulls(n, pa.float64()), pa.nulls(n, pa.string())],
                        schema=DECISIONS)

    return inp.frame(ctx.dataset, ctx.executor()).distinct().map_batches(rows, DECISIONS)


@dataclass
class StageContext:
    """What a stage may use besides its input uids and parameters."""

    dataset: Dataset
    embedding_model: str | None
    stage_name: str
    recipe_name: str = "recipe"
    output: str | None = None  # the subset the recipe writes at the end
    engine: str = "spark"
    master: str | None = None
    conf: list[str] = field(default_factory=list)
    run_executor: Any = None  # the executor every stage of the recipe run shares (None: opened on first use)
    recipe_dir: Any = None  # the recipe file's folder (a path or URI; None: a recipe given as text)

    def find_path(self, raw: str) -> str:
        """A file or folder a stage's parameter names: a URI or an absolute path as written; a
        relative one in the dataset, else beside the recipe file, else where curate runs (the
        first that exists; the last when none does, for the stage's own error)."""
        from pathlib import Path

        from curate import storage

        if storage.is_uri(raw) or Path(raw).expanduser().is_absolute():
            return str(Path(raw).expanduser()) if not storage.is_uri(raw) else raw
        places = [storage.join(self.dataset.root, raw)]
        if self.recipe_dir is not None:
            places.append(storage.join(self.recipe_dir, raw) if storage.is_uri(self.recipe_dir)
                          else str(Path(self.recipe_dir) / raw))
        return next((str(q) for q in places if storage.exists(q)), str(Path(raw).resolve()))

    def executor(self):
        """The job executor (``engine``: auto, local or spark), opened once per recipe run."""
        if self.run_executor is None:
            from curate.engine.factory import open_executor

            self.run_executor = open_executor(self.engine, self.master, self.conf, app_name="curate-run",
                                              dataset=str(self.dataset.root))
        return self.run_executor

    @property
    def run_name(self) -> str:
        """Name for the tables a wrapped job writes (decisions/<run>, subsets/<run>)."""
        return f"recipe-{self.recipe_name}-{self.stage_name}"

    def restrict(self, decisions: pa.Table, uids: pa.Array) -> pa.Table:
        """A pool-wide job's decisions, cut down to this stage's input uids (one row each)."""
        import pyarrow.compute as pc

        from curate.errors import DatasetError

        distinct = pc.unique(uids)
        out = decisions.filter(pc.is_in(decisions.column("uid"), value_set=distinct))
        if out.num_rows != len(distinct):
            raise DatasetError(f"stage {self.stage_name!r}: the job decided {out.num_rows} of the "
                               f"{len(distinct)} input uids (is the input from this dataset?)")
        return out

    def spark(self):
        ex = self.executor()
        return getattr(ex, "spark", None)

    def embeddings_table(self) -> str:
        from curate.errors import RecipeError

        if not self.embedding_model:
            raise RecipeError(f"stage {self.stage_name!r} reads embeddings: set 'embedding_model' in the recipe")
        name = f"embeddings/{self.embedding_model}"
        if not self.dataset.has_table(name):
            raise RecipeError(f"stage {self.stage_name!r}: table {name} not found in {self.dataset.root} "
                              f"(run `curate embed` with that model first)")
        return name


RunFn = Callable[[StageContext, pa.Array, Any], StageResult]


@dataclass(frozen=True)
class StageKind:
    kind: str
    params: type[Params]
    run: RunFn
    family: str
    doc: str
    # tables whose content the output depends on ("{embeddings}" = the recipe model's), or a
    # function (params, dataset, embedding_model) -> table names, for stages like sql
    reads: tuple[str, ...] | Callable[[Any, Dataset, str | None], list[str]] = ()
    # files and folders the output depends on outside the tables (evaluation images, a metadata
    # file), found as the stage finds them: (params, ctx) -> paths, fingerprinted for the cache
    files: Callable[[Any, StageContext], list[str]] | None = None
    code_modules: tuple[str, ...] = ()   # modules whose source is part of the cache key
    version: str = "1"                   # bump when behaviour changes in a way the source hash misses
    # the names the stage's tables take (its decisions/recipe-<recipe>-<stage>, a clustering, a
    # scorer): part of the cache key, so a renamed recipe or stage writes its own tables instead of
    # taking a hit whose tables carry the other name; None: it writes nothing under a name
    names: Callable[[Any, StageContext], dict] | None = None
    frames: bool = False                 # run(ctx, UidTable, params) -> StageOutput (no rows on the driver)


_REGISTRY: dict[str, StageKind] = {}
_loaded = False


def run_names(params, ctx: StageContext) -> dict:
    """The default: the stage writes ``decisions/<ctx.run_name>`` (and what it names after it)."""
    return {"run": ctx.run_name}


def register(kind: str, params: type[Params], *, family: str, reads: Any = (),
             code_modules: tuple[str, ...] = (), version: str = "1",
             names: Callable[[Any, StageContext], dict] | None | str = "run",
             frames: bool = False, files: Callable[[Any, StageContext], list[str]] | None = None):
    """Decorator registering ``fn(ctx, uids, params) -> StageResult`` as stage ``kind`` (with
    ``frames``: ``fn(ctx, UidTable, params) -> StageOutput``)."""

    def deco(fn: RunFn) -> RunFn:
        if kind in _REGISTRY and _REGISTRY[kind].run is not fn:
            raise ValueError(f"stage kind {kind!r} registered twice")
        doc = inspect.getdoc(fn) or ""
        _REGISTRY[kind] = StageKind(kind, params, fn, family, doc.split("\n\n")[0], reads, files,
                                    (fn.__module__, *code_modules), version,
                                    run_names if names == "run" else names, frames)
        return fn

    return deco


def _load() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import curate.recipe.stages as pkg

    for mod in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda m: m.name):
        if not mod.name.startswith("_"):
            importlib.import_module(f"curate.recipe.stages.{mod.name}")


def get_kind(kind: str) -> StageKind:
    _load()
    return _REGISTRY[kind]


def kinds() -> list[str]:
    _load()
    return sorted(_REGISTRY)


def all_kinds() -> list[StageKind]:
    _load()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def describe_params(stage: StageKind) -> list[tuple[str, str]]:
    """(``key=default``, help) per parameter of a stage, as ``curate stages`` lists them; the
    help is the job model's field description, the one ``--help`` shows."""
    out = []
    for name, f in stage.params.model_fields.items():
        default = "required" if f.is_required() else repr(f.default)
        out.append((f"{name}={default}", f.description or ""))
    return out


def code_hash(stage: StageKind) -> str:
    """Hash of the source of the modules a stage's output depends on, plus its version.

    A module that cannot be imported (its issue has not landed) hashes as 'missing'; the
    stage then fails when run, not when hashed.
    """
    h = hashlib.sha256(f"{stage.kind}:{stage.version}".encode())
    for name in stage.code_modules:
        h.update(f"\n{name}:".encode())
        for f in _module_files(name):
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _module_files(name: str) -> list[Path]:
    try:
        mod = sys.modules.get(name) or importlib.import_module(name)
    except ImportError:
        return []
    f = getattr(mod, "__file__", None)
    if not f:
        return []
    p = Path(f)
    if p.name == "__init__.py":  # a package: every module in it
        return sorted(x for x in p.parent.rglob("*.py"))
    return [p]


def tables_read(stage: StageKind, params: Any, dataset: Dataset, embedding_model: str | None) -> list[str]:
    if callable(stage.reads):
        names = list(stage.reads(params, dataset, embedding_model))
    else:
        names = [t.replace("{embeddings}", f"embeddings/{embedding_model}") for t in stage.reads]
    return sorted(set(names))
