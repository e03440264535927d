"""Benchmark: how every curation job grows with the pool (time per row, driver memory).

For each size (default 1M, 2M, 4M, 8M rows; ``--sizes`` to pick) a synthetic pool is written:
an input Parquet file (uid, url, real web alt-text captions replicated, stated image sizes),
a 64-d float16 embeddings table (Gaussian mixture with 10% noisy near copies, CLIP scores),
and a downloads table with img2dataset-style tars (tiny JPEG bytes, 5% exact byte copies).
Then every job runs as its own ``curate`` process, as a user types it, on Spark local mode
(``--engine spark``, the default; ``--engine local`` for the in-process engine; ``select``'s
tasks are DuckDB queries, one uid range each); ``--jobs`` picks some of them (the pool then
holds only the parts they read; ``select`` without the jobs that make its three input subsets
gets a ``samples`` table and three random subsets of 30%, 50% and 95% of the pool instead, and
``reshard`` alone the downloads and a random 10.7% subset ``final``):

    ingest | filter -f basic -f clip_score:fraction=0.3 | metadata match | metadata balance |
    cluster | dedup semantic | dedup exact | prune dbp | select | reshard

``cluster`` runs with k = N / 1000 (a fixed mean cluster size, so SemDeDup's work per row does
not grow with the pool) and a fixed 100,000-row k-means sample (``--sample-size``: the driver's
documented bound).

For every job: wall time, rows/s, CPU seconds of the whole process tree, peak RSS of the
driver process (the ``curate`` Python process) and of its whole process tree (driver + JVM +
Python workers), polled from /proc every 50 ms; then the growth factors from the smallest to
the largest size. Targets: driver peak RSS at the largest size <= 1.2x the smallest; time per
row at the largest <= 1.3x. At ``--gap-at`` rows (default 1M) the sweep also runs
bench/dedup.py's in-memory pipeline on the pool's own embeddings and prints the cluster +
dedup semantic + prune dbp jobs' wall and CPU time against it (target <= 1.5x).
``--json FILE`` writes every figure; ``--merge FILE`` (repeatable) adds the sizes of earlier
runs on the same machine to the growth table, for a sweep longer than one idle window:

    .venv/bin/python bench/scale.py --sizes 1000000,2000000 --json scale-1-2.json
    .venv/bin/python bench/scale.py --sizes 4000000 --json scale-4.json
    .venv/bin/python bench/scale.py --sizes "" --merge scale-1-2.json --merge scale-4.json --json scale.json

``--gap N`` instead measures the cluster + dedup semantic + prune dbp jobs (Parquet in and out,
Spark local mode, own processes) against bench/dedup.py's in-memory pipeline (k-means,
assignment, SemDeDup, DBP through the same library calls) on N x 512 embeddings, in the same
run: target jobs <= 1.5x the in-memory pipeline. Then the same jobs on a ``--gap-fixed`` row
pool (default 20,000): their fixed cost (process and JVM start, cold first tasks, each
finish's passes), so the jobs' per-row (marginal) cost is reported against the pipeline too.
And the three steps as stages of one ``curate run`` (a recipe from a subset of the whole pool):
one process and one session, the fixed cost paid once.

    .venv/bin/python bench/scale.py --sizes 1000000,2000000,4000000,8000000 --json scale.json
    .venv/bin/python bench/scale.py --sizes 250000,1000000 --jobs "cluster,dedup semantic,prune dbp"
    .venv/bin/python bench/scale.py --gap 1000000 --engine local
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CURATE_SHARED_DATA", REPO.parent / "shared" / "data"))
MODEL = "bench"
DIM = 64
ROWS_PER_TAR = 10_000
TARGET_RSS, TARGET_TIME = 1.2, 1.3

SPARK = ["--engine", "{engine}"]
# on a machine loaded far past its cores the driver's Python can take longer than Spark's
# default 15 s to pick up a collected result (SocketAuthServer timeout): wait longer
PATIENT = ["--conf", "spark.python.authenticate.socketTimeout=300s"]
JOBS = [
    ("ingest", ["ingest", "{work}/input", "-o", "{ds}", "--uid-col", "uid", *SPARK]),
    ("filter", ["filter", "{ds}", "-f", "basic", "-f", "clip_score:fraction=0.3", "--name", "f", *SPARK]),
    ("metadata match", ["metadata", "match", "{ds}", "-m", "{meta}", *SPARK]),
    ("metadata balance", ["metadata", "balance", "{ds}", "--t", "{t}", "--name", "balanced", *SPARK]),
    ("cluster", ["cluster", "{ds}", "-k", "{k}", "--sample-size", "{sample}", "--name", "km", *SPARK]),
    ("dedup semantic", ["dedup", "semantic", "{ds}", "--eps", "0.05", "--clusters", "km", *SPARK]),
    ("dedup exact", ["dedup", "exact", "{ds}", *SPARK]),
    ("prune dbp", ["prune", "dbp", "{ds}", "--keep-fraction", "0.5", "--clusters", "km", "--subset", "semdedup",
                   *SPARK]),
    ("select", ["select", "{ds}", "--name", "final", "--sql",
                "SELECT uid FROM subsets_f INTERSECT SELECT uid FROM subsets_dbp "
                "INTERSECT SELECT uid FROM subsets_exact_dedup", *SPARK]),
    ("reshard", ["reshard", "{ds}", "-s", "final", "-o", "{work}/shards", "--shard-size", "10000", *SPARK]),
    ("report", ["report", "{ds}", "-s", "final", "-o", "{work}/report.html", *SPARK]),
]
JOB_NAMES = [name for name, _ in JOBS]
VECTOR_JOBS = ("cluster", "dedup semantic", "prune dbp")
# the sweep's clustering: a fixed mean cluster size (SemDeDup's work per row stays flat as the
# pool grows) and a fixed k-means sample (the driver's documented bound, docs/scale.md)
ROWS_PER_CLUSTER, SAMPLE = 1000, 100_000


def write_results(path, out: dict) -> None:
    """A benchmark's results as JSON at ``path`` (its ``--json``), when one is given."""
    if path:
        path.write_text(json.dumps(out, indent=2) + "\n")
        print(f"wrote {path}")


