"""The ingest job: inputs -> samples, rejects, duplicates tables + a run manifest, on an executor.

Plan (driver): expand inputs into tasks (a file, or a slice of row groups of a big Parquet
file). Stage (executors, Python): each task reads its slice, runs ``prepare_batch`` and
writes its samples sorted by uid (in runs) and its rejects, committed atomically so a rerun
skips it; it also returns a sample of its keys. Dedup (the executor's exact dedup over keys
only: on Spark in the JVM, in key ranges cut from those samples, one partition a range;
in-process, one sort in memory): exact duplicates of (url, text) are removed keeping the
earliest input row (input order, then row), then repeated input uids likewise; the kept keys
come out in uid order, one file per range. Write (executors, Python): samples shard i (exactly
``rows_per_shard`` rows) is gathered from the staged runs for its uid range (or, for pools
where that would reread rows many times, cut from one shuffle of the full rows);
rejects shards are slices of the staged reject files in (source, row) order. Every shard is
committed atomically. Same inputs and parameters give byte-identical shards; a rerun after
a kill skips committed shards. The job asks its executor for every data operation and
never checks which one it got: ``LocalExecutor`` and ``SparkExecutor`` write the same bytes.

Inputs are scanned first (``curate.readers.scan_inputs``): every file found but not read is
a counted outcome in the manifest, and the output folder is never read. A run with a new
plan over a completed one writes its tables in its staging folder and swaps them in only
when all are complete, so a failing rerun never destroys committed tables.

The output may be a URI (``s3://``, ``gs://``, ...): the staged files, the dedup scratch and the
tables are written there by the tasks themselves (``curate.storage``), so a cluster's workers
need no shared folder; inputs named by URI are read from a local copy on each machine.
"""

from __future__ import annotations

from collections import Counter

from curate import storage
from curate.errors import DatasetError
from curate.ingest.dedup import (DUP_SCHEMA, KEY_SCHEMA, dedup_pass, duplicate_counts, read_staged_rows,
                                 report_pair_duplicates, with_source)
from curate.ingest.output import (INGEST_TABLES, PLAN_FILE, STAGING_DIR, SWAP_FILE,  # noqa: F401 - re-exported
                                  finish_pending_swap, prepare_output, remove_if_empty, remove_other_staging,
                                  remove_stale_temp_files, staging_folder, staging_name)
from curate.ingest.plan import (INPUT_BYTES_PER_ROW, IngestConfig, estimate_input_rows,  # noqa: F401 - re-exported
                                input_version, plan_tasks, report_skipped)
from curate.ingest.shards import gather_samples_shard, plan_segments, write_segments_shard
from curate.ingest.staging import stage_task
from curate.manifest import RunManifest, stable_hash
from curate.readers import InputScan
from curate.tables import Dataset, load_schema

BROADCAST_KEYS_MAX_ROWS = 4_000_000  # kept keys are ~24 bytes a row: up to ~100 MB broadcast
STAGED_RUN_ROWS = 262_144  # a stage task sorts its samples by uid in runs of this many rows
STAGED_ROW_GROUP = 16_384  # ...written in row groups of this many: the unit a uid-range read skips by
GATHER_SLACK_ROWS = 1_000_000
KEY_SAMPLE_EVERY = 1024  # staged rows per key sampled for the dedup ranges (at least)
# keys sampled for the dedup ranges in all, at most (about): the ranges are the engine's shuffle
# partitions, a setting, not a function of the pool, so past ~268M rows a key every 1,024 rows
# only grows the driver's sample (12.8B rows: 12.5M keys x 2, ~2.5 GB); 262,144 keys still give
# ~100 a range at 2,600 ranges
KEY_SAMPLE_MAX = 262_144


