"""The ingest job: inputs -> samples, rejects, duplicates tables + a run manifest, on Spark.

Plan (driver): expand inputs into tasks (a file, or a slice of row groups of a big Parquet
file). Map (executors): each task reads its slice and runs ``prepare_batch``. Shuffle:
exact duplicates of (url, text) are removed keeping the earliest input row (input order,
then row), then repeated uids likewise. Write: each table is globally sorted and cut into
shards of exactly ``rows_per_shard`` rows, each committed atomically. Same inputs and
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

    with manifest.stage("read_normalise"):
        staged = eng.persist(eng.tasks_to_frame(spark, tasks, ingest_task_batches, STAGED_SCHEMA))
        by_kind = eng.group_counts(staged, ["kind", "reason"])
    try:
        with manifest.stage("dedup"):
            # 1) same (url, text): keep the earliest input row (file order, then row).
            samples = eng.where(staged, "kind = 'sample'")
            pairs = eng.persist(eng.first_of_groups(samples, ["url", "text"], ["file_index", "source_row"],
                                                    "uid", STAGED_SCHEMA))
            # 2) same uid with other url/text (input uids): again the earliest row wins. The
            # frame comes out range-partitioned and sorted by uid, ready to write.
            by_uid = eng.range_sorted(eng.where(pairs, "_is_first"), "uid", ["file_index", "source_row"])
            uids = eng.persist(eng.first_of_groups(by_uid, ["uid"], ["file_index", "source_row"], "uid",
                                                   STAGED_SCHEMA, presorted_by_group=True))
            dup_cols = ["uid", "duplicate_of", "reason", "source_file", "source_row"]
            dup_pairs = eng.select_columns(eng.with_column_sql(eng.with_column_sql(
                eng.where(pairs, "NOT _is_first"), "duplicate_of", "_first_id"), "reason", "'duplicate_url_text'"), dup_cols)
            dup_uids = eng.select_columns(eng.with_column_sql(eng.with_column_sql(
                eng.where(uids, "NOT _is_first"), "duplicate_of", "_first_id"), "reason", "'duplicate_uid'"), dup_cols)
            duplicates = eng.union(dup_pairs, dup_uids)
            kept = eng.where(uids, "_is_first")
        outputs = {}
        with manifest.stage("write_samples"):
            outputs["samples"] = eng.write_sorted_table(kept, dataset, "samples", load_schema("samples").arrow(),
                                                        ["uid"], cfg.rows_per_shard, skip_existing=resume,
                                                        presorted=True)
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
        eng.unpersist(uids)
        eng.unpersist(pairs)
    finally:
        eng.unpersist(staged)

    reject_reasons = {r["reason"]: r["count"] for r in by_kind if r["kind"] == "reject"}
    rows_in = sum(r["count"] for r in by_kind)
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
    dataset.write_json(PLAN_FILE, {"plan_key": plan_key})
    return False
