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
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from curate.errors import DatasetError
from curate.ingest.shards import ROW_ID_BITS, gather_samples_shard, plan_segments, write_segments_shard
from curate.ingest.stage import STAGED_SCHEMA, IngestRules, ingest_task_batches
from curate.manifest import RunManifest, file_fingerprint, read_manifest, stable_hash
from curate.readers import InputScan, ReaderOptions, scan_inputs
from curate.readers.parquet import plan_parquet
from curate.tables import Dataset, load_schema

INGEST_TABLES = ("samples", "rejects", "duplicates", "url_text_duplicates")
PLAN_FILE = "_runs/ingest.plan.json"
STAGING_DIR = "_staging"  # hidden from table discovery
STAGED_TABLES = "tables"  # a new plan's tables, written in its staging folder while an older run's stay
SWAP_FILE = "swap.json"  # written once those tables are complete: put them in place
BROADCAST_KEYS_MAX_ROWS = 4_000_000  # kept keys are ~24 bytes a row: up to ~100 MB broadcast
# Dedup works on one long per input row (file index and row packed, see ROW_ID_BITS).
KEY_SCHEMA = pa.schema([("uid", pa.string()), ("row_id", pa.int64())])
DUP_SCHEMA = pa.schema([("uid", pa.string()), ("duplicate_of", pa.string()), ("reason", pa.string()),
                        ("row_id", pa.int64())])
STAGED_RUN_ROWS = 262_144  # a stage task sorts its samples by uid in runs of this many rows
STAGED_ROW_GROUP = 16_384  # ...written in row groups of this many: the unit a uid-range read skips by
GATHER_SLACK_ROWS = 1_000_000
# Staged files are read once or twice: fast lz4, dictionaries only where values repeat.
STAGED_PARQUET = dict(compression="lz4", use_dictionary=["kind", "source_file", "reason", "detail"])
KEY_SAMPLE_EVERY = 1024  # staged rows per key sampled for the dedup ranges


@dataclass
class IngestConfig:
    inputs: list[str]
    output: str
    format: str | None = None
    options: ReaderOptions = field(default_factory=ReaderOptions)
    rules: IngestRules = field(default_factory=IngestRules)
    rows_per_shard: int = 500_000
    task_rows: int = 250_000  # Parquet files are split into tasks of about this many rows
    sources: dict[str, str] = field(default_factory=dict)  # local copy -> the URI it was fetched from

    def params(self) -> dict:
        return {
            "inputs": [self.sources.get(i, i) for i in self.inputs],
            "format": self.format,
            "options": self.options.to_dict(),
            "rules": self.rules.to_dict(),
            "rows_per_shard": self.rows_per_shard,
            "task_rows": self.task_rows,
        }


def plan_tasks(cfg: IngestConfig) -> tuple[list[dict], list[dict], InputScan]:
    """(tasks, input fingerprints, the scan with every file not read). File order (as given,
    folders sorted) fixes dedup priority. The output folder is never read as input."""
    scan = scan_inputs(cfg.inputs, cfg.format, exclude=[cfg.output], captions=cfg.options.captions)
    files = scan.files
    if not files:
        if scan.skipped:
            first = scan.skipped[0]
            raise DatasetError(f"no readable input files in {cfg.inputs}: {len(scan.skipped)} skipped, the first "
                               f"{first.path}: {first.outcome}: {first.detail}")
        raise DatasetError(f"no input files found in {cfg.inputs}")
    if len(files) >= 1 << (63 - ROW_ID_BITS):
        raise DatasetError(f"{len(files):,} input files: ingest takes at most {(1 << (63 - ROW_ID_BITS)) - 1:,} "
                           "per run (merge small files or ingest in parts)")
    options = replace(cfg.options, exclude=[str(Path(cfg.output).resolve())])
    opts = options.to_dict()
    tasks, fingerprints = [], []
    for file_index, (path, fmt) in enumerate(files):
        fp = _folder_fingerprint(path, options.exclude) if fmt == "imagefolder" else file_fingerprint(path)
        source = cfg.sources.get(str(path), path)  # an input named by URI: read from its local copy
        fingerprints.append({**fp, "path": source, "format": fmt, "file_index": file_index})
        base = {"path": path, "source": source, "format": fmt, "file_index": file_index, "options": opts,
                "rules": cfg.rules.to_dict()}
        if fmt == "imagefolder" and cfg.options.captions:
            base["source"] = str(Path(cfg.options.captions).resolve())
        if fmt == "parquet":
            for piece in plan_parquet(path, cfg.task_rows):
                tasks.append({**base, "row_groups": piece["row_groups"], "first_row": piece["first_row"]})
        else:
            tasks.append(base)
    return tasks, fingerprints, scan