def key_sample_every(tasks: list[dict], fingerprints: list[dict]) -> int:
    """Staged rows a sampled key for this plan: ``KEY_SAMPLE_EVERY``, or more when the inputs'
    rows (estimated without reading: Parquet slices' footer rows, an image folder's tasks at
    their size, any other file's bytes / ``INPUT_BYTES_PER_ROW``) would pass ``KEY_SAMPLE_MAX``."""
    from curate.ingest.plan import IMAGE_TASK_ROWS

    rows, sized = 0, set()
    for t in tasks:
        if t.get("rows_planned") is not None:
            rows += t["rows_planned"]
            sized.add(t["file_index"])
        elif t["format"] == "imagefolder":
            rows += IMAGE_TASK_ROWS
            sized.add(t["file_index"])
    rows += sum(-(-f["bytes"] // INPUT_BYTES_PER_ROW) for f in fingerprints if f["file_index"] not in sized)
    return max(KEY_SAMPLE_EVERY, -(-rows // KEY_SAMPLE_MAX))


def _gather_reads_little(runs: int, shards: int, staged_rows: int, kept: int) -> bool:
    """Whether samples shards can be gathered from the staged runs without reading much more
    than they hold. A shard reads at least a row group of every run that overlaps its uid
    range, so a pool of a billion rows in thousands of tasks would read each row many times
    over: there the full rows go through one Spark shuffle instead. A small surplus (up to
    ``GATHER_SLACK_ROWS``) is always fine."""
    read = min(shards * staged_rows, staged_rows + runs * shards * STAGED_ROW_GROUP)
    return read <= 2 * kept + GATHER_SLACK_ROWS


def _write_shards_task(task: dict) -> dict:
    return gather_samples_shard(task) if task["kind"] == "gather" else write_segments_shard(task)


def _plan_shard_tasks(dataset: Dataset, table: str, parts: list[str], counts: list[int], rows_per_shard: int,
                      skip_existing: bool, **extra) -> tuple[list[dict], dict]:
    """Tasks writing ``table`` from ordered parts (files of ``counts`` rows); committed shards
    are skipped when resuming. Also returns the table's output entry for the manifest."""
    segments = plan_segments(counts, rows_per_shard) or [[]]
    committed = {storage.basename(p) for p in dataset.shards(table)} if skip_existing else set()
    tasks, skipped = [], 0
    for i, segs in enumerate(segments):
        out = dataset.shard_path(table, i)
        if storage.basename(out) in committed:
            skipped += 1
            continue
        tasks.append({"table": table, "shard": i, "out": str(out), "parts": parts, "segments": segs, **extra})
    dataset.remove_shards_beyond(table, len(segments))  # shards past the end of an earlier, larger run
    return tasks, {"rows": sum(counts), "shards": len(segments), "skipped_shards": skipped}


def run_ingest(executor, cfg: IngestConfig) -> dict:
    """Run ingest on ``executor`` (``LocalExecutor`` or ``SparkExecutor``); returns the
    manifest dict (also written to the dataset)."""
    ex = executor
    dataset = Dataset(cfg.output)
    manifest = RunManifest("ingest", cfg.params())
    tasks, fingerprints, scan, npz_plan = _plan(cfg, manifest)  # before anything in the output is touched
    plan_key = stable_hash({"params": cfg.params(), "inputs": [(f["path"], input_version(f)) for f in fingerprints],
                            "skipped": [(f.path, f.outcome) for f in scan.skipped], "npz": npz_plan["npz"],
                            "code": manifest["code"]["curate"]})
    finish_pending_swap(dataset)  # a run killed while putting its tables in place
    remove_stale_temp_files(dataset)
    target, resume = prepare_output(dataset, plan_key)
    manifest["resumed"] = resume
    manifest["plan_key"] = plan_key
    ui = ex.ui_url()
    if ui:
        manifest["spark_ui"] = ui
    staging = staging_folder(dataset, plan_key)
    sources = _stage_paths(tasks, fingerprints, staging)

    with manifest.stage("read_normalise"):
        results = ex.map_tasks(tasks, stage_task, "read + normalise")
    outcome: dict[str, int] = {}
    for r in results:
        for k, v in r["counts"].items():
            outcome[k] = outcome.get(k, 0) + v
    rows_in = sum(r["rows"] for r in results)
    input_uids = sum(r["input_uids"] for r in results)
    faithful_uids = cfg.rules.faithful and input_uids > 0
    with manifest.stage("dedup"):
        keys, passes = _dedup(ex, staging, results, input_uids, faithful_uids)
    with manifest.stage("write_samples_rejects"):
        outputs = _write_samples_rejects(ex, cfg, target, tasks, results, passes[-1], staging, sources, resume,
                                         manifest)
    with manifest.stage("write_duplicates"):
        outputs["duplicates"] = _write_duplicates(ex, cfg, target, passes, sources, resume)
    if faithful_uids:
        with manifest.stage("report_url_text_duplicates"):
            outputs["url_text_duplicates"] = report_pair_duplicates(
                ex, target, keys, passes[-1], [k for r in results for k in r["pair_key_sample"]], sources,
                storage.join(staging, "pair-report"), cfg.rows_per_shard, resume)
    if npz_plan["models"]:
        from curate.ingest.datacomp import run_npz_import

        with manifest.stage("import_npz"):
            outputs.update(run_npz_import(target, npz_plan, ex, sources,
                                          outputs["samples"]["rows"], resume, runs_dataset=dataset))
    manifest["counts"] = _counts(ex, outcome, rows_in, outputs, passes, fingerprints, tasks, results, scan)
    manifest["outputs"] = outputs
    manifest["tasks"] = len(tasks)
    if target.root != dataset.root:  # put the new tables in place only now that all are complete
        manifest["replaced"] = _replaced_note(dataset, outputs, target, ex)
        dataset.write_json(f"{staging_name(plan_key)}/{SWAP_FILE}",
                           {"plan_key": plan_key, "manifest": manifest.data,
                            "tables": [*INGEST_TABLES, *(t for t in outputs if t.startswith("embeddings/"))]})
        finish_pending_swap(dataset)
    manifest.write(dataset, "ingest")
    storage.remove_tree(staging)
    # other plans' staging too: removed when this run started, but a task of a run that failed
    # just before may have been writing for a moment after its job's error (a killed Spark
    # task's Python worker stops up to spark.python.task.killTimeout later); never resumed
    remove_other_staging(dataset)
    remove_if_empty(dataset.path(STAGING_DIR))
    return manifest.data


def _replaced_note(dataset: Dataset, outputs: dict, target: Dataset, ex) -> dict:
    """This run replaces a completed ingest's samples (other inputs or options): the tables made
    from the earlier samples, which keep rows of any sample no longer in the pool, and how many
    earlier samples are gone (one engine count; none when the inputs grew, as advised)."""
    import pyarrow as pa

    made_here = {*INGEST_TABLES, *outputs}
    derived = [t for t in dataset.tables() if t not in made_here and not t.startswith(("_", STAGING_DIR))]
    gone = None
    if dataset.has_table("samples"):
        uid = pa.schema([("uid", pa.string())])
        earlier = ex.frame_read([str(p) for p in dataset.shards("samples")], uid)
        gone = earlier.anti_join(ex.frame_read([str(p) for p in target.shards("samples")], uid)).count()
    return {"earlier_ingest": True, "derived_tables": derived, "earlier_samples_gone": gone}


def _plan(cfg: IngestConfig, manifest: RunManifest) -> tuple[list[dict], list[dict], InputScan, dict]:
    """Tasks, input fingerprints, the scan and the DataComp .npz plan, recorded in the manifest."""
    with manifest.stage("plan"):
        tasks, fingerprints, scan = plan_tasks(cfg)
    report_skipped(scan)
    manifest["inputs"] = fingerprints
    manifest["skipped_files"] = [f.to_dict() for f in scan.skipped]
    if scan.excluded:
        manifest["excluded_folders"] = scan.excluded
    npz_plan = {"models": {}, "npz": []}
    if cfg.format == "datacomp":  # the .npz beside each shard: checked from headers before any work
        from curate.ingest.datacomp import plan_npz_import

        with manifest.stage("plan_npz"):
            local = {t["file_index"]: t["path"] for t in tasks}  # the copy read of an input named by URI
            npz_plan = plan_npz_import([{"path": local.get(f["file_index"], f["path"]), "source": f["path"],
                                         "file_index": f["file_index"]} for f in fingerprints])
        manifest["npz_inputs"] = npz_plan["npz"]
    return tasks, fingerprints, scan, npz_plan


def _stage_paths(tasks: list[dict], fingerprints: list[dict], staging) -> list[str]:
    """Each task's staged files (paths or URIs) and settings, in place; returns the source
    name per file index."""
    every = key_sample_every(tasks, fingerprints)
    for i, t in enumerate(tasks):
        t["staged_path"] = str(storage.join(staging, "samples", f"task-{i:06d}.parquet"))
        t["rejects_path"] = str(storage.join(staging, "rejects", f"task-{i:06d}.parquet"))
        t.update(run_rows=STAGED_RUN_ROWS, row_group=STAGED_ROW_GROUP, sample_every=every)
    sources = [f["path"] for f in fingerprints]
    for t in tasks:
        sources[t["file_index"]] = t["source"]
    return sources


def _dedup(ex, staging, results: list[dict], input_uids: int, faithful_uids: bool) -> tuple[object, list[dict]]:
    """The dedup passes over keys (the last one's kept keys are the samples), and the key frame."""
    # Keys only (hashes and positions): captions never cross a shuffle here.
    # Derived uids are the pair keys themselves: then the uid column need not travel.
    id_column = "uid" if input_uids else "pair_key"
    staged = read_staged_rows(ex, staging, ["pair_key", "uid", "file_index", "source_row"])
    keys = ex.select_columns(staged, list(dict.fromkeys(["pair_key", id_column, "row_id"])))
    staged_rows = sum(r["counts"].get("sample", 0) for r in results)
    # Faithful mode: a uid is a sample, so only a repeated input uid is merged (the
    # earliest row wins); repeated (url, text) pairs are reported apart, not removed.
    if faithful_uids:
        passes = [dedup_pass(ex, keys, "uid", "uid", "duplicate_uid",
                             [k for r in results for k in r["uid_sample"]], staged_rows,
                             storage.join(staging, "dedup-uids"))]
    else:
        # 1) same (url, text): keep the earliest input row (file order, then row).
        passes = [dedup_pass(ex, keys, "pair_key", id_column, "duplicate_url_text",
                             [k for r in results for k in r["pair_key_sample"]], staged_rows,
                             storage.join(staging, "dedup-pairs"))]
    if input_uids and not faithful_uids:
        # 2) same input uid with other url/text: again the earliest row wins. (Without
        # input uids, pass 1's kept keys are already unique uids, in uid order.)
        firsts = ex.read_parquet(passes[0]["kept_files"], KEY_SCHEMA)
        passes.append(dedup_pass(ex, firsts, "uid", "uid", "duplicate_uid",
                                 [k for r in results for k in r["uid_sample"]], passes[0]["kept"],
                                 storage.join(staging, "dedup-uids")))
    return keys, passes


def _write_samples_rejects(ex, cfg: IngestConfig, target: Dataset, tasks: list[dict], results: list[dict],
                           kept: dict, staging, sources: list[str], resume: bool,
                           manifest: RunManifest) -> dict:
    """The samples (gathered from the staged runs, or cut from one shuffle) and rejects tables;
    returns their output entries."""
    outputs = {}
    samples_schema = load_schema("samples").arrow()
    nshards = max(1, -(-kept["kept"] // cfg.rows_per_shard))
    runs = sum(r["runs"] for r in results)
    staged_rows = sum(r["counts"].get("sample", 0) for r in results)
    gather = _gather_reads_little(runs, nshards, staged_rows, kept["kept"])
    manifest["samples_write"] = "gather" if gather else "shuffle"
    shard_tasks = []
    if gather:
        staged_files = [t["staged_path"] for t in tasks]
        shard_tasks, outputs["samples"] = _plan_shard_tasks(
            target, "samples", kept["kept_files"], kept["kept_counts"], cfg.rows_per_shard, resume,
            kind="gather", staged=staged_files)
    # Rejects in (source file, row) order: the tasks' reject files in that order.
    by_source = sorted(range(len(tasks)), key=lambda i: (tasks[i]["source"], tasks[i].get("first_row", 0), i))
    reject_tasks, outputs["rejects"] = _plan_shard_tasks(
        target, "rejects", [tasks[i]["rejects_path"] for i in by_source],
        [results[i]["rows"] - results[i]["counts"].get("sample", 0) for i in by_source],
        cfg.rows_per_shard, resume, kind="segments")
    # An empty rejects table is written here; executors write the rest, small tasks first.
    small = [t for t in reject_tasks if not t["segments"]]
    for t in small:
        _write_shards_task(t)
    big = [t for t in reject_tasks if t["segments"]] + shard_tasks
    ex.map_tasks(big, _write_shards_task, "write shards")
    if not gather:
        ranked, total = ex.rank_rows(ex.read_parquet(kept["kept_files"], KEY_SCHEMA), ["uid"])
        try:
            rows = ex.join_frames(read_staged_rows(ex, staging), ex.select_columns(ranked, ["row_id", "_rank"]),
                                  "row_id", "inner", broadcast_right=total <= BROADCAST_KEYS_MAX_ROWS)
            outputs["samples"] = ex.write_ranked_table(rows, target, "samples", samples_schema, total,
                                                       cfg.rows_per_shard, skip_existing=resume,
                                                       lookups={"source_file": ("file_index", sources)})
        finally:
            ex.unpersist(ranked)
    return outputs


def _write_duplicates(ex, cfg: IngestConfig, target: Dataset, passes: list[dict], sources: list[str],
                      resume: bool) -> dict:
    """The duplicates table in (source file, row) order (an empty one without duplicates)."""
    dup_schema = load_schema("duplicates").arrow()
    if sum(p["duplicates"] for p in passes):
        dups = ex.read_parquet([p["dups_dir"] for p in passes if p["duplicates"]], DUP_SCHEMA)
        return ex.write_sorted_table(with_source(ex, dups, sources), target, "duplicates", dup_schema,
                                     ["source_file", "source_row"], cfg.rows_per_shard, skip_existing=resume)
    dup_tasks, output = _plan_shard_tasks(target, "duplicates", [], [], cfg.rows_per_shard, resume, kind="segments")
    for t in dup_tasks:
        _write_shards_task(t)
    return output


def _counts(ex, outcome: dict, rows_in: int, outputs: dict, passes: list[dict], fingerprints: list[dict],
            tasks: list[dict], results: list[dict], scan: InputScan) -> dict:
    """The manifest's counts; every input row is kept, a duplicate or a reject, in total and per file."""
    reject_reasons = {k: v for k, v in outcome.items() if k != "sample"}
    dup_reasons, dups_by_file = duplicate_counts(ex, passes, len(fingerprints))
    counts = {
        "input_rows": rows_in,
        "kept": outputs["samples"]["rows"],
        "duplicates": outputs["duplicates"]["rows"],
        "rejects": outputs["rejects"]["rows"],
        "reject_reasons": dict(sorted(reject_reasons.items())),
        "duplicate_reasons": dup_reasons,
        "files_read": len(fingerprints),
        "files_skipped": dict(sorted(Counter(f.outcome for f in scan.skipped).items())),
    }
    if "url_text_duplicates" in outputs:  # kept samples (not removed) that repeat a (url, text)
        counts["url_text_duplicates"] = outputs["url_text_duplicates"]["rows"]
    if counts["kept"] + counts["duplicates"] + counts["rejects"] != rows_in:
        raise DatasetError(f"ingest counts do not add up: {counts}")  # never silently lose rows
    _per_file_counts(fingerprints, tasks, results, dups_by_file)
    return counts


def _per_file_counts(fingerprints: list[dict], tasks: list[dict], results: list[dict], dups_by_file: dict) -> None:
    """Each input's outcome counts, in place: rows = kept + duplicates + rejects, per file."""
    for f in fingerprints:
        f.update(rows=0, kept=0, duplicates=dups_by_file.get(f["file_index"], 0), rejects=0, reject_reasons={})
    for t, r in zip(tasks, results):
        f = fingerprints[t["file_index"]]
        f["rows"] += r["rows"]
        for reason, n in r["counts"].items():
            if reason == "sample":
                f["kept"] += n
            else:
                f["rejects"] += n
                f["reject_reasons"][reason] = f["reject_reasons"].get(reason, 0) + n
    for f in fingerprints:
        f["kept"] -= f["duplicates"]
        f["reject_reasons"] = dict(sorted(f["reject_reasons"].items()))
        if f["kept"] + f["duplicates"] + f["rejects"] != f["rows"]:
            raise DatasetError(f"ingest counts do not add up for {f['path']}: {f}")
