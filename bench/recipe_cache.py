"""Recipe cache: a re-run with every stage cached vs the first run, on a synthetic pool.

Prints the wall time of the first run, of a fully cached re-run and of a run after
changing the last stage, with ratios against the first run (same process, same data).

    python bench/recipe_cache.py [N_SAMPLES]
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa


def main(n: int = 500_000) -> None:
    from curate.recipe import load_recipe, run_recipe
    from curate.recipe.cache import subset_hash
    from curate.tables import Dataset

    with tempfile.TemporaryDirectory() as tmp:
        ds = Dataset(Path(tmp) / "pool")
        rng = np.random.default_rng(0)
        hi = rng.integers(0, 2**63, size=n, dtype=np.int64)
        uids = [f"{int(h):016x}{i:016x}" for i, h in enumerate(hi)]
        words = rng.integers(1, 30, size=n)
        ds.write_table("samples", pa.table({
            "uid": uids, "url": [f"http://x/{i}" for i in range(n)], "text": ["w " * int(k) for k in words],
            "source_file": ["f"] * n, "source_row": pa.array(np.arange(n), pa.int64()),
            "original_width": pa.array(rng.integers(50, 1000, n).astype(np.int32)),
            "original_height": pa.array(rng.integers(50, 1000, n).astype(np.int32)),
            "extra": pa.nulls(n, pa.string())}), schema="samples")
        recipe = Path(tmp) / "r.yaml"

        def write(frac: float) -> None:
            recipe.write_text(f"""name: bench\ndataset: {ds.root}\ninput: all\nstages:
  - kind: sql
    name: words
    query: SELECT uid FROM samples WHERE length(text) > 10
  - kind: sql
    name: size
    query: SELECT uid FROM input_subset JOIN samples USING (uid) WHERE least(original_width, original_height) >= 200
  - kind: sample
    fraction: {frac}
""")

        def timed(label: str, base: float | None = None) -> float:
            t = time.perf_counter()
            lin = run_recipe(load_recipe(recipe), engine="local", quiet=True)
            dt = time.perf_counter() - t
            cached = sum(s["cached"] for s in lin["stages"])
            ratio = f"  {dt / base:.3f}x of first run" if base else ""
            print(f"{label:<28} {dt:8.2f}s  stages cached {cached}/{len(lin['stages'])}  out {lin['output_count']:,}{ratio}")
            return dt

        write(0.5)
        first = timed(f"first run ({n:,} samples)")
        timed("re-run, all cached", first)
        write(0.4)
        timed("last stage changed", first)
        arr = pa.array(uids)
        t = time.perf_counter()
        subset_hash(arr)
        dt = time.perf_counter() - t
        print(f"subset_hash: {n / dt / 1e6:.2f} M uids/s")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500_000)
