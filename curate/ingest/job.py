"""The ingest job: inputs -> samples, rejects, duplicates tables + a run manifest, on Spark.

Plan (driver): expand inputs into tasks (a file, or a slice of row groups of a big Parquet
file). Stage (executors, Python): each task reads its slice, runs ``prepare_batch`` and
writes one staged Parquet file (committed atomically, so a rerun skips it). Dedup (JVM, no
Python): over the small key columns only, exact duplicates of (url, text) are removed
keeping the earliest input row (input order, then row), then repeated uids likewise; the
kept keys are ranked by uid. Write: the kept rows are joined back, cut into shards of
exactly ``rows_per_shard`` rows by rank and each committed atomically. Same inputs and
parameters give byte-identical shards; a rerun after a kill skips committed shards.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from curate.errors import DatasetError
from curate.ingest.stage import STAGED_SCHEMA, IngestRules, ingest_task_batches
from curate.manifest import RunManifest, file_fingerprint, read_manifest, stable_hash
from curate.readers import ReaderOptions, expand_inputs
from curate.readers.parquet import plan_parquet
from curate.tables import Dataset, load_schema

INGEST_TABLES = ("samples", "rejects", "duplicates")
PLAN_FILE = "_runs/ingest.plan.json"
STAGING_DIR = "_staging"  # hidden from table discovery
BROADCAST_KEYS_MAX_ROWS = 4_000_000  # kept keys are ~24 bytes a row: up to ~100 MB broadcast


@dataclass
class IngestConfig:
    inputs: list[str]
    output: str
    format: str | None = None
    options: ReaderOptions = field(default_factory=ReaderOptions)
    rules: IngestRules = field(default_factory=IngestRules)
    rows_per_shard: int = 500_000
    task_rows: int = 250_000  # Parquet files are split into tasks of about this many rows

    def params(self) -> dict:
        return {
            "inputs": self.inputs,
            "format": self.format,
            "options": self.options.to_dict(),
            "rules": self.rules.to_dict(),
            "rows_per_shard": self.rows_per_shard,
            "task_rows": self.task_rows,
        }


def plan_tasks(cfg: IngestConfig) -> tuple[list[dict], list[dict]]:
    """(tasks, input fingerprints). File order (as given, folders sorted) fixes dedup priority."""
    files = expand_inputs(cfg.inputs, cfg.format)
    if not files:
        raise DatasetError(f"no input files found in {cfg.inputs}")
    opts = cfg.options.to_dict()
    tasks, fingerprints = [], []
    for file_index, (path, fmt) in enumerate(files):
        fingerprints.append({**file_fingerprint(path), "format": fmt, "file_index": file_index})
        base = {"path": path, "source": path, "format": fmt, "file_index": file_index, "options": opts,
                "rules": cfg.rules.to_dict()}
        if fmt == "imagefolder" and cfg.options.captions:
            base["source"] = str(Path(cfg.options.captions).resolve())
        if fmt == "parquet":
            for piece in plan_parquet(path, cfg.task_rows):
                tasks.append({**base, "row_groups": piece["row_groups"], "first_row": piece["first_row"]})
        else:
            tasks.append(base)
    return tasks, fingerprints


def stage_task(task: dict) -> dict:
    """Read and normalise one task into its staged Parquet file; counts of samples and of
    rejects by reason. A file already committed by an earlier (killed) run is reused."""
    import pyarrow.parquet as pq

    from curate.tables.dataset import atomic_path

    path = Path(task["staged_path"])
    if path.exists():  # resume: only the columns the counts need
        return _staged_counts([pq.read_table(path, columns=["kind", "reason", "uid", "pair_key"])])
    batches = []
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(tmp, STAGED_SCHEMA, compression="lz4") as writer:
            for staged in ingest_task_batches(task):
                writer.write_batch(staged)
                batches.append(staged.select(["kind", "reason", "uid", "pair_key"]))
            if not batches:
                writer.write_table(STAGED_SCHEMA.empty_table())
    return _staged_counts(batches)


def _staged_counts(parts) -> dict:
    """Rows, outcome counts ("sample" or the reject reason) and rows carrying their own input
    uid (a uid other than the (url, text) hash), over staged batches or tables."""
    import pyarrow.compute as pc

    rows, counts, input_uids = 0, {}, 0
    for part in parts:
        rows += part.num_rows
        for item in pc.value_counts(part.column("reason")).to_pylist():
            key = "sample" if item["values"] is None else item["values"]
            counts[key] = counts.get(key, 0) + item["counts"]
        is_sample = pc.equal(part.column("kind"), "sample")
        own_uid = pc.and_(is_sample, pc.not_equal(part.column("uid"), part.column("pair_key")))
        input_uids += pc.sum(own_uid.cast("int64")).as_py() or 0
    return {"rows": rows, "counts": counts, "input_uids": input_uids}


def run_ingest(spark, cfg: IngestConfig) -> dict:
    """Run ingest on ``spark``; returns the manifest dict (also written to the dataset)."""
    from curate.engine import spark as eng

    dataset = Dataset(cfg.output)
    manifest = RunManifest("ingest", cfg.params())
    with manifest.stage("plan"):
        tasks, fingerprints = plan_tasks(cfg)
    manifest["inputs"] = fingerprints
    plan_key = stable_hash({"params": cfg.params(), "inputs": [(f["path"], f["sha256"]) for f in fingerprints],
                            "code": manifest["code"]["curate"]})
    resume = _prepare_output(dataset, plan_key)
    manifest["resumed"] = resume
    manifest["plan_key"] = plan_key
    ui = eng.ui_url(spark)
    if ui:
        manifest["spark_ui"] = ui
    staging = dataset.root / STAGING_DIR / f"ingest-{plan_key[:16]}"
    for i, t in enumerate(tasks):
        t["staged_path"] = str(staging / f"task-{i:06d}.parquet")
    sources = [f["path"] for f in fingerprints]
    for t in tasks:
        sources[t["file_index"]] = t["source"]

    with manifest.stage("read_normalise"):
        results = eng.SparkExecutor(spark).map_tasks(tasks, stage_task, "read + normalise")
    outcome: dict[str, int] = {}
    for r in results:
        for k, v in r["counts"].items():
            outcome[k] = outcome.get(k, 0) + v
    rows_in = sum(r["rows"] for r in results)
    input_uids = sum(r["input_uids"] for r in results)
    staged = eng.read_parquet(spark, [str(staging)], STAGED_SCHEMA)
    order = ["file_index", "source_row"]
    outputs = {}
    cached = []
    try:
        with manifest.stage("dedup"):
            # Keys only (fixed-width hashes and positions): captions never cross the shuffle.
            samples = eng.where(staged, "kind = 'sample'")
            keys = eng.select_columns(samples, ["pair_key", "uid", *order])
            # 1) same (url, text): keep the earliest input row (file order, then row). The
            # keys are range-sorted by pair key, so the window needs no shuffle of its own.
            pairs = eng.persist(eng.mark_first(eng.range_sorted(keys, ["pair_key"], order), ["pair_key"],
                                               order, "uid"))
            cached.append(pairs)
            firsts = eng.select_columns(eng.where(pairs, "_is_first"), ["uid", *order])
            if input_uids:
                # 2) same input uid with other url/text: again the earliest row wins.
                uids = eng.persist(eng.mark_first(firsts, ["uid"], order, "uid"))
                cached.append(uids)
                kept_keys, kept_rows = eng.rank_rows(eng.where(uids, "_is_first"), ["uid"])
                cached.append(kept_keys)
            else:
                # Derived uids are the pair keys themselves: the cached pairs are already in
                # uid order, and no two kept rows can share a uid.
                kept_keys, kept_rows = eng.rank_in_partition_order(firsts)

            def dups(frame, reason):
                out = eng.with_column_sql(eng.where(frame, "NOT _is_first"), "duplicate_of", "_first_id")
                out = eng.with_lookup(eng.with_column_sql(out, "reason", f"'{reason}'"), "source_file",
                                      "file_index", sources)
                return eng.select_columns(out, ["uid", "duplicate_of", "reason", "source_file", "source_row"])

            duplicates = dups(pairs, "duplicate_url_text")
            if input_uids:
                duplicates = eng.union(duplicates, dups(uids, "duplicate_uid"))
        with manifest.stage("write_samples"):
            # Small key sets are broadcast, so the full rows cross only one shuffle (to their shard).
            rows = eng.join_frames(samples, eng.select_columns(kept_keys, [*order, "_rank"]), order, "inner",
                                   broadcast_right=kept_rows <= BROADCAST_KEYS_MAX_ROWS)
            outputs["samples"] = eng.write_ranked_table(rows, dataset, "samples", load_schema("samples").arrow(),
                                                        kept_rows, cfg.rows_per_shard, skip_existing=resume,
                                                        lookups={"source_file": ("file_index", sources)})
        with manifest.stage("write_rejects"):
            rejects = eng.where(staged, "kind = 'reject'")
            outputs["rejects"] = eng.write_sorted_table(rejects, dataset, "rejects", load_schema("rejects").arrow(),
                                                        ["source_file", "source_row"], cfg.rows_per_shard,
                                                        skip_existing=resume)
        with manifest.stage("write_duplicates"):
            outputs["duplicates"] = eng.write_sorted_table(duplicates, dataset, "duplicates",
                                                           load_schema("duplicates").arrow(),
                                                           ["source_file", "source_row"], cfg.rows_per_shard,
                                                           skip_existing=resume)
    finally:
        for frame in cached:
            eng.unpersist(frame)

    reject_reasons = {k: v for k, v in outcome.items() if k != "sample"}
    dup_reasons = {}
    if outputs["duplicates"]["rows"]:
        from curate.decisions import reason_counts

        dup_reasons = reason_counts(dataset.read("duplicates", columns=["reason"]))
    counts = {
        "input_rows": rows_in,
        "kept": outputs["samples"]["rows"],
        "duplicates": outputs["duplicates"]["rows"],
        "rejects": outputs["rejects"]["rows"],
        "reject_reasons": dict(sorted(reject_reasons.items())),
        "duplicate_reasons": dup_reasons,
    }
    if counts["kept"] + counts["duplicates"] + counts["rejects"] != rows_in:
        raise DatasetError(f"ingest counts do not add up: {counts}")  # never silently lose rows
    manifest["counts"] = counts
    manifest["outputs"] = outputs
    manifest["tasks"] = len(tasks)
    manifest.write(dataset, "ingest")
    shutil.rmtree(staging, ignore_errors=True)
    return manifest.data


def _prepare_output(dataset: Dataset, plan_key: str) -> bool:
    """True when resuming the same plan (keep committed shards); else clear old ingest tables."""
    plan_path = dataset.root / PLAN_FILE
    if plan_path.exists():
        import json

        try:
            same = json.loads(plan_path.read_text()).get("plan_key") == plan_key
        except ValueError:
            same = False
        if same:
            return True
    for t in INGEST_TABLES:
        d = dataset.table_dir(t)
        if d.exists():
            shutil.rmtree(d)
    for old in (dataset.root / STAGING_DIR).glob("ingest-*"):
        shutil.rmtree(old, ignore_errors=True)
    dataset.write_json(PLAN_FILE, {"plan_key": plan_key})
    return False
