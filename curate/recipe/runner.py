"""Run a recipe: stages in order over a shrinking uid list, each cached by content hash.

Output, all under the recipe's dataset:
- ``subsets/<output>/`` (uids.parquet + DataComp uids.npy + _manifest.json holding the lineage),
- ``decisions/<recipe name>/``: one row per (uid, stage) for every uid that reached the stage,
- ``_runs/recipe-<name>.json``: the run manifest (recipe text, per-stage hashes, counts per
  reason, timings, cache hits).
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate.decisions import KEPT, reason_counts
from curate.engine import LocalExecutor
from curate.errors import CurateError, DatasetError
from curate.manifest import RunManifest
from curate.progress import info
from curate.recipe.cache import StageCache, cache_key, subset_hash, table_fingerprint
from curate.recipe.registry import StageContext, StageResult, code_hash, get_kind, tables_read
from curate.errors import RecipeError
from curate.recipe.spec import LoadedRecipe
from curate.selection import DECISIONS, write_decisions_frame
from curate.subset import read_subset_array, write_subset
from curate.tables import Dataset, load_schema


def initial_uids(dataset: Dataset, spec: str) -> pa.Array:
    """The subset a recipe starts from: all samples, the downloaded ones, or a named subset."""
    if spec == "all":
        return dataset.read("samples", columns=["uid"]).column("uid").combine_chunks()
    if spec == "downloaded":
        if not dataset.has_table("downloads"):
            raise DatasetError(f"{dataset.root}: no downloads table; run `curate download` first "
                               f"or start the recipe with `input: all`")
        t = dataset.read("downloads", columns=["uid", "status"])
        return t.filter(pc.equal(t.column("status"), "success")).column("uid").combine_chunks()
    if spec.startswith("subset:"):
        return read_subset_array(dataset, spec[len("subset:"):])
    raise RecipeError(f"unknown recipe input {spec!r}")


def _check_decisions(decisions: pa.Table, uids: pa.Array, stage: str) -> pa.Table:
    """Conform a stage's decisions and check: one row per distinct input uid, reasons consistent."""
    schema = load_schema("decisions")
    n = decisions.num_rows
    decisions = decisions.set_column(decisions.schema.get_field_index("stage"), "stage",
                                     pa.array([stage] * n, pa.string()))
    decisions = schema.conform(decisions)
    distinct_in = pc.unique(uids)
    if n == 0 and len(distinct_in) == 0:
        return decisions
    if n != len(distinct_in) or pc.count_distinct(decisions.column("uid")).as_py() != n:
        raise DatasetError(f"stage {stage!r} returned {n} decision rows for {len(distinct_in)} distinct "
                           f"input uids (each input uid needs exactly one decision)")
    if not pc.all(pc.is_in(decisions.column("uid"), value_set=distinct_in)).as_py():
        raise DatasetError(f"stage {stage!r} returned decisions for uids that were not in its input")
    is_kept_reason = pc.equal(decisions.column("reason"), KEPT)
    if not pc.all(pc.equal(is_kept_reason, decisions.column("kept"))).as_py():
        raise DatasetError(f"stage {stage!r}: reason must be 'kept' exactly where kept is true")
    return decisions


def removed_any(decisions: pa.Table) -> bool:
    return decisions.num_rows > 0 and not pc.all(decisions.column("kept")).as_py()


def _passed(uids: pa.Array, decisions: pa.Table) -> pa.Array:
    """Input uids (repeats preserved) whose decision is kept."""
    kept = decisions.filter(decisions.column("kept")).column("uid")
    return uids.filter(pc.is_in(uids, value_set=kept.combine_chunks()))


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