# ``--engine auto`` sizes an ingest by its inputs (the dataset does not exist yet): text
# inputs by bytes, at this many a row (web alt-text rows in CSV/TSV/JSONL/COCO JSON take
# 100-300 bytes, so this errs towards more rows, i.e. towards Spark).
INPUT_BYTES_PER_ROW = 100


def estimate_input_rows(cfg: IngestConfig) -> int:
    """Rows the inputs hold, without reading any data (docs/engine.md): Parquet files by
    their footers, WebDataset tars by their distinct keys (tar headers only), an image
    folder by its files, any other file by its size / ``INPUT_BYTES_PER_ROW``."""
    import tarfile

    from curate.readers.parquet import open_parquet

    scan = scan_inputs(cfg.inputs, cfg.format, exclude=[cfg.output], captions=cfg.options.captions)
    rows = 0
    for path, fmt in scan.files:
        p = Path(path)
        if fmt in ("parquet", "datacomp", "img2dataset"):
            rows += open_parquet(path).metadata.num_rows  # a broken file: its one-line error, now
        elif fmt == "imagefolder":
            rows += sum(1 for f in p.rglob("*") if f.is_file() and not f.name.startswith(("_", ".")))
        elif fmt == "webdataset":
            try:
                with tarfile.open(path, "r:") as tar:
                    rows += len({_tar_key(m.name) for m in tar if m.isfile()})
            except (tarfile.TarError, OSError):  # the job reports it; size it as text
                rows += p.stat().st_size // INPUT_BYTES_PER_ROW
        else:
            rows += -(-p.stat().st_size // INPUT_BYTES_PER_ROW)
    return rows


def _tar_key(name: str) -> str:
    """WebDataset's sample key of a tar member: its path up to the first dot of its file name."""
    folder, _, base = name.rpartition("/")
    return f"{folder}/{base.split('.', 1)[0]}"


def _folder_fingerprint(root: str, exclude: list[str]) -> dict:
    """An image folder's fingerprint over the files ingest may read (hidden names and the
    output left out); a file that cannot be read is fingerprinted by its error."""
    import hashlib

    skip = {Path(x) for x in exclude}
    h, size = hashlib.sha256(), 0
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(("_", ".")) and (here / d).resolve() not in skip)
        for name in sorted(f for f in filenames if not f.startswith(("_", "."))):
            f = here / name
            try:
                fp = file_fingerprint(f)
                digest, size = fp["sha256"], size + fp["bytes"]
            except OSError as e:
                digest = f"unreadable:{e.errno}"
            h.update(f"{f.relative_to(root).as_posix()}:{digest}\n".encode("utf-8", "surrogateescape"))
    return {"path": str(root), "bytes": size, "sha256": h.hexdigest(), "kind": "folder"}


def report_skipped(scan: InputScan, limit: int = 20) -> None:
    """One line per file not read (the first ``limit``; all are in the run manifest)."""
    from curate.progress import info

    for f in scan.skipped[:limit]:
        info(f"ingest: not reading {f.path}: {f.outcome}: {f.detail}")
    if len(scan.skipped) > limit:
        info(f"ingest: ... and {len(scan.skipped) - limit} more files not read (see _runs/ingest.json, skipped_files)")
    for d in scan.excluded:
        info(f"ingest: not reading {d}: it is the output dataset")


