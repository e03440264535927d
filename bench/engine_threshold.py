"""Benchmark: where Spark starts to win over the in-process engine, per job and pool size.

Sets ``LOCAL_MAX_ROWS`` (``curate.engine.base``): ``--engine auto`` runs a job in-process up to
that many rows. Each job of the README chain (ingest, then bench/small_pool.py's chain:
filter, metadata build/match/balance, cluster, dedup semantic, prune dbp) runs as its own
``python -m curate.cli`` process, as a user types it, under ``--engine local`` and
``--engine spark`` (Spark local mode, ``local[*]``), at several pool sizes. Ingest reads a
Parquet file of real alt-text captions replicated to the size (5% exact (url, text) repeats);
the other jobs run on bench/small_pool.py's pool (same captions, random sizes, a synthetic
embeddings table, ``--dim`` wide).

Per size and job it prints wall and CPU seconds and spark/local; a ratio under 1 means Spark
won. CPU is user + system of the step's process and the children it waited for: Spark's driver
JVM is not among them (pyspark does not reap it), so for Spark read the wall column.

    .venv/bin/python bench/engine_threshold.py [--sizes 10000,50000,200000,500000] [--dim 256]
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from small_pool import CHAIN, DATA, build_pool, run_step  # noqa: E402


def build_ingest_input(path: Path, rows: int, seed: int = 0) -> None:
    """A Parquet pool of ``rows`` real alt-text captions with unique URLs, 5% of rows repeating
    an earlier (url, text) pair (exact duplicates ingest removes)."""
    texts = pq.read_table(DATA / "alttext" / "web_alttext_10k.parquet", columns=["TEXT"]).column(0).combine_chunks()
    texts = pa.concat_arrays([texts] * -(-rows // len(texts))).slice(0, rows).cast(pa.string())
    urls = np.array([f"http://127.0.0.1/{i}.jpg" for i in range(rows)], dtype=object)
    rng = np.random.default_rng(seed)
    dup = rng.choice(np.arange(1, rows), rows // 20, replace=False)
    src = (dup * rng.random(len(dup))).astype(np.int64)  # an earlier row
    idx = np.arange(rows)
    idx[dup] = src
    pq.write_table(pa.table({"url": pa.array(urls[idx], pa.string()), "text": texts.take(pa.array(idx))}), path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="10000,50000,200000,500000")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--engines", default="local,spark")
    ap.add_argument("--jobs", default="", help="comma-separated job names (default: all)")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    engines = args.engines.split(",")
    steps = [("ingest", ["ingest", "{ds}/pool.parquet", "-o", "{ds}/ingested"])] + CHAIN
    if args.jobs:
        steps = [s for s in steps if s[0] in args.jobs.split(",")]
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-threshold-"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"python {platform.python_version()}; embeddings {args.dim}-d", flush=True)
    print(f"{'rows':>8} {'job':<18}" + "".join(f"{e + ' wall':>12}{'cpu':>8}" for e in engines)
          + (f"{'spark/local wall':>18}{'cpu':>7}" if set(engines) == {"local", "spark"} else ""), flush=True)
    for rows in sizes:
        base = work / f"base-{rows}"
        if base.exists():
            shutil.rmtree(base)
        build_pool(base, rows, dim=args.dim)
        build_ingest_input(base / "pool.parquet", rows)
        times = {}
        for engine in engines:
            root = work / f"{engine}-{rows}"
            if root.exists():
                shutil.rmtree(root)
            shutil.copytree(base, root)
            times[engine] = {}
            for name, argv in steps:
                times[engine][name] = run_step([a.format(ds=root) for a in argv], engine)
        for name, _ in steps:
            line = f"{rows:>8} {name:<18}" + "".join(f"{times[e][name][0]:>12.1f}{times[e][name][1]:>8.1f}"
                                                    for e in engines)
            if set(engines) == {"local", "spark"}:
                line += (f"{times['spark'][name][0] / times['local'][name][0]:>17.2f}x"
                         f"{times['spark'][name][1] / max(times['local'][name][1], 1e-9):>6.2f}x")
            print(line, flush=True)
        print(f"{rows:>8} {'(load average)':<18}{os.getloadavg()[0]:>12.1f}  at {time.strftime('%H:%M:%S')}",
              flush=True)
        for engine in engines:
            shutil.rmtree(work / f"{engine}-{rows}", ignore_errors=True)
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