def in_scratch(prefix: str, run, json_path=None) -> int:
    """``run(work)`` in a fresh temporary folder (removed afterwards, whatever happens); its
    results written to ``json_path`` (a benchmark's ``--json``). A bench script's exit status."""
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        out = run(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write_results(json_path, out)
    return 0


def noise_jpegs(folder: Path, n: int) -> list[Path]:
    """``n`` JPEGs of 256 x 192 noise (about 32 KB each at quality 80), 100 a sub-folder."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        p = folder / f"{i // 100:03d}" / f"{i}.jpg"
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (192, 256, 3), dtype=np.uint8)).save(p, quality=80)
        out.append(p)
    return out


def upload_folder(s3, folder: Path, bucket: str, prefix: str) -> list[str]:
    """Every file under ``folder`` put in ``bucket`` under ``prefix`` (16 at a time); the keys."""
    from curate.storage import map_objects

    files = sorted(f for f in folder.rglob("*") if f.is_file())
    keys = [prefix + f.relative_to(folder).as_posix() for f in files]
    map_objects(lambda fk: s3.upload_file(str(fk[0]), bucket, fk[1]), list(zip(files, keys)))
    return keys


# ---------------------------------------------------------------- memory polling (/proc, no psutil)
def _rss_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


_TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """utime + stime of one process so far (seconds)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / _TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        kids.setdefault(ppid, []).append(int(d))
    return kids


def _tree(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


class PeakRss(threading.Thread):
    """Peak RSS (bytes) of one process and of its process tree, and the tree's CPU seconds
    (each process's last polled utime + stime, so a process living under 50 ms is missed),
    polled until stopped."""

    def __init__(self, pid: int, every: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.driver = self.tree = 0
        self.cpu: dict[int, float] = {}
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            self.driver = max(self.driver, _rss_kib(self.pid) * 1024)
            pids = _tree(self.pid)
            self.tree = max(self.tree, sum(_rss_kib(p) for p in pids) * 1024)
            for p in pids:
                self.cpu[p] = max(self.cpu.get(p, 0.0), _cpu_s(p))
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join()


def run_measured(cmd: list[str], env: dict | None = None) -> tuple[dict, subprocess.CompletedProcess]:
    """``cmd`` run as a child process: its wall time, the CPU seconds of its whole tree (driver,
    JVM, Python workers: steadier than wall time on a busy machine), the peak RSS of the child
    and of its tree; and its exit status and output."""
    t0 = time.perf_counter()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    mon = PeakRss(p.pid)
    mon.start()
    out, err = p.communicate()
    wall = time.perf_counter() - t0
    mon.stop()
    return ({"wall_s": wall, "cpu_s": sum(mon.cpu.values()), "driver_peak_rss": mon.driver, "tree_peak_rss": mon.tree},
            subprocess.CompletedProcess(cmd, p.returncode, out, err))


def step_sweep_parser(doc: str, sizes: str) -> argparse.ArgumentParser:
    """The options of a benchmark that sweeps pool sizes and runs each step in its own process
    (itself with the hidden ``--step`` and ``--root``): ``--sizes``, ``--json``, ``--workdir``."""
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--sizes", default=sizes, help="comma-separated pool sizes")
    ap.add_argument("--json", default=None)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--step", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--root", default=None, help=argparse.SUPPRESS)
    return ap


def run_job(argv: list[str]) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "CURATE_VERBOSE"}
    r, done = run_measured([sys.executable, "-m", "curate.cli", *argv], env)
    if done.returncode != 0:  # recorded and shown; the sweep goes on with the next job
        r["error"] = f"exit {done.returncode}: " + " | ".join(done.stderr.strip().splitlines()[-3:])
    return r


# ---------------------------------------------------------------- synthetic pool
_JPEG = None


def _jpeg() -> bytes:
    global _JPEG
    if _JPEG is None:
        from PIL import Image

        buf = io.BytesIO()
        Image.new("RGB", (8, 8), (200, 60, 40)).save(buf, format="JPEG")
        _JPEG = buf.getvalue()
    return _JPEG


def build_pool(work: Path, rows: int, seed: int = 0, parts=("input", "embeddings", "downloads")) -> None:
    """input/pool.parquet, and the dataset's embeddings and downloads (+ tars) the jobs read
    (``parts``: only those; the tars are most of the build time)."""
    from curate.embedding_space.vectors import write_embeddings_table
    from curate.tables import Dataset, load_schema

    src = DATA / "alttext" / "web_alttext_10k.parquet"
    if not src.exists():
        sys.exit(f"shared data not found: {src}")
    rng = np.random.default_rng(seed)
    texts = pq.read_table(src, columns=["TEXT"]).column(0).combine_chunks().cast(pa.string())
    texts = pa.concat_arrays([texts] * -(-rows // len(texts))).slice(0, rows)
    hi = rng.integers(0, 1 << 63, rows, dtype=np.int64).astype(np.uint64)
    uids = np.char.add(np.char.zfill(np.char.mod("%x", hi), 16), np.char.zfill(np.char.mod("%x", np.arange(rows)), 16))
    uid_arr = pa.array(uids.tolist(), pa.string())
    # drawn whatever ``parts`` holds, so the embeddings are the same pool either way
    widths = rng.choice([120, 200, 256, 640, 1024, 3000], rows).astype(np.int32)
    heights = rng.choice([150, 200, 480, 768, 1000], rows).astype(np.int32)
    if "input" in parts:
        (work / "input").mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table({
            "uid": uid_arr,
            "url": pa.array(np.char.add("http://127.0.0.1/img/", np.arange(rows).astype(str)).tolist(), pa.string()),
            "text": texts,
            "original_width": pa.array(widths),
            "original_height": pa.array(heights),
        }), work / "input" / "pool.parquet", row_group_size=65536)

    ds = Dataset(work / "ds")
    order = np.argsort(uids)
    uid_sorted = uid_arr.take(pa.array(order))
    if "select_inputs" in parts:
        _select_inputs(ds, uid_arr, texts, widths, heights, seed)
    if "embeddings" in parts:
        centers = rng.standard_normal((256, DIM)).astype(np.float32) * 2.0
        x = centers[rng.integers(0, 256, rows)] + rng.standard_normal((rows, DIM), dtype=np.float32)
        dup = rng.choice(rows, rows // 10, replace=False)
        x[dup] = x[rng.integers(0, rows, len(dup))] + rng.standard_normal((len(dup), DIM), dtype=np.float32) * 0.02
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        y = x + rng.standard_normal((rows, DIM), dtype=np.float32) * 2.0
        y /= np.linalg.norm(y, axis=1, keepdims=True)

        def fsl(a):
            return pa.FixedSizeListArray.from_arrays(pa.array(a.astype(np.float16).ravel(), pa.float16()), DIM)

        write_embeddings_table(ds, f"embeddings/{MODEL}", pa.table(
            {"uid": uid_sorted, "image_embedding": fsl(x), "text_embedding": fsl(y),
             "clip_score": pa.array(np.einsum("ij,ij->i", x, y).astype(np.float32))},
            schema=load_schema("embeddings").arrow(dim=DIM)), rows_per_shard=100_000)
        del x, y
    if "downloads" not in parts:
        return
    if "reshard_inputs" in parts:  # reshard alone: about the share the select of the sweep keeps
        from curate.subset import write_subset

        write_subset(ds, "final", uid_arr.filter(pa.array(np.random.default_rng(seed + 2).random(rows) < 0.107)))

    # downloads: 97% success; 5% of images are byte copies of another row's image
    import hashlib

    ok = rng.random(rows) >= 0.03
    same_as = np.arange(rows)
    copies = rng.choice(rows, rows // 20, replace=False)
    same_as[copies] = rng.integers(0, rows, len(copies))
    base = _jpeg()
    images = ds.root / "images"
    images.mkdir(parents=True, exist_ok=True)
    shard, key, sha = [None] * rows, [None] * rows, [None] * rows
    for t0 in range(0, rows, ROWS_PER_TAR):
        name = f"images/{t0 // ROWS_PER_TAR:05d}.tar"
        with tarfile.open(ds.root / name, "w") as tf:
            for i in range(t0, min(rows, t0 + ROWS_PER_TAR)):
                if not ok[i]:
                    continue
                j = int(order[i])
                data = base + int(same_as[j]).to_bytes(8, "little")  # bytes after EOI: still a valid JPEG
                k = f"{i:09d}"
                for member, payload in ((f"{k}.jpg", data), (f"{k}.txt", b"caption"),
                                        (f"{k}.json", json.dumps({"uid": uids[j]}).encode())):
                    info = tarfile.TarInfo(member)
                    info.size = len(payload)
                    tf.addfile(info, io.BytesIO(payload))
                shard[i], key[i], sha[i] = name, k, hashlib.sha256(data).hexdigest()
    size = pa.array([8 if o else None for o in ok], pa.int32())
    ds.write_table("downloads", pa.table({
        "uid": uid_sorted, "status": pa.array(np.where(ok, "success", "failed").tolist(), pa.string()),
        "error_class": pa.array([None if o else "http_404" for o in ok], pa.string()),
        "error_message": pa.array([None if o else "404" for o in ok], pa.string()),
        "sha256": pa.array(sha, pa.string()), "width": size, "height": size,
        "original_width": size, "original_height": size,
        "shard": pa.array(shard, pa.string()), "key": pa.array(key, pa.string()),
        "attempts": pa.array(np.ones(rows, np.int32))}, schema=load_schema("downloads").arrow()),
        schema="downloads", rows_per_shard=100_000)


def _select_inputs(ds, uids: pa.Array, texts: pa.Array, widths, heights, seed: int) -> None:
    """What ``select`` reads when the jobs that make it are not run: ``samples`` (ingest's
    table) and the subsets ``f``, ``dbp``, ``exact_dedup`` as random 30%, 50%, 95% of the pool
    (about the fractions the filter, prune and exact dedup jobs keep)."""
    from curate.subset import write_subset

    n = len(uids)
    ds.write_table("samples", pa.table({
        "uid": uids, "url": pa.array(np.char.add("http://127.0.0.1/img/", np.arange(n).astype(str)).tolist()),
        "text": texts, "source_file": pa.array(["pool.parquet"] * n), "source_row": pa.array(np.arange(n)),
        "original_width": pa.array(widths), "original_height": pa.array(heights),
        "extra": pa.nulls(n, pa.string())}).sort_by("uid"), schema="samples", rows_per_shard=500_000)
    rng = np.random.default_rng(seed + 1)
    for name, frac in (("f", 0.3), ("dbp", 0.5), ("exact_dedup", 0.95)):
        write_subset(ds, name, uids.filter(pa.array(rng.random(n) < frac)))


def build_metadata(work: Path, path: Path) -> None:
    """A MetaCLIP metadata list from the smallest pool's captions (reused at every size)."""
    r = subprocess.run([sys.executable, "-m", "curate.cli", "metadata", "build", str(path), "--dataset",
                        str(work / "ds"), "--no-wordnet"], capture_output=True, text=True)
    if r.returncode:
        sys.exit(f"metadata build failed:\n{r.stderr[-3000:]}")


# ---------------------------------------------------------------- the size sweep
def sweep(sizes: list[int], workdir: Path, keep: bool, engine: str = "spark", jobs=JOB_NAMES,
          gap_at: int | None = None) -> dict:
    results: dict[str, dict] = {}
    metadata = workdir / "metadata.json"
    for n in sizes:
        work = workdir / f"n{n}"
        if work.exists():
            shutil.rmtree(work)
        t = time.perf_counter()
        needs = {"embeddings"} | ({"input"} if set(jobs) & {"ingest", "filter", "metadata match",
                                                           "metadata balance", "select", "reshard"} else set())
        if set(jobs) & {"dedup exact", "select", "reshard"}:
            needs.add("downloads")
        if set(jobs) == {"select"}:  # its inputs made directly, not by the jobs before it
            needs = {"select_inputs"}
        if set(jobs) == {"reshard"}:  # the downloads and a subset "final" made directly
            needs = {"downloads", "reshard_inputs"}
        if set(jobs) == {"report"}:  # samples, embeddings, downloads (+ tars) and "final" made directly
            needs = {"select_inputs", "embeddings", "downloads", "reshard_inputs"}
        build_pool(work, n, parts=needs)
        print(f"\n{n:,} rows: pool written in {time.perf_counter() - t:.0f} s (not timed); "
              f"load average {os.getloadavg()[0]:.1f}", flush=True)
        k = max(8, n // ROWS_PER_CLUSTER)
        subst = {"work": str(work), "ds": str(work / "ds"), "k": str(k), "sample": str(max(k, min(n, SAMPLE))),
                 "t": str(max(1, n // 500)), "meta": str(metadata), "engine": engine}
        results[str(n)] = {}
        for name, argv in JOBS:
            if name not in jobs:
                continue
            if name == "metadata match" and not metadata.exists():
                build_metadata(work, metadata)
            argv = [a.format(**subst) for a in argv]
            if engine == "spark" and "--engine" in argv:
                argv += PATIENT
            r = run_job(argv)
            r["rows_per_s"] = n / r["wall_s"]
            r["load_avg"] = os.getloadavg()[0]
            results[str(n)][name] = r
            print(f"  {name:<17} {r['wall_s']:7.1f} s {r['cpu_s']:7.1f} cpu s {r['rows_per_s']:>10,.0f} rows/s  driver peak "
                  f"{r['driver_peak_rss'] / 2**20:7.0f} MiB  tree peak {r['tree_peak_rss'] / 2**20:7.0f} MiB"
                  + (f"  FAILED {r['error']}" if "error" in r else ""), flush=True)
        if gap_at == n and all(j in results[str(n)] for j in VECTOR_JOBS):
            results[str(n)]["_gap"] = pool_gap(work / "ds", n, k, int(subst["sample"]), results[str(n)])
        if not keep:
            shutil.rmtree(work, ignore_errors=True)
    return results


def growth(results: dict) -> dict:
    sizes = sorted(int(s) for s in results)
    lo, hi = str(sizes[0]), str(sizes[-1])
    out = {}
    for name in JOB_NAMES:
        if name not in results[lo] or name not in results[hi]:
            continue
        a, b = results[lo][name], results[hi][name]
        out[name] = {"time_per_row": (b["wall_s"] / int(hi)) / (a["wall_s"] / int(lo)),
                     "cpu_per_row": (b["cpu_s"] / int(hi)) / max(a["cpu_s"] / int(lo), 1e-12),
                     "driver_peak_rss": b["driver_peak_rss"] / max(a["driver_peak_rss"], 1),
                     "tree_peak_rss": b["tree_peak_rss"] / max(a["tree_peak_rss"], 1)}
    return out


def print_growth(results: dict, g: dict) -> None:
    sizes = sorted(int(s) for s in results)
    print(f"\ngrowth {sizes[0]:,} -> {sizes[-1]:,} rows ({sizes[-1] / sizes[0]:.0f}x rows):")
    print(f"  {'job':<17}{'time/row':>10}{'cpu/row':>10}{'driver RSS':>12}{'tree RSS':>10}")
    for name, v in g.items():
        print(f"  {name:<17}{v['time_per_row']:>9.2f}x{v['cpu_per_row']:>9.2f}x{v['driver_peak_rss']:>11.2f}x"
              f"{v['tree_peak_rss']:>9.2f}x")
    rss_ok = all(v["driver_peak_rss"] <= TARGET_RSS for v in g.values())
    t_ok = all(v["time_per_row"] <= TARGET_TIME for v in g.values())
    worst_r = max(g.items(), key=lambda kv: kv[1]["driver_peak_rss"])
    worst_t = max(g.items(), key=lambda kv: kv[1]["time_per_row"])
    print(f"target driver peak RSS <= {TARGET_RSS}x: {'met' if rss_ok else 'NOT met'} "
          f"(worst {worst_r[0]} {worst_r[1]['driver_peak_rss']:.2f}x); "
          f"time per row <= {TARGET_TIME}x: {'met' if t_ok else 'NOT met'} "
          f"(worst {worst_t[0]} {worst_t[1]['time_per_row']:.2f}x)")


# ---------------------------------------------------------------- jobs vs the in-memory pipeline
def pool_gap(ds_root: Path, n: int, k: int, sample: int, res: dict) -> dict:
    """bench/dedup.py's in-memory pipeline (k-means on ``sample`` rows, assignment, SemDeDup,
    DBP) on this pool's image embeddings, against the cluster + dedup semantic + prune dbp jobs
    just measured (eps 0.05, keep fraction 0.5 as the jobs ran): ratio of wall and CPU time."""
    sys.path.insert(0, str(REPO / "bench"))
    from dedup import library_pipeline

    from curate.embedding_space.vectors import list_to_matrix

    shards = sorted((ds_root / "embeddings" / MODEL).glob("*.parquet"))
    t = pa.concat_tables([pq.read_table(p, columns=["uid", "image_embedding"]) for p in shards])
    x16 = list_to_matrix(t.column("image_embedding"))
    uids = np.asarray(t.column("uid").to_pylist(), dtype=object)
    del t
    c0, t0 = time.process_time(), time.perf_counter()
    tm, _, _ = library_pipeline(x16, uids, k, 20, -(-sample // k), 0.05, 0.5)
    lib = {"wall_s": time.perf_counter() - t0, "cpu_s": time.process_time() - c0, "stages_s": tm}
    jobs_wall = sum(res[j]["wall_s"] for j in VECTOR_JOBS)
    jobs_cpu = sum(res[j]["cpu_s"] for j in VECTOR_JOBS)
    out = {"library": lib, "jobs_wall_s": jobs_wall, "jobs_cpu_s": jobs_cpu,
           "ratio": jobs_wall / lib["wall_s"], "cpu_ratio": jobs_cpu / max(lib["cpu_s"], 1e-9)}
    print(f"  in-memory pipeline {lib['wall_s']:.1f} s wall / {lib['cpu_s']:.1f} s cpu; cluster + dedup semantic + "
          f"prune dbp jobs {jobs_wall:.1f} s / {jobs_cpu:.1f} s cpu: {out['ratio']:.2f}x wall, "
          f"{out['cpu_ratio']:.2f}x cpu (target <= 1.5x)", flush=True)
    return out


def _gap_uids(n: int, seed: int) -> np.ndarray:
    # random uids: bench/dedup.py's (hi = i * golden, lo = i) cancel inside the sampling hash's
    # first mix (hi ^ lo * golden), so every row would hash alike
    rng = np.random.default_rng(seed)
    return np.array([f"{a:016x}{b:016x}" for a, b in zip(rng.integers(0, 1 << 63, n).tolist(),
                                                         rng.integers(0, 1 << 63, n).tolist())], dtype=object)


def _gap_pool(root: Path, x16: np.ndarray, uids: np.ndarray):
    """The embeddings table the gap's jobs read: 100,000-row shards sorted by uid, vectors PLAIN."""
    from curate.embedding_space.vectors import write_vectors_parquet
    from curate.tables import Dataset, load_schema

    ds = Dataset(root)
    schema = load_schema("embeddings").arrow(dim=512)
    order = np.argsort(uids)
    x16, uids = x16[order], uids[order]
    for i, s in enumerate(range(0, len(uids), 100_000)):
        e = min(len(uids), s + 100_000)
        emb = pa.FixedSizeListArray.from_arrays(pa.array(x16[s:e].reshape(-1)), 512)
        write_vectors_parquet(pa.Table.from_arrays([pa.array(uids[s:e].tolist(), pa.string()), emb, emb,
                                                   pa.array(np.ones(e - s, np.float32))], schema=schema),
                              ds.shard_path(f"embeddings/{MODEL}", i))
    return ds


def _gap_jobs(ds, k: int, ppc: int, engine: str, label: str) -> dict:
    """cluster, dedup semantic and prune dbp as their own ``curate`` processes on ``ds``."""
    jobs = {}
    for name, argv in (("cluster", ["cluster", str(ds.root), "-k", str(k), "--max-points-per-centroid", str(ppc),
                                    *SPARK, *PATIENT]),
                       ("dedup semantic", ["dedup", "semantic", str(ds.root), "--eps", "0.01", *SPARK, *PATIENT]),
                       ("prune dbp", ["prune", "dbp", str(ds.root), "--keep-fraction", "0.5", "--subset", "semdedup",
                                      *SPARK, *PATIENT])):
        argv = [a.format(engine=engine) for a in argv]
        if engine != "spark":
            argv = [a for a in argv if a not in PATIENT]
        jobs[name] = run_job(argv)
        print(f"  {label} job {name:<15} {jobs[name]['wall_s']:6.1f} s wall {jobs[name]['cpu_s']:6.1f} s cpu  "
              f"driver peak {jobs[name]['driver_peak_rss'] / 2**20:.0f} MiB"
              + (f"  FAILED {jobs[name]['error']}" if "error" in jobs[name] else ""), flush=True)
    return jobs


def _gap_recipe(ds, uids: np.ndarray, k: int, ppc: int, engine: str, label: str) -> dict:
    """The same three steps as stages of one ``curate run`` (one process, one session: the
    fixed cost paid once), from a subset holding every uid of the pool."""
    from curate.subset import write_subset

    write_subset(ds, "pool", pa.array(uids.tolist(), pa.string()))
    recipe = Path(ds.root) / "gap-recipe.yaml"
    recipe.write_text(f"""name: gap
dataset: {ds.root}
embedding_model: {MODEL}
input: subset:pool
output: gap
stages:
  - kind: cluster
    k: {k}
    max_points_per_centroid: {ppc}
  - kind: semdedup
    eps: 0.01
  - kind: prune
    keep_fraction: 0.5
""")
    argv = ["run", str(recipe), "--no-cache", "--engine", engine, *(PATIENT if engine == "spark" else [])]
    r = run_job(argv)
    print(f"  {label} one `curate run` (cluster, semdedup, prune) {r['wall_s']:6.1f} s wall {r['cpu_s']:6.1f} s cpu  "
          f"driver peak {r['driver_peak_rss'] / 2**20:.0f} MiB" + (f"  FAILED {r['error']}" if "error" in r else ""),
          flush=True)
    return r


def gap(n: int, workdir: Path, k: int, ppc: int, engine: str = "spark", fixed_rows: int = 20_000) -> dict:
    """The three vector jobs against bench/dedup.py's in-memory pipeline on the same n x 512
    matrix; then, in the same run, the same jobs on a ``fixed_rows`` pool (k = fixed_rows / 1000):
    what they cost whatever the pool (process and JVM start, cold first tasks, the passes of
    each finish), so the figures split into fixed and per-row (marginal) cost."""
    sys.path.insert(0, str(REPO / "bench"))
    from dedup import library_pipeline, make_data

    x16, _, _, _ = make_data(n, 512, 1000, 0.1)
    uids = _gap_uids(n, 1)
    print(f"gap: {n:,} x 512 float16, k={k}, sample k x {ppc}; load average {os.getloadavg()[0]:.1f}", flush=True)
    c0 = time.process_time()
    t = time.perf_counter()
    tm, cpu, res = library_pipeline(x16, uids, k, 20, ppc, 0.01, 0.5)
    lib = {"wall_s": time.perf_counter() - t, "cpu_s": time.process_time() - c0, "stages_s": tm}
    print(f"  in-memory pipeline (k-means + assignment + SemDeDup + DBP): {lib['wall_s']:.1f} s wall, "
          f"{lib['cpu_s']:.1f} s cpu  {({key: round(v, 1) for key, v in tm.items()})}", flush=True)
    ds = _gap_pool(workdir / "gap", x16, uids)
    del x16
    jobs = _gap_jobs(ds, k, ppc, engine, f"{n:,} rows:")
    recipe = _gap_recipe(ds, uids, k, ppc, engine, f"{n:,} rows:")
    shutil.rmtree(ds.root, ignore_errors=True)
    small = None
    if fixed_rows:
        xs, _, _, _ = make_data(fixed_rows, 512, max(2, fixed_rows // 1000), 0.1)
        ds = _gap_pool(workdir / "gap-small", xs, _gap_uids(fixed_rows, 2))
        small = _gap_jobs(ds, max(2, fixed_rows // 1000), ppc, engine, f"{fixed_rows:,} rows:")
        shutil.rmtree(ds.root, ignore_errors=True)
    total = sum(j["wall_s"] for j in jobs.values())
    total_cpu = sum(j["cpu_s"] for j in jobs.values())
    ratio = total / lib["wall_s"]
    print(f"  jobs total {total:.1f} s wall / {total_cpu:.1f} s cpu vs in-memory {lib['wall_s']:.1f} s wall / "
          f"{lib['cpu_s']:.1f} s cpu: {ratio:.2f}x wall, {total_cpu / max(lib['cpu_s'], 1e-9):.2f}x cpu "
          f"(target <= 1.5x: {'met' if ratio <= 1.5 else 'NOT met'}); load average {os.getloadavg()[0]:.1f}")
    print(f"  the three as one `curate run`: {recipe['wall_s']:.1f} s wall / {recipe['cpu_s']:.1f} s cpu = "
          f"{recipe['wall_s'] / lib['wall_s']:.2f}x wall, {recipe['cpu_s'] / max(lib['cpu_s'], 1e-9):.2f}x cpu "
          f"of the in-memory pipeline")
    out = {"rows": n, "k": k, "ppc": ppc, "library": lib, "jobs": jobs, "jobs_total_s": total,
           "jobs_total_cpu_s": total_cpu, "ratio": ratio, "cpu_ratio": total_cpu / max(lib["cpu_s"], 1e-9),
           "recipe": recipe, "recipe_ratio": recipe["wall_s"] / lib["wall_s"]}
    if small is not None:
        fixed = sum(j["wall_s"] for j in small.values())
        fixed_cpu = sum(j["cpu_s"] for j in small.values())
        out.update(fixed_rows=fixed_rows, small_jobs=small, fixed_s=fixed, fixed_cpu_s=fixed_cpu,
                   marginal_ratio=(total - fixed) / lib["wall_s"],
                   marginal_cpu_ratio=(total_cpu - fixed_cpu) / max(lib["cpu_s"], 1e-9))
        print(f"  fixed cost (the same jobs on {fixed_rows:,} rows): {fixed:.1f} s wall / {fixed_cpu:.1f} s cpu "
              f"({fixed / lib['wall_s']:.2f}x the in-memory pipeline by itself); per-row (marginal) cost "
              f"{total - fixed:.1f} s wall / {total_cpu - fixed_cpu:.1f} s cpu = {out['marginal_ratio']:.2f}x wall, "
              f"{out['marginal_cpu_ratio']:.2f}x cpu of the in-memory pipeline")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="1000000,2000000,4000000,8000000", help="comma-separated pool sizes")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the pools (default: deleted after each size)")
    ap.add_argument("--json", type=Path, default=None, help="write every figure here")
    ap.add_argument("--gap", type=int, default=0, help="rows for the jobs-vs-in-memory comparison instead")
    ap.add_argument("--gap-k", type=int, default=700)
    ap.add_argument("--gap-ppc", type=int, default=64)
    ap.add_argument("--gap-fixed", type=int, default=20_000,
                    help="rows of the small pool the gap's jobs also run on, for their fixed cost (0: skip)")
    ap.add_argument("--engine", default="spark", choices=("spark", "local"),
                    help="engine of every job (select is DuckDB either way)")
    ap.add_argument("--jobs", default=",".join(JOB_NAMES), help="comma-separated jobs to run (default: all)")
    ap.add_argument("--gap-at", type=int, default=1_000_000,
                    help="pool size at which the sweep also runs the in-memory pipeline (0: never)")
    ap.add_argument("--merge", type=Path, action="append", default=[],
                    help="an earlier run's --json: its sizes join this run's in the growth table (this run's "
                         "figures win where both measured a job at a size), so a sweep too long for one idle window can be run "
                         "a few sizes at a time on the same machine; repeatable")
    a = ap.parse_args(argv)
    work = a.workdir or Path(tempfile.mkdtemp(prefix="curate-scale-"))
    info = {"machine": f"{platform.machine()}, {os.cpu_count()} cores", "python": platform.python_version(),
            "load_avg_start": os.getloadavg()[0], "engine": a.engine,
            "spark": "local mode (--engine spark, local[*])" if a.engine == "spark" else None}
    print(f"machine: {info['machine']}, load average {info['load_avg_start']:.1f}; work in {work}")
    if a.gap:
        out = {"info": info, "gap": gap(a.gap, work, a.gap_k, a.gap_ppc, a.engine, a.gap_fixed)}
    else:
        sizes = [int(s) for s in a.sizes.split(",") if s.strip()]
        jobs = [j.strip() for j in a.jobs.split(",")]
        unknown = sorted(set(jobs) - set(JOB_NAMES))
        if unknown:
            ap.error(f"unknown jobs {unknown}; choose from {JOB_NAMES}")
        res = sweep(sizes, work, a.keep, a.engine, jobs, a.gap_at or None) if sizes else {}
        runs = [info]
        for earlier in a.merge:  # this run wins, then the files in the order given
            old = json.loads(earlier.read_text())
            runs.insert(-1, {**old["info"], "file": str(earlier), "sizes": old["sizes"]})
            res = {size: {**old["results"].get(size, {}), **res.get(size, {})}
                   for size in {*old["results"], *res}}  # per size and job
        g = growth(res)
        print_growth(res, g)
        out = {"info": info, "sizes": sorted(int(s) for s in res), "results": res, "growth": g,
               **({"runs": runs} if a.merge else {})}
    out["info"]["load_avg_end"] = os.getloadavg()[0]
    write_results(a.json, out)
    if not a.keep and not a.workdir:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