def stage_task(task: dict) -> dict:
    """Read and normalise one task into its staged files: samples sorted by uid in runs of
    at most ``task["run_rows"]`` rows (so a uid range is a few row groups of each run), and
    rejects in input order. Returns counts of samples and of rejects by reason, and the
    number of runs. Files already committed by an earlier (killed) run are reused."""
    import pyarrow.parquet as pq

    from curate.tables.dataset import atomic_path

    samples_path, rejects_path = Path(task["staged_path"]), Path(task["rejects_path"])
    if samples_path.exists() and rejects_path.exists():  # resume: both were committed
        meta = pq.ParquetFile(samples_path).metadata
        tables = [pq.read_table(p, columns=["kind", "reason", "uid", "pair_key"]) for p in (samples_path, rejects_path)]
        return {**_staged_counts(tables), **_key_samples(tables[0], task["sample_every"]),
                "runs": int((meta.metadata or {}).get(b"curate.runs", b"0"))}
    parts, pending, runs, sampled = [], [], 0, []
    with atomic_path(rejects_path) as rej_tmp, atomic_path(samples_path) as smp_tmp:
        with pq.ParquetWriter(rej_tmp, STAGED_SCHEMA, **STAGED_PARQUET) as rej_w, \
             pq.ParquetWriter(smp_tmp, STAGED_SCHEMA, **STAGED_PARQUET) as smp_w:

            def flush_run():
                nonlocal runs
                run = pa.Table.from_batches(pending, STAGED_SCHEMA).sort_by([("uid", "ascending"),
                                                                              ("source_row", "ascending")])
                smp_w.write_table(run, row_group_size=task["row_group"])
                sampled.append(run.select(["uid", "pair_key"]))
                runs += 1
                pending.clear()

            pending_rows = 0
            for staged in ingest_task_batches(task):
                parts.append(staged.select(["kind", "reason", "uid", "pair_key"]))
                is_sample = pc.equal(staged.column("kind"), "sample")
                rej = staged.filter(pc.invert(is_sample))
                if rej.num_rows:
                    rej_w.write_batch(rej)
                smp = staged.filter(is_sample)
                if smp.num_rows:
                    pending.append(smp)
                    pending_rows += smp.num_rows
                if pending_rows >= task["run_rows"]:
                    flush_run()
                    pending_rows = 0
            if pending:
                flush_run()
            smp_w.add_key_value_metadata({"curate.runs": str(runs)})
    samples = (_key_samples(pa.concat_tables(sampled), task["sample_every"]) if sampled
               else {"pair_key_sample": [], "uid_sample": []})
    return {**_staged_counts(parts), **samples, "runs": runs}


def _key_samples(staged, every: int) -> dict:
    """Every ``every``-th pair key and uid of a staged samples file, in file order: the
    driver cuts the dedup key ranges from these (no sampling pass over the data)."""
    picks = pa.array(range(0, staged.num_rows, every), pa.int64())
    return {"pair_key_sample": staged.column("pair_key").take(picks).to_pylist(),
            "uid_sample": staged.column("uid").take(picks).to_pylist()}


def _staged_counts(parts) -> dict:
    """Rows, outcome counts ("sample" or the reject reason) and rows carrying their own input
    uid (a uid other than the (url, text) hash), over staged batches or tables."""
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


