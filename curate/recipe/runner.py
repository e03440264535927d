"""Run a recipe: stages in order over a shrinking uid table, each cached by content hash.

No per-row data on the driver: the current subset is a uid table of the dataset (a
reference plus its engine-counted sizes); a stage's job reads it as its ``input_uids`` and
its workers write the decisions; the runner restricts them to the input with a semi-join,
counts them per reason and checks one decision per input uid with the engine, and the
workers write the next uid table, the subset hash digests, ``decisions/<recipe>`` and the
output subset (streamed into ``uids.parquet`` / ``uids.npy`` from sorted shards).

Output, all under the recipe's dataset:
- ``subsets/<output>/`` (uids.parquet + DataComp uids.npy + _manifest.json holding the lineage),
- ``decisions/<recipe name>/``: one row per (uid, stage) for every uid that reached the stage,
- ``_runs/recipe-<name>.json``: the run manifest (recipe text, per-stage hashes, counts per
  reason, timings, cache hits).

Pieces: ``inputs`` (the starting subset), ``stage_run`` (one stage run for real: checks,
counts, cache entry tables), ``cache`` (keys and entries), this module (the plan per stage,
cache hit or run, lineage, the recipe's outputs).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from curate.errors import CurateError, RecipeError
from curate.manifest import RunManifest
from curate.progress import info
from curate.recipe.cache import CACHE_DIR, StageCache, cache_key
from curate.tables.fingerprint import path_fingerprint, table_fingerprint
from curate.recipe.inputs import initial_table
from curate.recipe.preflight import check_dataset_inputs
from curate.recipe.registry import StageContext, code_hash, get_kind, tables_read
from curate.recipe.spec import LoadedRecipe, StageSpec
from curate.recipe.stage_run import run_legacy_stage, run_table_stage, with_stage
from curate.recipe.uid_tables import UidTable, subset_digest_frame
from curate.selection import DECISIONS, write_decisions_frame, write_subset_frame
from curate.tables import Dataset


def _embed_with_scorer(loaded: LoadedRecipe, dataset: Dataset, engine: str, master: str | None,
                       conf: list[str] | None, quiet: bool) -> None:
    """``embedding_model: <scorer name or folder>`` (``curate scorer train``): the recipe reads that
    scorer's embeddings, embedding the pool with it first when they are not there yet."""
    from curate.models.scorers import resolve_scorer

    recipe = loaded.recipe
    name = recipe.embedding_model
    if not name or dataset.has_table(f"embeddings/{name}"):
        return
    scorer = resolve_scorer(name, dataset.root)
    if scorer is None:
        return
    recipe.embedding_model = scorer.model_id
    if not dataset.has_table(f"embeddings/{scorer.model_id}"):
        from curate.engine.factory import open_executor
        from curate.embed.job import EmbedOptions, run_embed

        if not quiet:
            info(f"recipe {recipe.name}: embedding the pool with scorer {scorer.name} (embeddings/{scorer.model_id})")
        executor = open_executor(engine, master, list(conf or []), "curate-embed", dataset=str(dataset.root))
        run_embed(dataset, executor, EmbedOptions(model=str(scorer.folder), device="auto"))


@dataclass
class _RecipeRun:
    """What every step of one recipe run shares."""

    loaded: LoadedRecipe
    dataset: Dataset
    engine: str
    master: str | None
    conf: list[str] | None
    quiet: bool
    cache: StageCache
    manifest: RunManifest
    executor: Any = None
    this_run: dict[str, Any] = field(default_factory=dict)  # key -> entry made earlier in this run

    @property
    def recipe(self):
        return self.loaded.recipe

    def say(self, message: str) -> None:
        if not self.quiet:
            info(message)

    def context(self, stage_name: str) -> StageContext:
        recipe = self.recipe
        return StageContext(dataset=self.dataset, embedding_model=recipe.embedding_model, stage_name=stage_name,
                            recipe_name=recipe.name, output=self.loaded.output, engine=self.engine,
                            master=self.master, conf=list(self.conf or []), run_executor=self.executor,
                            recipe_dir=self.loaded.folder)


