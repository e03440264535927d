"""The filter job: text stats, pool-wide thresholds and clusters, one decision per sample and filter.

Steps (each timed in the run manifest):
1. ``text_stats``: per samples shard (a task each), fastText language + word/char/token
   counts, written row-aligned as ``text_stats`` shard i; current shards are skipped.
2. ``prepare``: what needs the whole pool: a fraction's exact threshold (radix select over
   the embeddings shards), image_based k-means over caption-filtered pool embeddings (all of
   them up to ``max_kmeans_points``, else a uid-hash sample of that many drawn by the workers)
   and the clusters of the target images, text_based target synsets.
3. ``decide``: samples + text_stats (per shard) left-joined with the embeddings columns the
   filters need, every filter decides every row; ``decisions/<run>`` sorted by (uid, stage).
4. ``subset``: uids every filter kept -> ``subsets/<run>`` (Parquet + DataComp .npy);
   counts per filter and reason -> ``_runs/filter-<run>.json``. Every filter must have decided
   every sample exactly once, or the job fails.
"""

from __future__ import annotations

import functools

import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.errors import DatasetError
from curate.filters import stages, text_stats
from curate.filters.checks import check_filters, check_samples, resolve_model  # also re-exported
from curate.filters.image_based import CENTROIDS_FILE, prepare_image_based
from curate.filters.readers import (DOWNLOAD_SCHEMA, ColumnPlan, base_schema, base_tasks, decide_all, emb_frame,
                                    fraction_threshold, read_base, read_downloads)
from curate.filters.stages import FilterSpec, FilterSpecError
from curate.manifest import RunManifest, file_fingerprint
from curate.names import check_name
from curate.selection import write_kept_subset
from curate.tables import Dataset, load_schema
from curate.tables.replace import replace_table


def run_filters(dataset: Dataset, specs: list[FilterSpec], executor, name: str | None = None,
                lid_model: str | None = None, recompute_stats: bool = False,
                rows_per_shard: int = 2_000_000) -> dict:
    """Run ``specs`` over the pool; returns the run manifest (also written to ``_runs``)."""
    if not specs:
        raise FilterSpecError("give at least one --filter")
    seen = [s.name for s in specs]
    dup = sorted({n for n in seen if seen.count(n) > 1})
    if dup:
        raise FilterSpecError(f"filter {dup[0]} given twice; run it again under another --name instead")
    name = name or "+".join(seen)
    check_name(name, "filter run name")
    check_filters(dataset, specs, lid_model)  # again for a library or recipe caller: before any pass
    shards = check_samples(dataset)
    m = RunManifest("filter", {"name": name, "filters": [str(s) for s in specs],
                               "specs": [{"name": s.name, **s.params} for s in specs],
                               "engine": executor.name, "rows_per_shard": rows_per_shard})
    m["inputs"] = [{"table": "samples", "rows": dataset.count("samples"), "shards": len(shards)}]

    with m.stage("text_stats"):
        ts, with_stats = _text_stats(dataset, specs, executor, lid_model, recompute_stats, m)

    # decisions are written and checked here first, then replace decisions/<name>: a run that
    # fails its checks leaves an earlier run's decisions (and its subset) as they were
    staged = f"_tmp/filter-{name}/decisions"
    storage.remove_tree(dataset.table_dir(staged))  # a killed run's
    plan, ctxs, resolved = ColumnPlan(), [], {}
    with m.stage("prepare"):
        for spec in specs:
            ctx, info = _prepare(dataset, spec, executor, plan, shards, name, staged)
            ctxs.append(ctx)
            resolved[spec.name] = info
    for table in plan.models:
        m["inputs"].append({"table": table, "rows": dataset.count(table), "shards": len(dataset.shards(table))})
    m["resolved"] = resolved

    with m.stage("decide"):
        written = _decide(dataset, specs, ctxs, executor, plan, shards, with_stats, staged, rows_per_shard)
    m["outputs"] = {"decisions": f"decisions/{name}", "decision_rows": written["rows"]}

    with m.stage("subset"):
        try:
            counts, n_kept = _summarize(dataset, staged, [s.name for s in specs], ts["rows"], executor)
        except DatasetError as e:  # a broken table is not put where the next job would read it
            storage.remove_tree(dataset.path(f"_tmp/filter-{name}"))
            tables = ", ".join(["samples", *plan.models])
            kept = (f"; decisions/{name} of an earlier run is unchanged" if dataset.has_table(f"decisions/{name}")
                    else "")
            raise DatasetError(f"{e} (tables read: {tables}){kept}") from None
        replace_table(dataset, dataset.table_dir(staged), f"decisions/{name}", also=(CENTROIDS_FILE,))
        storage.remove_tree(dataset.path(f"_tmp/filter-{name}"))
        if "image_based" in resolved:  # guards: degenerate embeddings, most of the pool removed
            from curate.embedding_space import guards

            g = resolved["image_based"]["guards"]
            removed = ts["rows"] - counts["image_based"].get("kept", 0)
            g["warnings"] += guards.removal_warning("image_based", ts["rows"], removed)
            m["guards"] = g
        said = _empty_warnings(counts, ts["rows"], n_kept)
        if said:
            m["guards"] = m.data.get("guards") or {"distributions": {}, "warnings": []}
            m["guards"]["warnings"] += said
        # input and removal reasons as every selection's subset records them (a sample removed
        # by several filters counts under each of their reasons)
        write_kept_subset(dataset, name, name, n_kept, manifest={
            "stage": "filter", "filters": [str(s) for s in specs], "decisions": f"decisions/{name}",
            "run": f"_runs/filter-{name}.json", "resolved": resolved, "input_count": ts["rows"],
            "reasons": _rows_per_reason(counts)}, stages=len(specs), executor=executor)
    m["outputs"]["subset"] = f"subsets/{name}"
    # the selection count keys (input, kept, removed, reasons = rows of decisions/<run> per reason)
    m["counts"] = {"input": ts["rows"], "reasons": _rows_per_reason(counts),
                   "samples": ts["rows"], "kept": n_kept, "removed": ts["rows"] - n_kept,
                   "filters": counts, "text_stats": {k: v for k, v in ts.items() if k != "lid_model"}}
    m.write(dataset, f"filter-{name}")
    return m.data


