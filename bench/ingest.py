"""Ingest throughput: the Spark job vs a plain single-process pyarrow loop, same run.

Builds N rows (default 1,000,000) by replicating the shared alt-text (LAION-style parquet +
CC3M tsv captions) with distinct urls, split over several Parquet files, then times
  (a) curate's Spark ingest job (local[*]): read, normalise, uid, dedup, sort, write shards;
  (b) a plain loop in this process: the same readers + prepare_batch, a pyarrow dedup on
      the (url, text) pair key, sort by uid, and Parquet writes.
Prints rows/s for both, per-core rows/s, and the ratio (target: Spark per core >= 0.5x plain).

The Spark job runs twice on the same input (fresh output folders): the first run after a
small warm-up still compiles the JVM's hot paths (a 1M-row job is short for a JIT), the
second shows the steady state a long job runs in. Both are printed; the plain loop (no JIT)
runs once.

    python bench/ingest.py [--rows 1000000] [--files 8] [--cores 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("CURATE_SHARED_DATA", REPO.parent / "shared" / "data"))


def build_pool(rows: int, files: int, folder: Path) -> list[str]:
    alt = SHARED / "alttext"
    base_text = pq.read_table(alt / "web_alttext_10k.parquet").column("TEXT").to_pylist()
    base_text += [line.split("\t")[0] for line in (alt / "cc3m_validation.tsv").read_text(encoding="utf-8").splitlines()]
    base_text = [t if t is not None else "" for t in base_text]
    per_file = -(-rows // files)
    paths, i = [], 0
    for f in range(files):
        n = min(per_file, rows - i)
        texts = [base_text[(i + k) % len(base_text)] for k in range(n)]
        urls = [f"http://img.example/{f}/{i + k}.jpg" for k in range(n)]
        p = folder / f"pool-{f:03d}.parquet"
        pq.write_table(pa.table({"url": urls, "caption": texts}), p, row_group_size=131072)
        paths.append(str(p))
        i += n
    return paths


def plain_loop(paths: list[str], out: Path, rows_per_shard: int) -> int:
    from curate.ingest.stage import prepare_batch
    from curate.readers import ReaderOptions, read_file_raw
    from curate.tables import load_schema, write_parquet_atomic

    staged = []
    for fi, p in enumerate(paths):
        for raw in read_file_raw(p, ReaderOptions(), "parquet"):
            b, _ = prepare_batch(raw, p, fi)
            staged.append(b)
    t = pa.Table.from_batches(staged)
    samples = t.filter(pc.equal(t.column("kind"), "sample"))
    samples = samples.append_column("_i", pa.array(range(samples.num_rows), pa.int64()))
    first = samples.group_by(["pair_key"], use_threads=False).aggregate([("_i", "min")]).column("_i_min")
    kept = samples.take(pc.sort_indices(first)).sort_by("uid")
    schema = load_schema("samples").arrow()
    kept = pa.Table.from_arrays([kept.column(n).cast(schema.field(n).type) for n in schema.names], schema=schema)
    for s in range(0, kept.num_rows, rows_per_shard):
        write_parquet_atomic(kept.slice(s, rows_per_shard), out / f"part-{s // rows_per_shard:05d}.parquet")
    return t.num_rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--files", type=int, default=8)
    ap.add_argument("--cores", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--rows-per-shard", type=int, default=250_000)
    args = ap.parse_args()
    if not (SHARED / "alttext").is_dir():
        sys.exit(f"needs {SHARED}/alttext")
    work = Path(tempfile.mkdtemp(prefix="curate-bench-ingest-"))
    try:
        paths = build_pool(args.rows, args.files, work)
        from curate.engine.spark import get_session
        from curate.ingest.job import IngestConfig, run_ingest
        from curate.engine.spark import SparkExecutor

        spark = get_session(master=f"local[{args.cores}]", app_name="bench-ingest")
        # Warm the JVM and Python workers on a tiny input so start-up is not counted.
        run_ingest(SparkExecutor(spark), IngestConfig(inputs=paths[:1], output=str(work / "warm"), task_rows=10_000_000))
        runs = []
        for i in range(2):
            t0 = time.perf_counter()
            m = run_ingest(SparkExecutor(spark), IngestConfig(inputs=paths, output=str(work / f"spark{i}"),
                                               rows_per_shard=args.rows_per_shard))
            runs.append((time.perf_counter() - t0, m))
        spark.stop()
        t0 = time.perf_counter()
        n_plain = plain_loop(paths, work / "plain", args.rows_per_shard)
        plain_s = time.perf_counter() - t0
        n = runs[0][1]["counts"]["input_rows"]
        assert n == n_plain == args.rows
        plain_rps = n / plain_s
        print(f"rows: {n:,}  files: {args.files}  spark cores: {args.cores}  "
              f"samples shards written by: {runs[0][1]['samples_write']}")
        print(f"plain loop          : {plain_s:8.1f} s  {plain_rps:10,.0f} rows/s  (1 core)")
        for label, (spark_s, m) in zip(("spark, first run ", "spark, second run"), runs):
            spark_rps = n / spark_s
            print(f"{label}   : {spark_s:8.1f} s  {spark_rps:10,.0f} rows/s  {spark_rps / args.cores:10,.0f} rows/s/core"
                  f"  per-core ratio spark/plain {spark_rps / args.cores / plain_rps:.2f}")
            print("    stage timings (s):", {k: round(v, 1) for k, v in m["timings_s"].items()})
        print("target: per-core ratio >= 0.5")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
