"""`curate download`'s bookkeeping at pool scale, without fetching an image.

Two steps of a download hold the pool's rows: the todo (``samples`` anti-joined with the uids
the complete image shards attempted, written by the workers to ``_download/input/``) and the
``downloads`` table (the samples' uids and every shard's results meet in groups of a uid
prefix; the workers write the table sorted by uid). Each runs here as its own process, as in a
rerun of a download that stopped half-way: half of each pool was attempted before (img2dataset's
per-shard result files are written as it writes them, 10,000 rows a shard, 5% failed), so
the todo is the other half.

Baseline, in the same run: the driver-side version the download had before it moved into the
engine (the driver reads the samples' uid, url and text and every shard's results, and
anti-joins them with pyarrow), whose memory grows with the pool.

Prints wall time, rows/s, peak RSS of the driver and of the process tree per step and pool
size, and the growth from the smallest to the largest size (targets as bench/scale.py's:
driver RSS <= 1.2x, time per row <= 1.3x). ``--json PATH`` writes the numbers.

    python bench/download_bookkeeping.py --sizes 1000000,2000000,4000000 [--engine spark|local]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from scale import TARGET_RSS, TARGET_TIME, run_measured, step_sweep_parser  # noqa: E402 - bench/scale.py's /proc polling

SHARD_ROWS = 500_000  # samples shards
IMAGE_SHARD = 10_000  # img2dataset's samples per image shard
STEPS = ("todo", "table", "driver-side todo (before)")


# ---------------------------------------------------------------- the pool
def build(root: Path, rows: int, seed: int = 0) -> None:
    """``samples`` (uids sorted, in shards of SHARD_ROWS) and the result files of the image
    shards that attempted the first half of the samples table (in its order)."""
    from curate.download.job import IMAGES, shard_name
    from curate.tables import Dataset, load_schema, write_parquet_atomic

    rng = np.random.default_rng(seed)
    hi, lo = rng.integers(0, 1 << 63, rows, dtype=np.int64), rng.integers(0, 1 << 63, rows, dtype=np.int64)
    uids = np.sort(np.char.add(np.char.zfill(np.char.mod("%x", hi), 16), np.char.zfill(np.char.mod("%x", lo), 16)))
    ds = Dataset(root)
    schema = load_schema("samples").arrow()
    for s, start in enumerate(range(0, rows, SHARD_ROWS)):
        i = np.arange(start, min(rows, start + SHARD_ROWS))
        n = len(i)
        write_parquet_atomic(pa.table({
            "uid": pa.array(uids[i].tolist(), pa.string()),
            "url": pa.array(np.char.add("http://127.0.0.1/img/", i.astype(str)).tolist(), pa.string()),
            "text": pa.array(np.char.add("a photo of a thing, number ", i.astype(str)).tolist(), pa.string()),
            "source_file": pa.array(["pool.parquet"] * n, pa.string()), "source_row": pa.array(i, pa.int64()),
            "original_width": pa.nulls(n, pa.int32()), "original_height": pa.nulls(n, pa.int32()),
            "extra": pa.nulls(n, pa.string())}, schema=schema), ds.shard_path("samples", s))
    images = ds.root / IMAGES
    images.mkdir(parents=True, exist_ok=True)
    for shard, start in enumerate(range(0, rows // 2, IMAGE_SHARD)):
        i = np.arange(start, min(rows // 2, start + IMAGE_SHARD))
        n = len(i)
        ok = rng.random(n) >= 0.05
        size = pa.array(np.where(ok, 256, 0).astype(np.int32), mask=~ok)
        name = shard_name(shard)
        pq.write_table(pa.table({
            "key": pa.array([f"{name}{j:04d}" for j in range(n)], pa.string()),
            "status": pa.array(np.where(ok, "success", "failed_to_download").tolist(), pa.string()),
            "error_message": pa.array([None if o else "HTTP Error 404: Not Found" for o in ok], pa.string()),
            "width": size, "height": size, "original_width": size, "original_height": size,
            "sha256": pa.array([f"{shard:08x}{j:056x}" if o else None for j, o in enumerate(ok)], pa.string()),
            "url": pa.array(np.char.add("http://127.0.0.1/img/", i.astype(str)).tolist(), pa.string()),
            "uid": pa.array(uids[i].tolist(), pa.string())}), images / f"{name}.parquet")
        (images / f"{name}_stats.json").write_text(json.dumps({"count": n, "successes": int(ok.sum())}))


# ---------------------------------------------------------------- one step, in its own process
def step(root: str, name: str, engine: str) -> dict:
    from curate import storage
    from curate.download.job import WORK
    from curate.tables import Dataset

    ds = Dataset(root)
    storage.remove_tree(ds.path(WORK))
    if name == "driver-side todo (before)":
        return _driver_side_todo(ds)
    from curate.download.results import write_downloads_table
    from curate.download.todo import samples_frame, write_todo
    from curate.engine.factory import open_executor

    ex = open_executor(engine, "local[2]" if engine == "spark" else None, [], app_name="bench-download")
    samples = samples_frame(ds, ex)
    if name == "todo":
        rows, _, _ = write_todo(ds, ex, samples, False, None, IMAGE_SHARD)
        return {"rows": rows}
    counts = write_downloads_table(ds, ex, samples, ds.count("samples"))
    return {"rows": counts["samples"], "success": counts["success"]}


def _driver_side_todo(ds) -> dict:
    """What the download did before: every sample and every attempted uid in the driver."""
    import pyarrow.compute as pc

    from curate.download.job import IMAGES, complete_shards, shard_name
    from curate.tables import write_parquet_atomic

    samples = pa.concat_tables(pq.read_table(p, columns=["uid", "url", "text"]) for p in ds.shards("samples"))
    attempted = pa.concat_tables(pq.read_table(ds.root / IMAGES / f"{shard_name(i)}.parquet", columns=["uid"])
                                 for i in complete_shards(ds))
    todo = samples.filter(pc.invert(pc.is_in(samples.column("uid"), value_set=attempted.column("uid"))))
    write_parquet_atomic(todo, ds.root / "_download" / "input.parquet")
    return {"rows": todo.num_rows}


def run_step(root: Path, name: str, engine: str) -> dict:
    r, done = run_measured([sys.executable, __file__, "--step", name, "--root", str(root), "--engine", engine])
    if done.returncode != 0:
        raise SystemExit(f"{name} failed:\n{done.stderr[-3000:]}")
    return {**json.loads(done.stdout.strip().splitlines()[-1]), **r}


# ---------------------------------------------------------------- the sweep
def sweep(sizes: list[int], engine: str, work: Path) -> dict:
    results: dict[str, dict] = {}
    for n in sizes:
        root = work / f"pool-{n}"
        t0 = time.perf_counter()
        build(root, n)
        print(f"pool {n:,}: built in {time.perf_counter() - t0:.0f} s", flush=True)
        results[str(n)] = {}
        for name in STEPS:
            r = run_step(root, name, engine)
            results[str(n)][name] = r
            print(f"  {name:<26} {r['wall_s']:7.1f} s  {r['rows'] / r['wall_s']:10,.0f} rows/s  driver "
                  f"{r['driver_peak_rss'] / 2**20:7.0f} MiB  tree {r['tree_peak_rss'] / 2**20:7.0f} MiB", flush=True)
        if n != sizes[-1]:
            shutil.rmtree(root)
    return results


def growth(results: dict, sizes: list[int]) -> dict:
    small, large = results[str(sizes[0])], results[str(sizes[-1])]
    scale = sizes[-1] / sizes[0]
    out = {}
    for name in STEPS:
        a, b = small[name], large[name]
        out[name] = {"driver_rss": b["driver_peak_rss"] / a["driver_peak_rss"],
                     "time_per_row": (b["wall_s"] / sizes[-1]) / (a["wall_s"] / sizes[0]), "rows": scale}
    return out


def main(argv=None) -> int:
    ap = step_sweep_parser(__doc__, "1000000,2000000,4000000")
    ap.add_argument("--engine", default="spark", choices=["spark", "local"])
    a = ap.parse_args(argv)
    if a.step:
        print(json.dumps(step(a.root, a.step, a.engine)))
        return 0
    sizes = [int(s) for s in a.sizes.split(",")]
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-download-"))
    try:
        results = sweep(sizes, a.engine, work)
    finally:
        if not a.workdir:
            shutil.rmtree(work, ignore_errors=True)
    g = growth(results, sizes)
    print(f"\ngrowth {sizes[0]:,} -> {sizes[-1]:,} rows (x{sizes[-1] / sizes[0]:.0f}); targets: driver RSS <= "
          f"{TARGET_RSS}x, time per row <= {TARGET_TIME}x")
    for name, v in g.items():
        ok = "meets" if v["driver_rss"] <= TARGET_RSS and v["time_per_row"] <= TARGET_TIME else "misses"
        print(f"  {name:<26} driver RSS x{v['driver_rss']:.2f}  time per row x{v['time_per_row']:.2f}  ({ok} the targets)")
    if a.json:
        Path(a.json).write_text(json.dumps({"engine": a.engine, "sizes": sizes, "results": results, "growth": g,
                                            "cpus": os.cpu_count()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