def _text_stats(dataset: Dataset, specs: list[FilterSpec], executor, lid_model: str | None, recompute: bool,
                m: RunManifest) -> tuple[dict, bool]:
    """The text_stats table when a filter reads caption statistics; its counts, and whether."""
    # Score-only runs (clip_score, laion2b with gcld3) read no caption statistics: no fastText pass.
    with_stats = any(s.name in ("basic", "text_based", "image_based")
                     or (s.name == "laion2b" and s.params["lang_id"] == "fasttext") for s in specs)
    if not with_stats:
        return {"rows": m["inputs"][0]["rows"], "shards": 0, "skipped_shards": 0, "not_needed": True}, False
    ts = text_stats.compute_text_stats(dataset, executor, lid_model, recompute=recompute)
    m["inputs"].append({"lid_model": file_fingerprint(ts["lid_model"])})
    return ts, True


def _decide(dataset: Dataset, specs: list[FilterSpec], ctxs: list[dict], executor, plan: ColumnPlan, shards,
            with_stats: bool, out_table: str, rows_per_shard: int) -> dict:
    """samples + text_stats (+ download sizes) left-joined with the embeddings columns the
    filters read (engine frames); every filter decides every row; ``out_table`` (the run's
    staged decisions) sorted by (uid, stage), written by the workers."""
    with_text = any(s.name == "text_based" or (s.name == "laion2b" and s.params["lang_id"] == "gcld3")
                    for s in specs)
    base = executor.frame_from_tasks(base_tasks(dataset, shards, with_text, with_stats), read_base,
                                     base_schema(with_text, with_stats))
    if any(s.name == "basic" for s in specs) and dataset.has_table("downloads"):
        tasks = [{"path": str(p)} for p in dataset.shards("downloads")]
        base = base.join(executor.frame_from_tasks(tasks, read_downloads, DOWNLOAD_SCHEMA), "uid", how="left")
    for j, table in enumerate(plan.models):
        base = base.join(emb_frame(dataset, executor, table, j, plan.with_embedding[j]), "uid", how="left")
    fn = functools.partial(decide_all, specs=specs, ctxs=ctxs)
    out = base.map_batches(fn, load_schema("decisions").arrow())
    return out.write_sorted(dataset, out_table, "decisions", ["uid", "stage"], rows_per_shard)


def _prepare(dataset, spec: FilterSpec, executor, plan: ColumnPlan, shards, run_name: str,
             staged: str) -> tuple[dict, dict]:
    p = spec.params
    if spec.name == "basic":
        return {}, {"size_source": "samples, then downloads" if dataset.has_table("downloads") else "samples"}
    if spec.name in ("clip_score", "laion2b"):
        table = resolve_model(dataset, p["model"], spec)
        j = plan.index(table, embedding=False)
        if spec.name == "laion2b":
            info = {"threshold": p["threshold"]}
        elif p["fraction"] is not None:
            info = fraction_threshold(dataset, table, p["fraction"], executor)
        else:
            info = {"threshold": p["threshold"]}
        info["model"] = table
        return {"score_column": f"s{j}", "threshold": info["threshold"]}, info
    if spec.name == "text_based":
        synsets = storage.local_copy(p["synsets"])  # a list named by URI: copied (checked by check_filters)
        offsets = stages.read_synset_offsets(synsets, p["wordnet_dir"])
        from curate.wordnet import check_wordnet

        root = check_wordnet(p["wordnet_dir"])
        return ({"target_offsets": offsets}, {"target_synsets": len(offsets), "wordnet": str(root),
                                              "synsets_file": {**file_fingerprint(synsets), "path": p["synsets"]}})
    if spec.name == "image_based":
        return prepare_image_based(dataset, spec, executor, plan, shards, run_name, staged)
    raise FilterSpecError(f"unknown filter {spec.name}")