def _dedup_pass(executor, keys, key: str, id_column: str, reason: str, sample: list[str], rows: int,
                folder: Path) -> dict:
    """One exact-dedup pass over ``keys`` by the executor, in ranges of ``key`` cut from
    ``sample``: the earliest input row of each key is kept. Returns the kept files in key
    order, their row counts, and the duplicates' folder and count (``rows`` - kept)."""
    shutil.rmtree(folder, ignore_errors=True)  # ranges of a killed run may differ
    cuts = _boundaries(sample, executor.key_ranges)
    kept = executor.first_by_key_ranges(keys, key, id_column, "row_id", cuts, str(folder / "kept"))
    n_kept = sum(n for _, n in kept)
    dups_dir = str(folder / "dups")
    if n_kept < rows:  # only then a second pass lists the duplicates
        executor.duplicates_by_key_ranges(keys, key, id_column, "row_id", cuts, reason, dups_dir)
    return {"kept_files": [f for f, _ in kept], "kept_counts": [n for _, n in kept], "kept": n_kept,
            "dups_dir": dups_dir, "duplicates": rows - n_kept}


def _report_pair_duplicates(executor, dataset: Dataset, keys, kept: dict, sample: list[str], sources: list[str],
                            folder: Path, rows_per_shard: int, resume: bool) -> dict:
    """Faithful mode: the ``url_text_duplicates`` table lists every kept sample whose
    (url, text) an earlier kept sample already has (input order), pointing at that one. Keys
    only travel: the kept rows' pair keys, deduplicated in ranges as in ``_dedup_pass``."""
    ex = executor
    shutil.rmtree(folder, ignore_errors=True)
    kept_ids = ex.select_columns(ex.read_parquet(kept["kept_files"], KEY_SCHEMA), ["row_id"])
    kept_keys = ex.join_frames(ex.select_columns(keys, ["pair_key", "uid", "row_id"]), kept_ids, "row_id", "inner")
    cuts = _boundaries(sample, ex.key_ranges)
    ex.duplicates_by_key_ranges(kept_keys, "pair_key", "uid", "row_id", cuts, "same_url_text", str(folder))
    dups = _with_source(ex, ex.read_parquet([str(folder)], DUP_SCHEMA), sources)
    return ex.write_sorted_table(dups, dataset, "url_text_duplicates", load_schema("url_text_duplicates").arrow(),
                                  ["source_file", "source_row"], rows_per_shard, skip_existing=resume)


def _staged_rows(executor, staging: Path, columns: list[str] | None = None):
    """The staged samples (``columns`` of them, or all) with their ``row_id``."""
    schema = STAGED_SCHEMA if columns is None else pa.schema([STAGED_SCHEMA.field(c) for c in columns])
    staged = executor.read_parquet([str(staging / "samples")], schema)
    return executor.with_packed_long(staged, "row_id", "file_index", "source_row", ROW_ID_BITS)


def _with_source(executor, dups, sources: list[str]):
    """Duplicate keys with their input position unpacked from ``row_id`` and the source
    file named."""
    dups = executor.with_unpacked_long(dups, "row_id", "file_index", "source_row", ROW_ID_BITS)
    return executor.with_lookup(dups, "source_file", "file_index", sources)


