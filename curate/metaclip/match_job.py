"""MetaCLIP v1 match: ``samples`` shard i -> ``metadata_matches`` shard i (uid, sorted entry ids)
and a sparse per-shard entry count in ``metadata_matches/_counts/``; the driver sums those into
``entry_counts``. The Aho-Corasick automaton is built once per Python worker."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.engine import worker_cache
from curate.manifest import RunManifest, file_fingerprint
from curate.metaclip.matching import Matcher, load_metadata
from curate.tables import Dataset, load_schema, write_parquet_atomic
from curate.metaclip.job_shards import (ENTRY_COUNTS, MATCHES, METADATA_COPY, check_columns, clear_stale, counts_table,
                                        input_shards, input_stamps, plan_changed, sum_sparse_counts, write_if_changed,
                                        write_sparse_counts)
from curate.metaclip.match_worldwide_job import drop_worldwide_outputs, run_match_worldwide


def _matcher(path: str, sha: str) -> Matcher:
    return worker_cache(("curate.metaclip.Matcher", path, sha), lambda: Matcher(load_metadata(path)))


def match_shard_task(task: dict) -> dict:
    """Match one ``samples`` shard; writes ``metadata_matches`` shard i and its entry counts."""
    ds = Dataset(task["root"])
    i = task["shard"]
    out = ds.shard_path(MATCHES, i)
    counts_path = ds.shard_path(counts_table(MATCHES), i)
    if task.get("resume") and storage.committed(out) and storage.committed(counts_path):
        return {"shard": i, "rows": storage.parquet_file(out).metadata.num_rows, "skipped": 1}
    matcher = _matcher(task["metadata"], task["metadata_sha"])
    pf = check_columns(task["input"], ["uid", "text"])
    schema = load_schema(MATCHES).arrow()
    counts = np.zeros(matcher.num_entries, dtype=np.int64)
    batches, rows, matched, pairs = [], 0, 0, 0
    for b in pf.iter_batches(batch_size=task.get("batch_size", 65536), columns=["uid", "text"]):
        ids = matcher.match_array(b.column("text"))
        flat = pc.list_flatten(ids).to_numpy(zero_copy_only=False)
        counts += np.bincount(flat, minlength=matcher.num_entries)
        rows += b.num_rows
        pairs += len(flat)
        matched += int(pc.sum(pc.greater(pc.list_value_length(ids), 0)).as_py() or 0)
        batches.append(pa.record_batch([b.column("uid"), ids], schema=schema))
    write_sparse_counts(counts, counts_path)  # before the shard: the shard marks completion
    write_parquet_atomic(pa.Table.from_batches(batches, schema=schema), out)
    return {"shard": i, "rows": rows, "matched": matched, "unmatched": rows - matched, "pairs": pairs, "skipped": 0}


def run_match(dataset: Dataset, metadata: str | Path, executor, *, batch_size: int = 65536,
              resume: bool = False, params: dict | None = None, lid_model: str | None = None,
              nospace_match: str = "substring") -> dict:
    """Match every sample's text against ``metadata``; writes ``metadata_matches``,
    ``entry_counts`` and ``_runs/metadata-match.json``. Returns the manifest data.

    A metadata folder (one ``<lang>.json`` per language) runs MetaCLIP 2's worldwide matching
    (``run_match_worldwide``); a file runs MetaCLIP v1's."""
    metadata = storage.local_copy(metadata)  # a list (or folder) on a store: read here, small
    if Path(metadata).is_dir():
        return run_match_worldwide(dataset, metadata, executor, batch_size=batch_size, resume=resume,
                                   params=params, lid_model=lid_model, nospace_match=nospace_match)
    drop_worldwide_outputs(dataset)
    manifest = RunManifest("metadata-match", dict(params or {}, metadata=str(metadata), batch_size=batch_size))
    with manifest.stage("load_metadata"):
        entries = load_metadata(metadata)
        copy = dataset.path(METADATA_COPY)
        src_fp = file_fingerprint(metadata)
        # Executors read the entries from the dataset, which every node can reach.
        write_if_changed(copy, Path(metadata).read_bytes())
        sha = src_fp["sha256"]
    shards = input_shards(dataset, "samples", "run `curate ingest` first")
    manifest["inputs"] = [src_fp, {"table": "samples", "shards": len(shards)}]
    plan = {"metadata_sha256": sha, "inputs": input_stamps(shards)}
    if resume and plan_changed(dataset, plan):
        resume = False  # different metadata or inputs: nothing to resume
    if not resume:
        clear_stale(dataset, MATCHES, 0)
    dataset.write_json(f"{MATCHES}/_job.json", plan)
    tasks = [{"root": str(dataset.root), "shard": i, "input": str(p), "metadata": str(copy),
              "metadata_sha": sha, "batch_size": batch_size, "resume": resume}
             for i, p in enumerate(shards)]
    with manifest.stage("match"):
        stats = executor.map_tasks(tasks, match_shard_task, "metaclip match")
    clear_stale(dataset, MATCHES, len(tasks))
    with manifest.stage("entry_counts"):
        counts = sum_sparse_counts([dataset.shard_path(counts_table(MATCHES), i) for i in range(len(tasks))],
                                   len(entries))
        table = pa.table({"entry_id": pa.array(np.arange(len(entries), dtype=np.int32)),
                          "entry": pa.array(entries, pa.string()),
                          "count": pa.array(counts)})
        dataset.write_table(ENTRY_COUNTS, table, schema=ENTRY_COUNTS)
    rows = sum(s["rows"] for s in stats)
    totals = {k: sum(s.get(k, 0) for s in stats) for k in ("matched", "unmatched", "pairs", "skipped")}
    manifest["counts"] = {"samples": rows, **totals, "entries": len(entries),
                          "entries_matched": int((counts > 0).sum()),
                          "engine": getattr(executor, "name", "?")}
    manifest["outputs"] = {MATCHES: len(tasks), ENTRY_COUNTS: 1, "metadata": str(copy)}
    manifest.write(dataset, "metadata-match")
    return manifest.data
