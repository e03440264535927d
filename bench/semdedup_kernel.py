"""Benchmark: SemDeDup's per-cluster kernel (``max_earlier_similarity``) with the row blocks it
uses (at most ``BLOCK_ROWS`` rows, products with earlier rows only) against the whole cluster as
one block (the full square product, masked), in the same process, on the same clusters; checks
both give identical maxima and positions.

    python bench/semdedup_kernel.py                    # 300 clusters of 800-2,200 x 512
    python bench/semdedup_kernel.py --threads 1        # as one Spark task runs it

The clusters are unit rows of Gaussian mixtures with planted near duplicates (bench/dedup.py's
generator), about the size `curate cluster -k 700` makes of 1M rows.
"""

from __future__ import annotations

import argparse
import os
import sys
import time


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--clusters", type=int, default=300)
    ap.add_argument("--min-rows", type=int, default=800)
    ap.add_argument("--max-rows", type=int, default=2200)
    ap.add_argument("--dim", type=int, default=512)
    ap.add_argument("--threads", type=int, default=0, help="BLAS threads (0: the library's default)")
    ap.add_argument("--repeat", type=int, default=3, help="alternating timed runs of each (the best is kept)")
    a = ap.parse_args(argv)
    if a.threads:  # before NumPy loads its BLAS
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(a.threads)
    import numpy as np

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from dedup import make_data

    from curate.embedding_space import semdedup

    rng = np.random.default_rng(1)
    sizes = rng.integers(a.min_rows, a.max_rows + 1, a.clusters)
    x16, _, _, _ = make_data(int(sizes.sum()), a.dim, a.clusters, 0.1)
    bounds = np.r_[0, np.cumsum(sizes)]
    clusters = []
    for s, e in zip(bounds[:-1], bounds[1:]):
        x = x16[s:e].astype(np.float32)
        clusters.append(x / np.linalg.norm(x, axis=1, keepdims=True))

    def run(block_rows: int):
        semdedup.BLOCK_ROWS = block_rows
        t, c = time.perf_counter(), time.process_time()
        out = [semdedup.max_earlier_similarity(x, device="cpu") for x in clusters]
        return time.perf_counter() - t, time.process_time() - c, out

    blocked, whole = semdedup.BLOCK_ROWS, 1 << 30
    times = {blocked: [], whole: []}
    results = {}
    for _ in range(a.repeat):
        for rows in (whole, blocked):
            wall, cpu, results[rows] = run(rows)
            times[rows].append((wall, cpu))
    semdedup.BLOCK_ROWS = blocked
    same = all(np.array_equal(p[0], q[0]) and np.array_equal(p[1], q[1])
               for p, q in zip(results[blocked], results[whole]))
    (wb, cb), (ww, cw) = min(times[blocked]), min(times[whole])
    rows = int(sizes.sum())
    print(f"{a.clusters} clusters, {rows:,} rows x {a.dim}, BLAS threads {a.threads or 'default'}")
    print(f"  whole cluster as one block: {ww:.2f} s wall {cw:.2f} s cpu ({rows / ww:,.0f} rows/s)")
    print(f"  blocks of {blocked} rows:       {wb:.2f} s wall {cb:.2f} s cpu ({rows / wb:,.0f} rows/s)")
    print(f"  blocked / whole: {wb / ww:.2f}x wall, {cb / cw:.2f}x cpu; identical maxima and positions: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