def _boundaries(sample: list[str], ranges: int) -> list[str]:
    """Up to ``ranges`` - 1 cut points splitting the sampled keys into equal parts."""
    values = sorted(set(sample))
    cuts = [values[len(values) * i // ranges] for i in range(1, ranges)] if values else []
    return sorted(set(cuts))


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
    tasks, skipped = [], 0
    for i, segs in enumerate(segments):
        out = dataset.shard_path(table, i)
        if skip_existing and out.exists():
            skipped += 1
            continue
        tasks.append({"table": table, "shard": i, "out": str(out), "parts": parts, "segments": segs, **extra})
    keep = {dataset.shard_path(table, i).name for i in range(len(segments))}
    for old in dataset.shards(table):  # shards past the end of an earlier, larger run
        if old.name not in keep:
            old.unlink()
    return tasks, {"rows": sum(counts), "shards": len(segments), "skipped_shards": skipped}


def run_ingest(executor, cfg: IngestConfig) -> dict:
    """Run ingest on ``executor`` (``LocalExecutor`` or ``SparkExecutor``); returns the
    manifest dict (also written to the dataset)."""
    ex = executor
    dataset = Dataset(cfg.output)
    manifest = RunManifest("ingest", cfg.params())
    with manifest.stage("plan"):
        tasks, fingerprints, scan = plan_tasks(cfg)  # before anything in the output is touched
    report_skipped(scan)
    manifest["inputs"] = fingerprints
    manifest["skipped_files"] = [f.to_dict() for f in scan.skipped]
    if scan.excluded:
        manifest["excluded_folders"] = scan.excluded
    npz_plan = {"models": {}, "npz": []}
    if cfg.format == "datacomp":  # the .npz beside each shard: checked from headers before any work
        from curate.ingest.datacomp import plan_npz_import

        with manifest.stage("plan_npz"):
            npz_plan = plan_npz_import(fingerprints)
        manifest["npz_inputs"] = npz_plan["npz"]
    plan_key = stable_hash({"params": cfg.params(), "inputs": [(f["path"], f["sha256"]) for f in fingerprints],
                            "skipped": [(f.path, f.outcome) for f in scan.skipped], "npz": npz_plan["npz"],
                            "code": manifest["code"]["curate"]})
    finish_pending_swap(dataset)  # a run killed while putting its tables in place
    remove_stale_temp_files(dataset)
    target, resume = _prepare_output(dataset, plan_key)
    manifest["resumed"] = resume
    manifest["plan_key"] = plan_key
    ui = ex.ui_url()
    if ui:
        manifest["spark_ui"] = ui
    staging = dataset.root / STAGING_DIR / f"ingest-{plan_key[:16]}"
    for i, t in enumerate(tasks):
        t["staged_path"] = str(staging / "samples" / f"task-{i:06d}.parquet")
        t["rejects_path"] = str(staging / "rejects" / f"task-{i:06d}.parquet")
        t.update(run_rows=STAGED_RUN_ROWS, row_group=STAGED_ROW_GROUP, sample_every=KEY_SAMPLE_EVERY)
    sources = [f["path"] for f in fingerprints]
    for t in tasks:
        sources[t["file_index"]] = t["source"]

    with manifest.stage("read_normalise"):
        results = ex.map_tasks(tasks, stage_task, "read + normalise")
    outcome: dict[str, int] = {}
    for r in results:
        for k, v in r["counts"].items():
            outcome[k] = outcome.get(k, 0) + v
    rows_in = sum(r["rows"] for r in results)
    input_uids = sum(r["input_uids"] for r in results)
    outputs = {}
    with manifest.stage("dedup"):
        # Keys only (hashes and positions): captions never cross a shuffle here.
        # Derived uids are the pair keys themselves: then the uid column need not travel.
        id_column = "uid" if input_uids else "pair_key"
        staged = _staged_rows(ex, staging, ["pair_key", "uid", "file_index", "source_row"])
        keys = ex.select_columns(staged, list(dict.fromkeys(["pair_key", id_column, "row_id"])))
        staged_rows = sum(r["counts"].get("sample", 0) for r in results)
        # Faithful mode: a uid is a sample, so only a repeated input uid is merged (the
        # earliest row wins); repeated (url, text) pairs are reported apart, not removed.
        faithful_uids = cfg.rules.faithful and input_uids > 0
        if faithful_uids:
            passes = [_dedup_pass(ex, keys, "uid", "uid", "duplicate_uid",
                                  [k for r in results for k in r["uid_sample"]], staged_rows, staging / "dedup-uids")]
        else:
            # 1) same (url, text): keep the earliest input row (file order, then row).
            passes = [_dedup_pass(ex, keys, "pair_key", id_column, "duplicate_url_text",
                                  [k for r in results for k in r["pair_key_sample"]], staged_rows,
                                  staging / "dedup-pairs")]
        if input_uids and not faithful_uids:
            # 2) same input uid with other url/text: again the earliest row wins. (Without
            # input uids, pass 1's kept keys are already unique uids, in uid order.)
            firsts = ex.read_parquet(passes[0]["kept_files"], KEY_SCHEMA)
            passes.append(_dedup_pass(ex, firsts, "uid", "uid", "duplicate_uid",
                                      [k for r in results for k in r["uid_sample"]], passes[0]["kept"],
                                      staging / "dedup-uids"))
        kept = passes[-1]
    with manifest.stage("write_samples_rejects"):
        samples_schema = load_schema("samples").arrow()
        nshards = max(1, -(-kept["kept"] // cfg.rows_per_shard))
        runs = sum(r["runs"] for r in results)
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
                rows = ex.join_frames(_staged_rows(ex, staging), ex.select_columns(ranked, ["row_id", "_rank"]), "row_id", "inner",
                                       broadcast_right=total <= BROADCAST_KEYS_MAX_ROWS)
                outputs["samples"] = ex.write_ranked_table(rows, target, "samples", samples_schema, total,
                                                            cfg.rows_per_shard, skip_existing=resume,
                                                            lookups={"source_file": ("file_index", sources)})
            finally:
                ex.unpersist(ranked)
    with manifest.stage("write_duplicates"):
        dup_schema = load_schema("duplicates").arrow()
        if sum(p["duplicates"] for p in passes):
            dups = ex.read_parquet([p["dups_dir"] for p in passes if p["duplicates"]], DUP_SCHEMA)
            outputs["duplicates"] = ex.write_sorted_table(_with_source(ex, dups, sources), target, "duplicates",
                                                          dup_schema, ["source_file", "source_row"], cfg.rows_per_shard,
                                                          skip_existing=resume)
        else:
            dup_tasks, outputs["duplicates"] = _plan_shard_tasks(target, "duplicates", [], [], cfg.rows_per_shard,
                                                                 resume, kind="segments")
            for t in dup_tasks:
                _write_shards_task(t)

    if faithful_uids:
        with manifest.stage("report_url_text_duplicates"):
            outputs["url_text_duplicates"] = _report_pair_duplicates(
                ex, target, keys, kept, [k for r in results for k in r["pair_key_sample"]], sources,
                staging / "pair-report", cfg.rows_per_shard, resume)

    if npz_plan["models"]:
        from curate.ingest.datacomp import run_npz_import

        with manifest.stage("import_npz"):
            outputs.update(run_npz_import(target, npz_plan, ex, sources,
                                          outputs["samples"]["rows"], resume, runs_dataset=dataset))

    reject_reasons = {k: v for k, v in outcome.items() if k != "sample"}
    dup_reasons, dups_by_file = _duplicate_counts(passes)
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
    manifest["counts"] = counts
    manifest["outputs"] = outputs
    manifest["tasks"] = len(tasks)
    if target.root != dataset.root:  # put the new tables in place only now that all are complete
        dataset.write_json(str(staging.relative_to(dataset.root) / SWAP_FILE),
                           {"plan_key": plan_key, "manifest": manifest.data,
                            "tables": [*INGEST_TABLES, *(t for t in outputs if t.startswith("embeddings/"))]})
        finish_pending_swap(dataset)
    manifest.write(dataset, "ingest")
    shutil.rmtree(staging, ignore_errors=True)
    _remove_if_empty(dataset.root / STAGING_DIR)
    return manifest.data


def _duplicate_counts(passes: list[dict]) -> tuple[dict, dict]:
    """Duplicates by reason and by input file index, from the dedup passes' files (keys
    only, read file by file: bounded memory)."""
    import pyarrow.parquet as pq

    by_reason: Counter = Counter()
    by_file: Counter = Counter()
    for p in passes:
        if not p["duplicates"]:
            continue
        for f in sorted(Path(p["dups_dir"]).rglob("*.parquet")):
            t = pq.read_table(f, columns=["reason", "row_id"])
            for item in pc.value_counts(t.column("reason")).to_pylist():
                by_reason[item["values"]] += item["counts"]
            files = pc.shift_right(t.column("row_id"), ROW_ID_BITS)
            for item in pc.value_counts(files).to_pylist():
                by_file[item["values"]] += item["counts"]
    return dict(sorted(by_reason.items())), dict(by_file)


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


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:  # not empty (another plan's staging) or already gone
        pass


def remove_stale_temp_files(dataset: Dataset) -> list[Path]:
    """Temp files of writes a kill -9 interrupted (``atomic_path``'s hidden ``.*.tmp``) in
    the tables ingest writes, its run records and its staging; run before anything is
    written, so none belongs to a live writer of this dataset."""
    found = []
    for d in [*(dataset.table_dir(t) for t in INGEST_TABLES), dataset.runs_dir(), dataset.runs_dir() / "history"]:
        if d.is_dir():
            found += [p for p in d.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
    staging = dataset.root / STAGING_DIR
    if staging.is_dir():
        found += [p for p in staging.rglob(".*.tmp")]
    for p in found:
        p.unlink(missing_ok=True)
    return found


def finish_pending_swap(dataset: Dataset) -> None:
    """Put in place the tables of a run that completed them in its staging folder (see
    ``_prepare_output``): each old table is replaced by the new one, then the staging folder
    goes. Idempotent, so a run killed half-way through is finished by the next one."""
    import json

    for marker in sorted((dataset.root / STAGING_DIR).glob(f"ingest-*/{SWAP_FILE}")):
        staging = marker.parent
        spec = json.loads(marker.read_text())
        for t in spec["tables"]:
            new = staging / STAGED_TABLES / t
            if not new.exists():
                continue  # moved by the killed run already
            old = dataset.table_dir(t)
            if old.exists():
                shutil.rmtree(old)
            os.replace(new, old)
        if spec.get("manifest"):  # the manifest of those tables (a finishing run rewrites it)
            dataset.write_json("_runs/ingest.json", spec["manifest"])
        dataset.write_json(PLAN_FILE, {"plan_key": spec["plan_key"], "target": "."})
        marker.unlink()


def _prepare_output(dataset: Dataset, plan_key: str) -> tuple[Dataset, bool]:
    """Where this run writes its tables, and whether it resumes the same plan (keeping its
    committed shards). The tables of a completed earlier run (it has a manifest) are never
    removed before the new ones are complete: a new plan then writes into its staging
    folder and ``finish_pending_swap`` replaces them at the end; a failing run leaves them
    and their manifest as they were. Without a completed run, tables are written in place."""
    import json

    plan_path = dataset.root / PLAN_FILE
    own = Path(STAGING_DIR) / f"ingest-{plan_key[:16]}"
    staging_tables = own / STAGED_TABLES
    plan = {}
    if plan_path.exists():
        try:
            plan = json.loads(plan_path.read_text())
        except ValueError:
            pass
    same = plan.get("plan_key") == plan_key
    for old in (dataset.root / STAGING_DIR).glob("ingest-*"):  # other plans' files never resume
        if not (same and old == dataset.root / own):
            shutil.rmtree(old, ignore_errors=True)
    if same:
        where = plan.get("target", ".")
        return (dataset if where == "." else Dataset(dataset.root / where)), True
    if (dataset.runs_dir() / "ingest.json").exists() and any(dataset.table_dir(t).exists() for t in INGEST_TABLES):
        dataset.write_json(PLAN_FILE, {"plan_key": plan_key, "target": str(staging_tables)})
        return Dataset(dataset.root / staging_tables), False
    for t in INGEST_TABLES:  # leftovers of a run that never completed
        d = dataset.table_dir(t)
        if d.exists():
            shutil.rmtree(d)
    dataset.write_json(PLAN_FILE, {"plan_key": plan_key, "target": "."})
    return dataset, False
