"""The stage step of ingest: one task read and normalised into its staged files (samples sorted
by uid in runs, rejects in input order), with the counts and key samples the driver plans by.
Staged files are paths or URIs (a dataset on a store keeps its staging there: every worker
of a cluster reaches it); each is written whole, once (``atomic_path``)."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from curate.ingest.stage import STAGED_SCHEMA, ingest_task_batches


# Staged files are read once or twice: fast lz4, dictionaries only where values repeat.
STAGED_PARQUET = dict(compression="lz4", use_dictionary=["kind", "source_file", "reason", "detail"])


def stage_task(task: dict) -> dict:
    """Read and normalise one task into its staged files: samples sorted by uid in runs of
    at most ``task["run_rows"]`` rows (so a uid range is a few row groups of each run), and
    rejects in input order. Returns counts of samples and of rejects by reason, and the
    number of runs. Files already committed by an earlier (killed) run are reused."""
    import pyarrow.parquet as pq

    from curate import storage
    from curate.tables.atomic import atomic_path

    samples_path, rejects_path = task["staged_path"], task["rejects_path"]
    if storage.exists(samples_path) and storage.exists(rejects_path):  # resume: both were committed
        meta = storage.parquet_file(samples_path).metadata
        tables = [storage.read_parquet(p, columns=["kind", "reason", "uid", "pair_key"])
                  for p in (samples_path, rejects_path)]
        return {**_staged_counts(tables), **_key_samples(tables[0], task["sample_every"]),
                "runs": int((meta.metadata or {}).get(b"curate.runs", b"0"))}
    parts, pending, runs, sampled = [], [], 0, []
    with atomic_path(rejects_path, shard=False) as rej_tmp, atomic_path(samples_path, shard=False) as smp_tmp:
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