def _empty_warnings(counts: dict[str, dict[str, int]], n_samples: int, n_kept: int) -> list[str]:
    """What a run that keeps nothing says (DataComp's filters remove most of a pool by design,
    so only an empty result, or sizes missing for most samples, is worth a line)."""
    out = []
    basic = counts.get("basic", {})
    missing = basic.get("missing_size", 0)
    # basic asks for a size only of the samples its caption rules kept: those are the ones counted
    caption_rules = ("too_few_words", "too_few_chars")
    reached = sum(n for r, n in basic.items() if not (r.startswith("not_") or r in caption_rules))
    if reached and missing > reached / 2:
        out.append(f"basic: {missing:,} of the {reached:,} samples its caption rules kept have no image size "
                   "(missing_size): sizes come from the input's width/height columns, else from `curate "
                   "download`; run it first")
    for stage, reasons in counts.items():
        if n_samples and not reasons.get("kept"):
            top = ", ".join(f"{r} {n:,}" for r, n in sorted(reasons.items(), key=lambda kv: -kv[1])[:3])
            out.append(f"{stage} kept none of the {n_samples:,} samples ({top}): check its parameters")
    if n_samples and not n_kept and not out:
        out.append(f"no sample was kept by every filter (of {n_samples:,}): the subset is empty")
    return out


def _rows_per_reason(per_stage: dict[str, dict[str, int]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for reasons in per_stage.values():
        for r, n in reasons.items():
            out[r] = out.get(r, 0) + n
    return dict(sorted(out.items()))


_UID_KEPT = pa.schema([("uid", pa.string()), ("kept_n", pa.int64())])
_PER_UID = pa.schema([("n", pa.int64()), ("all_kept", pa.bool_())])


def _uid_kept(batch: pa.RecordBatch) -> pa.Table:
    return pa.table([batch.column("uid"), pc.cast(pc.fill_null(batch.column("kept"), False), pa.int64())],
                    schema=_UID_KEPT)


def _summarize(dataset: Dataset, table: str, stage_names: list[str], n_samples: int, executor) -> tuple[dict, int]:
    """Counts per filter and reason, and how many uids every filter kept, counted by the engine
    over the written decisions. Checks one decision per (uid, filter)."""
    from curate.selection import DECISIONS, MAX_REASONS

    dec = executor.frame_read([str(p) for p in dataset.shards(table)], DECISIONS)
    g = dec.aggregate(["stage", "reason"], {"n": ("uid", "count")}).collect_small(MAX_REASONS)
    counts: dict[str, dict[str, int]] = {s: {} for s in stage_names}
    for stage, reason, n in zip(g.column("stage").to_pylist(), g.column("reason").to_pylist(), g.column("n").to_pylist()):
        counts[stage][reason] = n
    for s in stage_names:
        total = sum(counts[s].values())
        if total != n_samples:
            raise DatasetError(f"filter {s}: {total} decisions for {n_samples} samples; duplicate uids in "
                               "samples or in an embeddings table?")
        counts[s] = dict(sorted(counts[s].items()))
    k = len(stage_names)

    def per_uid(batch: pa.RecordBatch) -> pa.Table:
        n = batch.column("n")
        return pa.table([n, pc.and_(pc.equal(n, k), pc.equal(batch.column("k"), k))], schema=_PER_UID)

    hist = (dec.map_batches(_uid_kept, _UID_KEPT).aggregate(["uid"], {"n": ("uid", "count"), "k": ("kept_n", "sum")})
            .map_batches(per_uid, _PER_UID).aggregate(["n", "all_kept"], {"uids": ("n", "count")})
            .collect_small(MAX_REASONS))
    uids = sum(hist.column("uids").to_pylist())
    if set(hist.column("n").to_pylist()) - {k} or uids != n_samples:
        raise DatasetError(f"{table}: not exactly one decision per sample and filter "
                           f"({uids} uids for {n_samples} samples); duplicate uids in samples?")
    kept = sum(u for u, a in zip(hist.column("uids").to_pylist(), hist.column("all_kept").to_pylist()) if a)
    return counts, kept