@dataclass
class _StageOutcome:
    """A stage's result in this run: run, taken from the cache, or skipped (nothing left)."""

    decisions: str | None
    uids: UidTable
    stats: dict
    reasons: dict[str, int]
    output_hash: str
    cached: bool


def _open_run(loaded: LoadedRecipe, engine: str, master: str | None, conf: list[str] | None,
              use_cache: bool, quiet: bool, executor) -> _RecipeRun:
    """The dataset (checked), the scorer's embeddings when the recipe names one, the cache,
    the manifest and the executor (``executor``, or one opened from ``engine``)."""
    dataset = Dataset(loaded.dataset_path())
    if not dataset.exists():
        raise RecipeError(f"{loaded.where(('dataset',))}: dataset folder {dataset.root} does not exist")
    recipe = loaded.recipe
    check_dataset_inputs(loaded, dataset)  # a missing model or table: now, not after the stages before it
    _embed_with_scorer(loaded, dataset, engine, master, conf, quiet)
    manifest = RunManifest(f"recipe-{recipe.name}", {"recipe": recipe.model_dump(mode="json"),
                                                     "recipe_file": str(loaded.path) if loaded.path else None,
                                                     "engine": engine, "master": master})
    manifest["recipe_text"] = loaded.text
    run = _RecipeRun(loaded, dataset, engine, master, conf, quiet, StageCache(dataset, enabled=use_cache),
                     manifest, executor)
    run.executor = run.context("input").executor()
    return run


def _start_lineage(run: _RecipeRun) -> tuple[dict[str, Any], UidTable, str]:
    """The input uid table, its hash, and the lineage's head."""
    recipe, dataset, ex = run.recipe, run.dataset, run.executor
    with run.manifest.stage("input"):
        # the input of this run, kept beside the cache entries that may refer to it
        inp = initial_table(dataset, recipe.input, ex, f"{CACHE_DIR}/input-{recipe.name}/uids")
        in_hash, _ = subset_digest_frame(inp.frame(dataset, ex))
    lineage: dict[str, Any] = {
        "recipe": recipe.name, "recipe_file": str(run.loaded.path) if run.loaded.path else None,
        "dataset": str(dataset.root), "input": recipe.input, "embedding_model": recipe.embedding_model,
        "input_count": inp.rows, "input_distinct": inp.distinct, "input_hash": in_hash, "stages": [],
    }
    run.say(f"recipe {recipe.name}: {inp.rows:,} samples from {recipe.input}")
    return lineage, inp, in_hash


def _execute_stage(run: _RecipeRun, spec: StageSpec, kind, params, cur: UidTable, in_hash: str,
                   key: str, identity: dict) -> _StageOutcome:
    """Run the stage for real and commit its cache entry (``identity``: code, reads)."""
    ctx = run.context(spec.name)
    execute = run_table_stage if kind.frames else run_legacy_stage
    try:
        done = execute(ctx, kind, params, cur, run.cache, key, spec.name)
    except CurateError as e:  # say which recipe line the failing stage is on
        where = run.loaded.where(("stages", run.loaded.stages.index(spec)))
        text = str(e)
        if text.startswith(f"{run.loaded.path or '<recipe>'}:"):  # said already (a preflight's line)
            raise
        if isinstance(e, RecipeError):  # the stage's own check, which names the stage
            raise RecipeError(f"{where}: {text}" if text.startswith("stage ") else
                              f"{where}: stage {spec.name!r}: {text}") from e
        raise CurateError(f"{where}: stage {spec.name!r}: {text}") from e
    # a pass-through that removed nothing has its input's hash
    out_hash = in_hash if done.uids is cur else subset_digest_frame(done.uids.frame(run.dataset, run.executor))[0]
    # the tables the stage wrote beside its decisions (a clustering): a later hit is good only
    # while they are still these (another run may have written the same name since)
    # (and its decisions/<run>: a later run of other parameters under the same names replaces it)
    written = [*done.stats.get("writes", ()), f"decisions/{ctx.run_name}"]
    writes = {t: table_fingerprint(run.dataset, t) for t in written if run.dataset.has_table(t)}
    run.this_run[key] = run.cache.commit(key, done.decisions, done.uids, {
        "stage": spec.name, "kind": spec.kind, "params": spec.params, "input_hash": in_hash,
        "output_hash": out_hash, **identity, "reasons": done.reasons, "stats": done.stats, "writes": writes})
    return _StageOutcome(done.decisions, done.uids, done.stats, done.reasons, out_hash, False)


