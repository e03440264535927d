"""Benchmark: the README chain on a small pool (default 30,000 rows) under ``--engine auto``
(the default) versus ``--engine local`` (and optionally ``--engine spark``), plus DataComp's
filtering for the steps it shares with curate.

The pool: real web alt-text captions (../shared/data/alttext, replicated to --rows) with random
image sizes, and a synthetic 512-d float16 embeddings table (a Gaussian mixture with noisy
near-copies; embedding itself needs images and a model and is benchmarked in bench/embed.py).

Each curate step runs as its own ``python -m curate.cli ...`` process, as a user types it, so
its time includes interpreter start-up (and the JVM's, on Spark). Steps, in README order:

    filter -f basic -f clip_score:fraction=0.3 | metadata build/match/balance | cluster -k 100 |
    dedup semantic --eps 0.05 | prune dbp --keep-fraction 0.5

DataComp baseline: DataComp's scripts (baselines/apply_filter.py) are not installable here, so
their basic and CLIP-score steps are rendered in this process with pandas/numpy, following
DataComp's code: pandas reads the metadata (uid, text, sizes, CLIP score), ``df.text.apply``
runs fastText language ID per caption (the same model curate loads), word and character counts,
the size and aspect-ratio rules, the CLIP-score quantile, and the kept uids saved as DataComp's
sorted (u8, u8) .npy. It runs in this warm process (no interpreter start-up), which favours it,
and again as its own process, as DataComp's script runs: once importing only what the rendering
uses (pandas, numpy, fastText) and once first importing what apply_filter.py imports at its top
(fasttext, fsspec, nltk, numpy, pandas, torch), so `curate filter` as a process is compared
with it as a process.

Targets: every step under auto within 1.2x of local; the shared steps (filter) faster than the
DataComp rendering.

    .venv/bin/python bench/small_pool.py [--rows 30000] [--spark]
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CURATE_SHARED_DATA", REPO.parent / "shared" / "data"))
MODEL = "bench"

CHAIN = [
    ("filter", ["filter", "{ds}", "-f", "basic", "-f", "clip_score:fraction=0.3", "--name", "f"]),
    ("metadata build", ["metadata", "build", "{ds}/metadata.json", "--dataset", "{ds}", "--no-wordnet"]),
    ("metadata match", ["metadata", "match", "{ds}", "-m", "{ds}/metadata.json"]),
    ("metadata balance", ["metadata", "balance", "{ds}", "--t", "100", "--name", "balanced"]),
    ("cluster", ["cluster", "{ds}", "-k", "100", "--name", "c100"]),
    ("dedup semantic", ["dedup", "semantic", "{ds}", "--eps", "0.05", "--clusters", "c100"]),
    ("prune dbp", ["prune", "dbp", "{ds}", "--keep-fraction", "0.5", "--clusters", "c100"]),
]
SHARED_WITH_DATACOMP = {"filter"}


def build_pool(root: Path, rows: int, dim: int = 512, seed: int = 0) -> None:
    from curate.embedding_space.vectors import write_embeddings_table
    from curate.tables import Dataset, load_schema

    src = DATA / "alttext" / "web_alttext_10k.parquet"
    if not src.exists():
        sys.exit(f"shared data not found: {src}")
    texts = pq.read_table(src, columns=["TEXT"]).column(0).combine_chunks()
    texts = pa.concat_arrays([texts] * -(-rows // len(texts))).slice(0, rows)
    rng = np.random.default_rng(seed)
    uids = [f"{hi:016x}{i:016x}" for i, hi in enumerate(rng.integers(0, 1 << 62, rows).tolist())]
    ds = Dataset(root)
    t = pa.table({
        "uid": pa.array(uids, pa.string()),
        "url": pa.array([f"http://127.0.0.1/{i}.jpg" for i in range(rows)], pa.string()),
        "text": texts.cast(pa.string()),
        "source_file": pa.array(["/in/pool.parquet"] * rows, pa.string()),
        "source_row": pa.array(range(rows), pa.int64()),
        "original_width": pa.array(rng.choice([120, 200, 256, 640, 1024, 3000], rows), pa.int32()),
        "original_height": pa.array(rng.choice([150, 200, 480, 768, 1000], rows), pa.int32()),
        "extra": pa.nulls(rows, pa.string()),
    }).sort_by("uid")
    ds.write_table("samples", t, schema="samples")
    centers = rng.standard_normal((64, dim)) * 2.0
    x = centers[rng.integers(0, 64, rows)] + rng.standard_normal((rows, dim))
    dup = rng.choice(rows, rows // 5, replace=False)
    x[dup] = x[rng.integers(0, rows, len(dup))] + rng.standard_normal((len(dup), dim)) * 0.02
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y = x + rng.standard_normal((rows, dim)) * 2.0
    y /= np.linalg.norm(y, axis=1, keepdims=True)

    def fsl(a):
        return pa.FixedSizeListArray.from_arrays(pa.array(a.astype(np.float16).ravel(), pa.float16()), dim)

    emb = pa.table({"uid": t.column("uid"), "image_embedding": fsl(x), "text_embedding": fsl(y),
                    "clip_score": pa.array(np.einsum("ij,ij->i", x, y).astype(np.float32))},
                   schema=load_schema("embeddings").arrow(dim=dim))
    write_embeddings_table(ds, f"embeddings/{MODEL}", emb)


def run_step(argv: list[str], engine: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one ``python -m curate.cli`` process (CPU: user + system
    of the process and its children, e.g. Spark's JVM, which a busy machine does not inflate)."""
    env = {k: v for k, v in os.environ.items() if k != "CURATE_VERBOSE"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "curate.cli", *argv, "--engine", engine],
                       capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"{' '.join(argv)} --engine {engine} failed:\n{r.stderr[-3000:]}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def curate_filter_in_process(root: Path) -> tuple[float, float]:
    """``curate filter ROOT -f basic -f clip_score:fraction=0.3`` through the CLI in this process."""
    from curate.cli import main

    t0, c0 = time.perf_counter(), time.process_time()
    try:
        main(["filter", str(root), "-f", "basic", "-f", "clip_score:fraction=0.3", "--name", "inproc",
              "--engine", "auto"])
    except SystemExit as e:
        if e.code:
            sys.exit(f"curate filter failed ({e.code})")
    return time.perf_counter() - t0, time.process_time() - c0