def run_recipe(loaded: LoadedRecipe, engine: str = "spark", master: str | None = None,
               conf: list[str] | None = None, use_cache: bool = True, quiet: bool = False) -> dict:
    """Run every enabled stage; returns the lineage (also saved with the subset and in _runs/)."""
    ds_path = loaded.dataset_path()
    if not ds_path.is_dir():
        raise RecipeError(f"{loaded.where(('dataset',))}: dataset folder {ds_path} does not exist")
    dataset = Dataset(ds_path)
    recipe = loaded.recipe
    _embed_with_scorer(loaded, dataset, engine, master, conf, quiet)
    cache = StageCache(dataset, enabled=use_cache)
    manifest = RunManifest(f"recipe-{recipe.name}", {"recipe": recipe.model_dump(mode="json"),
                                                     "recipe_file": str(loaded.path) if loaded.path else None,
                                                     "engine": engine, "master": master})
    manifest["recipe_text"] = loaded.text
    say = (lambda m: None) if quiet else info

    with manifest.stage("input"):
        uids = initial_uids(dataset, recipe.input)
    lineage: dict[str, Any] = {
        "recipe": recipe.name, "recipe_file": str(loaded.path) if loaded.path else None,
        "dataset": str(dataset.root), "input": recipe.input, "embedding_model": recipe.embedding_model,
        "input_count": len(uids), "input_hash": subset_hash(uids), "stages": [],
    }
    cur_hash = lineage["input_hash"]
    say(f"recipe {recipe.name}: {len(uids):,} samples from {recipe.input}")
    all_decisions: list[pa.Table] = []
    ctx_shared: dict[str, Any] = {"executor": None}
    for spec in loaded.stages:
        if not spec.enabled:
            lineage["stages"].append({"name": spec.name, "kind": spec.kind, "line": spec.line, "enabled": False})
            continue
        # a scorer trained by an earlier stage (kind: scorer) is the recipe's model from here on
        _embed_with_scorer(loaded, dataset, engine, master, conf, quiet)
        kind = get_kind(spec.kind)
        params = kind.params.model_validate(spec.params)
        reads = [table_fingerprint(dataset, t)
                 for t in tables_read(kind, params, dataset, recipe.embedding_model)]
        in_hash = cur_hash
        code = code_hash(kind)
        key_params = {**spec.params, "name": spec.name} if kind.named_output else spec.params
        key = cache_key(in_hash, spec.kind, key_params, code, reads)
        t0 = time.perf_counter()
        hit = cache.get(key) if len(uids) else None
        if not len(uids):  # nothing left to decide: the stage is not run
            decisions, out_uids, stats, cached = load_schema("decisions").arrow().empty_table(), uids, {}, False
            out_hash = in_hash
        elif hit is not None:
            decisions, out_uids, meta = hit
            stats = meta.get("stats", {})
            out_hash = meta.get("output_hash") or subset_hash(out_uids)
            cached = True
        else:
            ctx = StageContext(dataset=dataset, embedding_model=recipe.embedding_model, stage_name=spec.name,
                               recipe_name=recipe.name, output=loaded.output,
                               engine=engine, master=master, conf=list(conf or []),
                               _executor=ctx_shared["executor"])
            try:
                result = kind.run(ctx, uids, params)
            except RecipeError:
                raise
            except CurateError as e:  # say which recipe line the failing stage is on
                raise CurateError(f"{loaded.where(('stages', loaded.stages.index(spec)))}: stage "
                                  f"{spec.name!r}: {e}") from e
            ctx_shared["executor"] = ctx._executor
            if not isinstance(result, StageResult):
                result = StageResult(decisions=result)
            decisions = _check_decisions(result.decisions, uids, spec.name)
            out_uids = result.uids if result.uids is not None else _passed(uids, decisions)
            out_uids = out_uids.cast(pa.string())
            # a pass-through that removed nothing has its input's hash (hashing sorts: skip it)
            out_hash = in_hash if result.uids is None and not removed_any(decisions) else subset_hash(out_uids)
            stats = result.stats
            cached = False
            cache.put(key, decisions, out_uids, {"stage": spec.name, "kind": spec.kind, "params": spec.params,
                                                 "input_hash": in_hash, "output_hash": out_hash,
                                                 "code": code, "reads": reads,
                                                 "stats": stats})
        seconds = round(time.perf_counter() - t0, 4)
        manifest.data["timings_s"][spec.name] = seconds
        counts = reason_counts(decisions)
        entry = {"name": spec.name, "kind": spec.kind, "family": kind.family, "line": spec.line,
                 "params": spec.params, "cache_key": key, "cached": cached, "code_hash": code,
                 "input_count": len(uids), "input_hash": in_hash, "output_count": len(out_uids),
                 "output_hash": out_hash, "reasons": counts, "seconds": seconds, "stats": stats}
        lineage["stages"].append(entry)
        removed = len(uids) - len(out_uids)
        say(f"  {spec.name:<24} {len(uids):>10,} -> {len(out_uids):>10,}  (-{removed:,})"
            f"{'  (cached)' if cached else ''}  {seconds:.2f}s")
        for w in (stats or {}).get("warnings", []):  # embedding-space guards
            say(f"    warning: {w}")
        all_decisions.append(decisions)
        uids, cur_hash = out_uids, out_hash

    lineage["embedding_model"] = recipe.embedding_model  # resolved, when a stage trained the scorer
    lineage["output"] = loaded.output
    lineage["output_count"] = len(uids)
    lineage["output_distinct"] = len(pc.unique(uids)) if len(uids) else 0
    lineage["output_hash"] = cur_hash
    with manifest.stage("write"):
        if all_decisions:  # the shared finish's writer (the stages hand back driver-side tables)
            write_decisions_frame(dataset, recipe.name, LocalExecutor().frame_from_table(
                pa.concat_tables(all_decisions).cast(DECISIONS)))
            lineage["decisions"] = f"decisions/{recipe.name}"
        write_subset(dataset, loaded.output, uids, manifest={"lineage": lineage, "recipe": recipe.name,
                                                              "recipe_text": loaded.text})
    lineage["subset"] = f"subsets/{loaded.output}"
    manifest["lineage"] = lineage
    per_reason: dict[str, int] = {}
    for s in lineage["stages"]:
        for r, n in (s.get("reasons") or {}).items():
            per_reason[r] = per_reason.get(r, 0) + n
    # the selection count keys (input, kept, removed, reasons = rows of decisions/<recipe> per
    # reason), then each stage's reasons under its name
    manifest["counts"] = {"input": lineage["input_count"], "output": len(uids), "kept": len(uids),
                          "removed": lineage["input_count"] - len(uids), "reasons": dict(sorted(per_reason.items())),
                          **{s["name"]: s.get("reasons", {}) for s in lineage["stages"]}}
    manifest["outputs"] = {"subset": lineage["subset"], "decisions": lineage.get("decisions")}
    lineage["manifest"] = str(manifest.write(dataset))
    say(f"subset {loaded.output}: {len(uids):,} samples -> {dataset.root / lineage['subset']}")
    return lineage