def _run_stage(run: _RecipeRun, spec: StageSpec, cur: UidTable, in_hash: str) -> tuple[dict, _StageOutcome]:
    """One enabled stage: its cache key (input hash, kind, parameters, code, tables read),
    then nothing (no input left), the cached entry, or a real run. Returns its lineage entry."""
    kind = get_kind(spec.kind)
    params = kind.params.model_validate(spec.params)
    reads = [table_fingerprint(run.dataset, t)
             for t in tables_read(kind, params, run.dataset, run.recipe.embedding_model)]
    if kind.files is not None:  # evaluation images, a metadata file: replaced or added to, the stage runs again
        reads += [path_fingerprint(f) for f in kind.files(params, run.context(spec.name))]
    code = code_hash(kind)
    names = kind.names(params, run.context(spec.name)) if kind.names is not None else {}
    key_params = {**spec.params, "_names": names} if names else spec.params
    key = cache_key(in_hash, spec.kind, key_params, code, reads)
    t0 = time.perf_counter()
    hit = (run.this_run.get(key) or run.cache.get(key)) if cur.rows else None
    if hit is not None and any(table_fingerprint(run.dataset, t) != fp
                               for t, fp in hit.meta.get("writes", {}).items()):
        hit = None  # what it wrote was overwritten since (the same clustering name, other parameters): run again
    if not cur.rows:  # nothing left to decide: the stage is not run
        outcome = _StageOutcome(None, cur, {}, {}, in_hash, False)
    elif hit is not None:
        meta = hit.meta
        outcome = _StageOutcome(hit.decisions, hit.uids, meta.get("stats", {}), meta.get("reasons", {}),
                                meta["output_hash"], True)
    else:
        outcome = _execute_stage(run, spec, kind, params, cur, in_hash, key, {"code": code, "reads": reads})
    seconds = round(time.perf_counter() - t0, 4)
    run.manifest.data["timings_s"][spec.name] = seconds
    entry = {"name": spec.name, "kind": spec.kind, "family": kind.family, "line": spec.line,
             "params": spec.params, "cache_key": key, "cached": outcome.cached, "code_hash": code,
             "input_count": cur.rows, "input_distinct": cur.distinct, "input_hash": in_hash,
             "output_count": outcome.uids.rows, "output_distinct": outcome.uids.distinct,
             "output_hash": outcome.output_hash, "reasons": outcome.reasons, "seconds": seconds,
             "stats": outcome.stats}
    if cur.rows and not outcome.uids.rows:  # said, not only seen in the funnel
        entry["warnings"] = [f"removed every one of its {cur.rows:,} input samples; check its parameters"]
    return entry, outcome


def _say_stage(run: _RecipeRun, entry: dict) -> None:
    """The stage's line: rows in -> out, cached or not, seconds; then its guards' warnings."""
    n_in, n_out = entry["input_count"], entry["output_count"]
    run.say(f"  {entry['name']:<24} {n_in:>10,} -> {n_out:>10,}  (-{n_in - n_out:,})"
            f"{'  (cached)' if entry['cached'] else ''}  {entry['seconds']:.2f}s")
    for w in [*(entry["stats"] or {}).get("warnings", []), *entry.get("warnings", [])]:  # guards, an empty output
        run.say(f"    warning: {w}")