def datacomp_filter(root: Path, out: Path) -> tuple[float, float, int]:
    """DataComp's basic + CLIP-score (fraction 0.3) steps, as apply_filter.py does them, in
    pandas: (wall s, CPU s, kept). The fastText model load counts, as in apply_filter.py."""
    import pandas as pd

    from curate.filters import langid

    t0, c0 = time.perf_counter(), time.process_time()
    model = langid.load_model()
    df = pd.read_parquet(root / "samples", columns=["uid", "text", "original_width", "original_height"])
    scores = pd.read_parquet(root / "embeddings" / MODEL, columns=["uid", "clip_score"])
    df = df.merge(scores, on="uid", how="left")

    def language(text: str) -> str:  # DataComp's get_fasttext_language
        return model.predict(text.replace("\n", " "))[0][0].split("__label__")[1]

    lang = df.text.apply(language)
    words = df.text.apply(lambda x: len(x.split()))
    chars = df.text.apply(len)
    mask = (lang == "en") & (words > 2) & (chars > 5)
    mask &= (df.original_width >= 200) & (df.original_height >= 200)
    aspect = np.maximum(df.original_width, df.original_height) / np.minimum(df.original_width, df.original_height)
    mask &= aspect <= 3.0
    threshold = np.quantile(df.clip_score.to_numpy(), 1 - 0.3)
    mask &= df.clip_score >= threshold
    uids = df.uid[mask]
    kept = np.array([(int(u[:16], 16), int(u[16:32], 16)) for u in uids], np.dtype("u8,u8"))
    kept.sort()
    np.save(out, kept)
    return time.perf_counter() - t0, time.process_time() - c0, len(kept)


# What DataComp's baselines/apply_filter.py imports at its top (those installed here; gcld3 is not).
APPLY_FILTER_IMPORTS = ("fasttext", "fsspec", "nltk", "numpy", "pandas", "torch")


