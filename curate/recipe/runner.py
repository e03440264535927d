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
"""

from __future__ import annotations

import shutil
import time
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate.decisions import KEPT, reason_counts
from curate.engine import LocalExecutor
from curate.errors import CurateError, DatasetError
from curate.manifest import RunManifest
from curate.progress import info
from curate.engine.frame import TooManyRows
from curate.recipe.cache import CACHE_DIR, StageCache, cache_key, table_fingerprint
from curate.recipe.registry import StageContext, StageOutput, StageResult, code_hash, get_kind, tables_read
from curate.errors import RecipeError
from curate.recipe.spec import LoadedRecipe
from curate.recipe.uid_tables import UID_SCHEMA, UidTable, counted_uid_table, subset_digest_frame, write_uid_table
from curate.selection import DECISIONS, DECISIONS_SHARD_ROWS, count_reasons, write_decisions_frame, write_subset_frame
from curate.tables import Dataset, load_schema


LEGACY_MAX_ROWS = 20_000_000  # input rows a stage not converted to tables may take on the driver


def initial_uids(dataset: Dataset, spec: str) -> pa.Array:
    """The subset a recipe starts from, as an array (small pools, tools; the runner itself
    uses ``initial_table``)."""
    ex = LocalExecutor()
    t = initial_table(dataset, spec, ex, "_tmp/recipe-initial-uids")
    try:
        return t.frame(dataset, ex).table.column("uid").combine_chunks().cast(pa.string())
    finally:
        if t.name.startswith("_tmp/"):
            shutil.rmtree(dataset.table_dir(t.name), ignore_errors=True)


def initial_table(dataset: Dataset, spec: str, executor, work: str) -> UidTable:
    """The subset a recipe starts from as a uid table: all samples (the ``samples`` table
    itself), the downloaded ones (written by the workers under ``work``), or a named subset."""
    if spec == "all":
        return counted_uid_table(dataset, "samples", executor)
    if spec == "downloaded":
        if not dataset.has_table("downloads"):
            raise DatasetError(f"{dataset.root}: no downloads table; run `curate download` first "
                               f"or start the recipe with `input: all`")
        schema = pa.schema([("uid", pa.string()), ("status", pa.string())])

        def success(b: pa.RecordBatch) -> pa.Table:
            return pa.Table.from_batches([b]).filter(pc.equal(b.column("status"), "success")).select(["uid"])

        frame = executor.frame_read([str(p) for p in dataset.shards("downloads")], schema).map_batches(success, UID_SCHEMA)
        return write_uid_table(dataset, work, frame)
    if spec.startswith("subset:"):
        name = spec[len("subset:"):]
        if not dataset.has_table(f"subsets/{name}"):
            raise DatasetError(f"subset not found: {dataset.root / 'subsets' / name / 'uids.parquet'}")
        return counted_uid_table(dataset, f"subsets/{name}", executor)
    raise RecipeError(f"unknown recipe input {spec!r}")


def _check_decisions(decisions: pa.Table, uids: pa.Array, stage: str) -> pa.Table:
    """Legacy adapter: conform a stage's driver-side decisions and check them (one row per
    distinct input uid, reasons consistent)."""
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


def _stage_column(stage: str):
    def set_stage(b: pa.RecordBatch) -> pa.Table:
        t = pa.Table.from_batches([b])
        return t.set_column(t.schema.get_field_index("stage"), "stage", pa.array([stage] * t.num_rows, pa.string()))
    return set_stage


def _inconsistent(b: pa.RecordBatch) -> pa.Table:
    t = pa.Table.from_batches([b])
    bad = pc.not_equal(pc.equal(t.column("reason"), KEPT), pc.fill_null(t.column("kept"), False))
    return t.filter(pc.fill_null(bad, True)).select(["uid"])


def check_stage_decisions(dec, inp: UidTable, stage: str) -> tuple[dict[str, int], int]:
    """The engine's checks of a stage's decisions frame (already restricted to its input):
    one decision per distinct input uid, ``reason == kept`` exactly where kept. Returns the
    (rows per reason, rows kept) counts; O(reasons) rows reach the driver."""
    reasons, n_kept = count_reasons(dec)
    n = sum(reasons.values())
    distinct = dec.select(["uid"]).distinct().count() if n else 0
    if n != inp.distinct or distinct != n:
        raise DatasetError(f"stage {stage!r} returned {n} decision rows for {inp.distinct} distinct "
                           f"input uids (each input uid needs exactly one decision)")
    if n and dec.map_batches(_inconsistent, UID_SCHEMA).count():
        raise DatasetError(f"stage {stage!r}: reason must be 'kept' exactly where kept is true")
    return reasons, n_kept


def _decisions_frame(ctx: StageContext, executor, out: StageOutput):
    if isinstance(out.decisions, str):
        paths = [str(p) for p in ctx.dataset.shards(out.decisions)]
        return executor.frame_read(paths, DECISIONS) if paths else executor.frame_from_table(DECISIONS.empty_table())
    return out.decisions


def _job_input(dataset: Dataset, executor, inp: UidTable, work: str) -> UidTable:
    """The input as the jobs take it: distinct uids (a table with repeats is deduplicated once)."""
    if inp.rows == inp.distinct:
        return inp
    return write_uid_table(dataset, work, inp.frame(dataset, executor).distinct(), inp.distinct)


def _run_table_stage(ctx: StageContext, kind, params, inp: UidTable, cache: StageCache, key: str,
                     stage: str) -> tuple[str, UidTable, dict, dict[str, int], int]:
    """A converted stage: the job's decisions restricted to the input by a semi-join, checked,
    counted and written into the cache entry by the workers; the kept uids (input repeats
    preserved) likewise."""
    ex = ctx.executor()
    ds = ctx.dataset
    job_in = _job_input(ds, ex, inp, f"_tmp/{ctx.run_name}/input")
    out: StageOutput = kind.run(ctx, job_in, params)
    in_frame = inp.frame(ds, ex)
    dec = _decisions_frame(ctx, ex, out).semi_join(job_in.frame(ds, ex)).map_batches(_stage_column(stage), DECISIONS)
    dec = dec.cache()
    try:
        reasons, n_kept = check_stage_decisions(dec, inp, stage)
        cache.begin(key)
        dec_table = cache.table(key, "decisions")
        write_decisions_table(ds, dec_table, dec)
        if n_kept == inp.distinct:  # removed nothing: the output is the input table
            out_uids = inp
        else:
            out_uids = write_uid_table(ds, cache.table(key, "uids"), in_frame.semi_join(dec.filter_true("kept")),
                                       distinct=n_kept)
    finally:
        dec.release()
        shutil.rmtree(ds.table_dir(f"_tmp/{ctx.run_name}"), ignore_errors=True)
    return dec_table, out_uids, out.stats, reasons, n_kept


def _run_legacy_stage(ctx: StageContext, kind, params, inp: UidTable, cache: StageCache, key: str,
                      stage: str) -> tuple[str, UidTable, dict, dict[str, int], int]:
    """A stage not converted yet: its input uids come to the driver (at most
    ``LEGACY_MAX_ROWS``, counted in ``executor.driver_counter``), its decisions go back to
    the workers through a frame."""
    ex = ctx.executor()
    try:
        uids = inp.frame(ctx.dataset, ex).collect_small(LEGACY_MAX_ROWS).column("uid").combine_chunks()
    except TooManyRows:
        raise RecipeError(f"stage {stage!r} (kind {kind.kind}) still takes its input on the driver and the "
                          f"input has more than {LEGACY_MAX_ROWS:,} rows; run its command as a job instead") from None
    uids = uids.cast(pa.string())
    result = kind.run(ctx, uids, params)
    if not isinstance(result, StageResult):
        result = StageResult(decisions=result)
    decisions = _check_decisions(result.decisions, uids, stage)
    ex.driver_counter.note("legacy_stage_decisions", decisions.num_rows)
    cache.begin(key)
    dec_table = cache.table(key, "decisions")
    write_decisions_table(ctx.dataset, dec_table, ex.frame_from_table(decisions.cast(DECISIONS)))
    reasons = reason_counts(decisions)
    n_kept = int(reasons.get(KEPT, 0))
    if result.uids is None and n_kept == inp.distinct:
        out_uids = inp
    elif result.uids is None:
        kept = ex.frame_from_table(decisions.select(["uid", "kept"])).filter_true("kept")
        out_uids = write_uid_table(ctx.dataset, cache.table(key, "uids"), inp.frame(ctx.dataset, ex).semi_join(kept),
                                   distinct=n_kept)
    else:  # an upsampling stage names its output uids (repeats) itself
        out_uids = write_uid_table(ctx.dataset, cache.table(key, "uids"),
                                   ex.frame_from_table(pa.table({"uid": result.uids.cast(pa.string())})))
    return dec_table, out_uids, result.stats, reasons, n_kept


def write_decisions_table(dataset: Dataset, table: str, decisions) -> dict:
    """A decisions frame as ``table``, sorted by (uid, stage) in exact-size shards (workers)."""
    return decisions.write_sorted(dataset, table, "decisions", ["uid", "stage"], DECISIONS_SHARD_ROWS)


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
               conf: list[str] | None = None, use_cache: bool = True, quiet: bool = False,
               executor=None) -> dict:
    """Run every enabled stage; returns the lineage (also saved with the subset and in _runs/).

    The driver holds uid-table references, per-stage reason counts, one digest row per
    subset hash and the shard records of the tables the workers write; ``executor`` (default:
    opened from ``engine``) is the one every stage and frame uses."""
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
    ctx_shared: dict[str, Any] = {"executor": executor}

    def context(stage_name: str) -> StageContext:
        return StageContext(dataset=dataset, embedding_model=recipe.embedding_model, stage_name=stage_name,
                            recipe_name=recipe.name, output=loaded.output, engine=engine, master=master,
                            conf=list(conf or []), _executor=ctx_shared["executor"])

    ctx0 = context("input")
    ex = ctx_shared["executor"] = ctx0.executor()
    with manifest.stage("input"):
        # the input of this run, kept beside the cache entries that may refer to it
        inp = initial_table(dataset, recipe.input, ex, f"{CACHE_DIR}/input-{recipe.name}/uids")
        in_hash0, _ = subset_digest_frame(inp.frame(dataset, ex))
    lineage: dict[str, Any] = {
        "recipe": recipe.name, "recipe_file": str(loaded.path) if loaded.path else None,
        "dataset": str(dataset.root), "input": recipe.input, "embedding_model": recipe.embedding_model,
        "input_count": inp.rows, "input_hash": in_hash0, "stages": [],
    }
    cur, cur_hash = inp, in_hash0
    say(f"recipe {recipe.name}: {inp.rows:,} samples from {recipe.input}")
    stage_decisions: list[tuple[str, str]] = []  # (decisions table, stage name)
    this_run: dict[str, Any] = {}  # key -> entry made earlier in this run (an identical stage again)
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
        hit = (this_run.get(key) or cache.get(key)) if cur.rows else None
        if not cur.rows:  # nothing left to decide: the stage is not run
            dec_table, out_uids, stats, counts, cached, out_hash = None, cur, {}, {}, False, in_hash
        elif hit is not None:
            dec_table, out_uids, meta = hit.decisions, hit.uids, hit.meta
            stats, counts = meta.get("stats", {}), meta.get("reasons", {})
            out_hash = meta["output_hash"]
            cached = True
        else:
            ctx = context(spec.name)
            run = _run_table_stage if kind.frames else _run_legacy_stage
            try:
                dec_table, out_uids, stats, counts, n_kept = run(ctx, kind, params, cur, cache, key, spec.name)
            except RecipeError:
                raise
            except CurateError as e:  # say which recipe line the failing stage is on
                raise CurateError(f"{loaded.where(('stages', loaded.stages.index(spec)))}: stage "
                                  f"{spec.name!r}: {e}") from e
            # a pass-through that removed nothing has its input's hash
            out_hash = in_hash if out_uids is cur else subset_digest_frame(out_uids.frame(dataset, ex))[0]
            cached = False
            this_run[key] = cache.commit(key, dec_table, out_uids, {"stage": spec.name, "kind": spec.kind, "params": spec.params,
                                                    "input_hash": in_hash, "output_hash": out_hash,
                                                    "code": code, "reads": reads, "reasons": counts,
                                                    "stats": stats})
        seconds = round(time.perf_counter() - t0, 4)
        manifest.data["timings_s"][spec.name] = seconds
        entry = {"name": spec.name, "kind": spec.kind, "family": kind.family, "line": spec.line,
                 "params": spec.params, "cache_key": key, "cached": cached, "code_hash": code,
                 "input_count": cur.rows, "input_hash": in_hash, "output_count": out_uids.rows,
                 "output_hash": out_hash, "reasons": counts, "seconds": seconds, "stats": stats}
        lineage["stages"].append(entry)
        removed = cur.rows - out_uids.rows
        say(f"  {spec.name:<24} {cur.rows:>10,} -> {out_uids.rows:>10,}  (-{removed:,})"
            f"{'  (cached)' if cached else ''}  {seconds:.2f}s")
        for w in (stats or {}).get("warnings", []):  # embedding-space guards
            say(f"    warning: {w}")
        if dec_table is not None:
            stage_decisions.append((dec_table, spec.name))
        cur, cur_hash = out_uids, out_hash

    lineage["embedding_model"] = recipe.embedding_model  # resolved, when a stage trained the scorer
    lineage["output"] = loaded.output
    lineage["output_count"] = cur.rows
    lineage["output_distinct"] = cur.distinct
    lineage["output_hash"] = cur_hash
    with manifest.stage("write"):
        if any(s.get("enabled", True) for s in lineage["stages"]):  # every stage's rows, sorted by the workers
            # each entry's rows under this run's stage name (a cache hit may have been made under another)
            frames = [ex.frame_read([str(p) for p in dataset.shards(t)], DECISIONS).map_batches(_stage_column(name),
                                                                                                 DECISIONS)
                      for t, name in stage_decisions if dataset.has_table(t)]
            allf = frames[0] if frames else ex.frame_from_table(DECISIONS.empty_table())
            for f in frames[1:]:
                allf = allf.union(f)
            write_decisions_frame(dataset, recipe.name, allf)
            lineage["decisions"] = f"decisions/{recipe.name}"
        write_subset_frame(dataset, loaded.output, cur.frame(dataset, ex),
                           manifest={"lineage": lineage, "recipe": recipe.name, "recipe_text": loaded.text})
    lineage["subset"] = f"subsets/{loaded.output}"
    manifest["lineage"] = lineage
    per_reason: dict[str, int] = {}
    for s in lineage["stages"]:
        for r, n in (s.get("reasons") or {}).items():
            per_reason[r] = per_reason.get(r, 0) + n
    # the selection count keys (input, kept, removed, reasons = rows of decisions/<recipe> per
    # reason), then each stage's reasons under its name
    manifest["counts"] = {"input": lineage["input_count"], "output": cur.rows, "kept": cur.rows,
                          "removed": lineage["input_count"] - cur.rows, "reasons": dict(sorted(per_reason.items())),
                          **{s["name"]: s.get("reasons", {}) for s in lineage["stages"]}}
    manifest["outputs"] = {"subset": lineage["subset"], "decisions": lineage.get("decisions")}
    lineage["manifest"] = str(manifest.write(dataset))
    say(f"subset {loaded.output}: {cur.rows:,} samples -> {dataset.root / lineage['subset']}")
    return lineage