def _write_outputs(run: _RecipeRun, lineage: dict, out: UidTable, stage_decisions: list[tuple[str, str]]) -> None:
    """``decisions/<recipe>`` (every stage's rows, sorted by the workers) and the output subset."""
    dataset, ex, recipe = run.dataset, run.executor, run.recipe
    with run.manifest.stage("write"):
        if any(s.get("enabled", True) for s in lineage["stages"]):
            # each entry's rows under this run's stage name (a cache hit may have been made under another)
            frames = [with_stage(ex.frame_read([str(p) for p in dataset.shards(t)], DECISIONS), name)
                      for t, name in stage_decisions if dataset.has_table(t)]
            allf = frames[0] if frames else ex.frame_from_table(DECISIONS.empty_table())
            for f in frames[1:]:
                allf = allf.union(f)
            write_decisions_frame(dataset, recipe.name, allf)
            lineage["decisions"] = f"decisions/{recipe.name}"
        write_subset_frame(dataset, run.loaded.output, out.frame(dataset, ex),
                           manifest={"lineage": lineage, "recipe": recipe.name, "recipe_text": run.loaded.text},
                           executor=ex)
    lineage["subset"] = f"subsets/{run.loaded.output}"


def _write_manifest(run: _RecipeRun, lineage: dict, out: UidTable) -> None:
    """``_runs/recipe-<name>.json``: the selection count keys (input, kept, removed, reasons =
    rows of decisions/<recipe> per reason), then each stage's reasons under its name."""
    manifest = run.manifest
    manifest["lineage"] = lineage
    per_reason: dict[str, int] = {}
    for s in lineage["stages"]:
        for r, n in (s.get("reasons") or {}).items():
            per_reason[r] = per_reason.get(r, 0) + n
    manifest["counts"] = {"input": lineage["input_count"], "output": out.rows, "kept": out.rows,
                          "removed": lineage["input_count"] - out.rows, "reasons": dict(sorted(per_reason.items())),
                          **{s["name"]: s.get("reasons", {}) for s in lineage["stages"]}}
    manifest["outputs"] = {"subset": lineage["subset"], "decisions": lineage.get("decisions")}
    lineage["manifest"] = str(manifest.write(run.dataset))


def run_recipe(loaded: LoadedRecipe, engine: str = "spark", master: str | None = None,
               conf: list[str] | None = None, use_cache: bool = True, quiet: bool = False,
               executor=None) -> dict:
    """Run every enabled stage; returns the lineage (also saved with the subset and in _runs/).

    The driver holds uid-table references, per-stage reason counts, one digest row per
    subset hash and the shard records of the tables the workers write; ``executor`` (default:
    opened from ``engine``) is the one every stage and frame uses."""
    run = _open_run(loaded, engine, master, conf, use_cache, quiet, executor)
    lineage, cur, cur_hash = _start_lineage(run)
    stage_decisions: list[tuple[str, str]] = []  # (decisions table, stage name)
    for spec in loaded.stages:
        if not spec.enabled:
            lineage["stages"].append({"name": spec.name, "kind": spec.kind, "line": spec.line, "enabled": False})
            continue
        # a scorer trained by an earlier stage (kind: scorer) is the recipe's model from here on
        _embed_with_scorer(loaded, run.dataset, engine, master, conf, quiet)
        entry, outcome = _run_stage(run, spec, cur, cur_hash)
        lineage["stages"].append(entry)
        _say_stage(run, entry)
        if outcome.decisions is not None:
            stage_decisions.append((outcome.decisions, spec.name))
        cur, cur_hash = outcome.uids, outcome.output_hash

    lineage["embedding_model"] = run.recipe.embedding_model  # resolved, when a stage trained the scorer
    lineage.update(output=loaded.output, output_count=cur.rows, output_distinct=cur.distinct, output_hash=cur_hash)
    _write_outputs(run, lineage, cur, stage_decisions)
    _write_manifest(run, lineage, cur)
    run.say(f"subset {loaded.output}: {cur.rows:,} samples -> {run.dataset.path(lineage['subset'])}")
    return lineage
