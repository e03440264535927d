"""The selection finish: a job's kept uids streamed from its sorted decisions into the subset's
single ``uids.parquet`` and ``uids.npy``, the one serial pass a selection job leaves on the
driver (docs/scale.md: its per-row cost sets the finish's time at 12.8B rows).

Synthetic ``decisions/<run>`` tables of random sorted uids, 70% kept, in shards of the jobs'
``DECISIONS_SHARD_ROWS`` rows, on a local folder or (``--bucket``) in a bucket of moto's
standalone S3 server on 127.0.0.1. Each step runs in its own process:

- ``finish``: ``curate.selection.write_kept_subset``, what every selection job runs;
- ``read floor (baseline)``: the same shards' ``(uid, kept)`` columns read and filtered, one
  shard after the other, nothing checked or written: the least any finish must do;
- ``finish from parts``: the same finish with a Spark executor (local[2], the session started
  before the clock): one task a decisions shard reads, checks and converts its kept uids
  (``curate.subset_parts``), the driver appends the parts. Its ``driver_s`` is what stays
  serial on the driver (the step less the tasks' Spark job): on a cluster the tasks spread
  over executors, so this is the figure that scales the finish to 12.8B rows.

Prints wall time, CPU seconds, ns per decision row, the driver's peak RSS, the finish over the
floor, and the growth from the smallest to the largest size. The loopback server answers a
ranged read with the cost of its whole object, so bucket times overstate per-request costs and
understate a real store's latency (tens of ms a request); the request counts hold on any store.
``--latency-ms`` puts tests/storage/store_latency.py's proxy in front of it: each request held that long,
ranges served as a store serves them, and the requests and the most in flight counted.

    python bench/selection_finish.py --sizes 2000000,4000000,8000000 [--bucket [--latency-ms 30]] [--json PATH]
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(REPO / "tests" / "storage"))
from scale import run_measured, step_sweep_parser  # noqa: E402 - bench/scale.py's /proc polling

STEPS = ("finish", "read floor (baseline)", "finish from parts")
KEPT_FRACTION = 0.7


def build(root: str, rows: int, seed: int = 0, kept_fraction: float = KEPT_FRACTION) -> int:
    """``decisions/run`` of ``rows`` sorted random uids in the dataset at ``root`` (a folder or
    a URI: committed as a job's shards are); returns the kept count."""
    from curate.selection import DECISIONS_SHARD_ROWS
    from curate.subset_records import hex_uids, sort_records
    from curate.tables import Dataset
    from curate.tables.atomic import write_parquet_atomic
    from curate.uid import DATACOMP_DTYPE

    rng = np.random.default_rng(seed)
    records = np.empty(rows, DATACOMP_DTYPE)
    records["f0"], records["f1"] = rng.integers(0, 2**63, rows, np.uint64), rng.integers(0, 2**63, rows, np.uint64)
    records = sort_records(records)
    kept = rng.random(rows) < kept_fraction
    for s, start in enumerate(range(0, rows, DECISIONS_SHARD_ROWS)):
        k = kept[start:start + DECISIONS_SHARD_ROWS]
        n = len(k)
        table = pa.table({"uid": hex_uids(records[start:start + n]), "stage": pa.array(["clip_score"] * n),
                          "kept": pa.array(k), "reason": pa.array(np.where(k, "kept", "low_clip_score")),
                          "value": pa.array(rng.random(n)), "detail": pa.nulls(n, pa.string())})
        write_parquet_atomic(table, Dataset(root).shard_path("decisions/run", s))
    return int(kept.sum())


def step(root: str, name: str, kept: int) -> dict:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from curate.tables import Dataset

    ds = Dataset(root)
    executor, tasks_s = None, [0.0]
    if name == "finish from parts":
        from curate.engine.spark import SparkExecutor, get_session

        class Timed(SparkExecutor):  # the real executor; its task jobs timed apart from the driver's part
            def map_tasks(self, tasks, fn, description=""):
                t = time.perf_counter()
                try:
                    return super().map_tasks(tasks, fn, description)
                finally:
                    tasks_s[0] += time.perf_counter() - t

        import curate.subset_parts

        curate.subset_parts.PARTS_MIN_SLOTS = 1  # local[2] has 2 slots: parts all the same, to time them
        executor = Timed(get_session(master="local[2]", app_name="bench-finish"))
        executor.map_tasks([{}], lambda t: t)  # the first Python worker started before the clock
        tasks_s[0] = 0.0
    t0 = time.perf_counter()
    if name.startswith("finish"):
        from curate.selection import write_kept_subset

        write_kept_subset(ds, "run", "final", kept, {"stage": "bench"}, executor=executor)
        from curate.storage import read_bytes

        got = json.loads(read_bytes(str(ds.path("subsets/final/_manifest.json"))))["count"]
    else:
        got = 0
        for path in ds.shards("decisions/run"):
            t = pq.read_table(ds.open_shard(path), columns=["uid", "kept"])
            got += len(t.column("uid").filter(pc.fill_null(t.column("kept"), False)))
    assert got == kept, (got, kept)
    inner = time.perf_counter() - t0
    return {"inner_s": inner, **({"tasks_s": tasks_s[0], "driver_s": inner - tasks_s[0]} if executor else {})}


def main() -> None:
    ap = step_sweep_parser(__doc__, "2000000,4000000,8000000")
    ap.add_argument("--bucket", action="store_true", help="the decisions in a bucket of a loopback S3 server")
    ap.add_argument("--latency-ms", type=float, default=None,
                    help="with --bucket: each request held this long by a proxy that serves ranges as a store does "
                         "(tests/storage/store_latency.py)")
    ap.add_argument("--kept-fraction", type=float, default=KEPT_FRACTION, help="decisions kept (default 0.7)")
    ap.add_argument("--repeat", type=int, default=2, help="runs of each step per size (best kept)")
    ap.add_argument("--kept", type=int, default=None, help=__import__("argparse").SUPPRESS)
    a = ap.parse_args()
    if a.step:
        print("RESULT " + json.dumps(step(a.root, a.step, a.kept)))
        return
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench-finish-"))
    work.mkdir(parents=True, exist_ok=True)
    results = {"steps": STEPS, "sizes": {}, "bucket": a.bucket, "kept_fraction": a.kept_fraction}
    with contextlib.ExitStack() as store:
        if a.bucket:
            import boto3
            from s3kit import S3_ENV, moto_server

            os.environ.update(S3_ENV)
            os.environ["AWS_ENDPOINT_URL"] = store.enter_context(moto_server(work))
            boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).create_bucket(Bucket="bench")
            if a.latency_ms is not None:
                from store_latency import latency_proxy  # tests/storage, on the path above

                proxy, stats = store.enter_context(latency_proxy(os.environ["AWS_ENDPOINT_URL"], a.latency_ms / 1000))
                results["latency_ms"] = a.latency_ms
        store.callback(lambda: None if a.workdir else shutil.rmtree(work, ignore_errors=True))
        for rows in [int(s) for s in a.sizes.split(",")]:
            root = f"s3://bench/pool-{rows}" if a.bucket else str(work / f"pool-{rows}")
            kept = build(root, rows, kept_fraction=a.kept_fraction)
            per = {}
            for name in STEPS:
                best = None
                for _ in range(a.repeat):
                    env = dict(os.environ)
                    if a.latency_ms is not None:  # the steps through the proxy (the build went straight in)
                        env["AWS_ENDPOINT_URL"] = proxy
                        stats.reset()
                    r, done = run_measured([sys.executable, __file__, "--step", name, "--root", root,
                                            "--kept", str(kept)], env)
                    if a.latency_ms is not None:
                        r.update(requests=stats.requests, most_in_flight=stats.most_in_flight)
                    if done.returncode != 0:
                        raise SystemExit(f"{name} at {rows:,}: {done.stderr.strip().splitlines()[-1]}")
                    r.update(json.loads(done.stdout.split("RESULT ", 1)[1]))
                    best = r if best is None or r["inner_s"] < best["inner_s"] else best
                best["ns_per_row"] = best["inner_s"] / rows * 1e9
                per[name] = best
                print(f"{rows:>10,} {name:24s} {best['inner_s']:7.2f} s in the step ({best['wall_s']:.2f} s process, "
                      f"{best['cpu_s']:.2f} CPU s)  {best['ns_per_row']:6.0f} ns/row  driver peak "
                      f"{best['driver_peak_rss'] / 2**20:6.0f} MiB"
                      + (f"  {best['requests']} requests, at most {best['most_in_flight']} at once"
                         if "requests" in best else "")
                      + (f"  tasks {best['tasks_s']:.2f} s, driver {best['driver_s']:.2f} s "
                         f"({best['driver_s'] / rows * 1e9:.0f} ns/row)" if "driver_s" in best else ""), flush=True)
            print(f"{rows:>10,} finish / floor: {per['finish']['inner_s'] / per[STEPS[1]]['inner_s']:.2f}x; "
                  f"serial on the driver, parts / one pass: "
                  f"{per[STEPS[2]]['driver_s'] / per['finish']['inner_s']:.2f}x", flush=True)
            results["sizes"][rows] = per
            if not a.bucket:
                shutil.rmtree(root, ignore_errors=True)
    sizes = sorted(results["sizes"])
    lo, hi = results["sizes"][sizes[0]]["finish"], results["sizes"][sizes[-1]]["finish"]
    results["growth"] = {"time_per_row": hi["ns_per_row"] / lo["ns_per_row"],
                         "driver_rss": hi["driver_peak_rss"] / lo["driver_peak_rss"]}
    print(f"finish growth {sizes[0]:,} -> {sizes[-1]:,}: time per row {results['growth']['time_per_row']:.2f}x, "
          f"driver RSS {results['growth']['driver_rss']:.2f}x")
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