def datacomp_filter_process(root: Path, out: Path, apply_filter_imports: bool) -> tuple[float, float, int]:
    """The same DataComp rendering as its own ``python`` process, as DataComp's script runs:
    (wall s, CPU s, kept), interpreter start-up and imports included. ``apply_filter_imports``:
    it first imports what apply_filter.py imports at its top (torch among them); else only
    what the rendering uses (pandas, numpy, fastText): a lower bound for DataComp's script."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    cmd = [sys.executable, __file__, "--datacomp-filter", str(root), str(out)]
    r = subprocess.run(cmd + (["--apply-filter-imports"] if apply_filter_imports else []),
                       capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if r.returncode != 0:
        sys.exit(f"DataComp rendering failed:\n{r.stderr[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, int(r.stdout.split()[-1])


def _datacomp_filter_main(argv: list[str]) -> None:
    """``small_pool.py --datacomp-filter ROOT OUT [--apply-filter-imports]``: the rendering alone."""
    import importlib

    if "--apply-filter-imports" in argv:
        for name in APPLY_FILTER_IMPORTS:
            try:
                importlib.import_module(name)
            except ImportError:
                pass
    _, _, kept = datacomp_filter(Path(argv[0]), Path(argv[1]))
    print(kept)


def main() -> None:
    if sys.argv[1:2] == ["--datacomp-filter"]:
        return _datacomp_filter_main(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=30_000)
    ap.add_argument("--spark", action="store_true", help="Also time --engine spark (minutes: a JVM per step).")
    ap.add_argument("--workdir", type=Path, default=None)
    args = ap.parse_args()

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-small-pool-"))
    base = work / "base"
    if base.exists():
        shutil.rmtree(base)
    build_pool(base, args.rows)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}; "
          f"python {platform.python_version()}")
    print(f"pool: {args.rows:,} rows, 512-d embeddings, in {work}")

    engines = ["local", "auto"] + (["spark"] if args.spark else [])
    times: dict[str, dict[str, tuple[float, float]]] = {}
    for engine in engines:
        root = work / engine
        if root.exists():
            shutil.rmtree(root)
        shutil.copytree(base, root)
        times[engine] = {name: run_step([a.format(ds=root) for a in argv], engine) for name, argv in CHAIN}

    dc_wall, dc_cpu, dc_kept = datacomp_filter(base, work / "datacomp_subset.npy")
    in_wall, in_cpu = curate_filter_in_process(work / "auto")
    dcp_wall, dcp_cpu, _ = datacomp_filter_process(base, work / "datacomp_subset_p.npy", apply_filter_imports=False)
    dcf_wall, dcf_cpu, _ = datacomp_filter_process(base, work / "datacomp_subset_f.npy", apply_filter_imports=True)

    print()
    cols = "".join(f"{e + ' wall':>12}{'cpu':>8}" for e in engines)
    print(f"{'step':<18}{cols}{'auto/local wall':>17}{'cpu':>7}" + (f"{'spark/auto wall':>17}" if args.spark else "")
          + "   (seconds; one process per step; cpu = user+sys incl. children)")
    worst = 0.0
    for name, _ in CHAIN:
        rw = times["auto"][name][0] / times["local"][name][0]
        rc = times["auto"][name][1] / times["local"][name][1]
        worst = max(worst, rc)
        line = f"{name:<18}" + "".join(f"{times[e][name][0]:>12.1f}{times[e][name][1]:>8.1f}" for e in engines)
        line += f"{rw:>16.2f}x{rc:>6.2f}x"
        if args.spark:
            line += f"{times['spark'][name][0] / times['auto'][name][0]:>16.1f}x"
        print(line)
    total = {e: (sum(v[0] for v in times[e].values()), sum(v[1] for v in times[e].values())) for e in engines}
    print(f"{'whole chain':<18}" + "".join(f"{total[e][0]:>12.1f}{total[e][1]:>8.1f}" for e in engines)
          + f"{total['auto'][0] / total['local'][0]:>16.2f}x{total['auto'][1] / total['local'][1]:>6.2f}x"
          + (f"{total['spark'][0] / total['auto'][0]:>16.1f}x" if args.spark else ""))
    shared_wall = sum(times["auto"][n][0] for n in SHARED_WITH_DATACOMP)
    shared_cpu = sum(times["auto"][n][1] for n in SHARED_WITH_DATACOMP)
    print()
    print("steps shared with DataComp (basic + clip_score fraction 0.3):")
    print(f"  DataComp rendering, pandas, in this process:  {dc_wall:6.1f} s wall {dc_cpu:6.1f} s cpu, {dc_kept:,} kept")
    print(f"  curate filter, CLI in this process (auto):    {in_wall:6.1f} s wall {in_cpu:6.1f} s cpu "
          f"-> {dc_wall / in_wall:.2f}x / {dc_cpu / in_cpu:.2f}x DataComp's speed (wall / cpu)")
    print(f"  curate filter, own process (auto):            {shared_wall:6.1f} s wall {shared_cpu:6.1f} s cpu "
          f"-> {dc_wall / shared_wall:.2f}x / {dc_cpu / shared_cpu:.2f}x")
    print("  both as processes (interpreter start-up and imports included on both sides):")
    print(f"  DataComp rendering, own process (pandas, numpy, fastText only): {dcp_wall:6.1f} s wall {dcp_cpu:6.1f} s cpu"
          f" -> curate filter process {dcp_wall / shared_wall:.2f}x / {dcp_cpu / shared_cpu:.2f}x its speed")
    print(f"  DataComp rendering, own process + apply_filter.py's imports:   {dcf_wall:6.1f} s wall {dcf_cpu:6.1f} s cpu"
          f" -> curate filter process {dcf_wall / shared_wall:.2f}x / {dcf_cpu / shared_cpu:.2f}x its speed")
    print(f"target auto <= 1.2x local per step (cpu): worst {worst:.2f}x -> {'met' if worst <= 1.2 else 'NOT met'}; "
          f"faster than DataComp on shared steps (in-process, cpu): {'met' if in_cpu < dc_cpu else 'NOT met'}")


if __name__ == "__main__":
    main()
