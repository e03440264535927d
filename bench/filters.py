"""Benchmark: language ID + DataComp's basic rules, captions per second per core.

Real web alt-text (../shared/data/alttext/web_alttext_10k.parquet) replicated to --rows
captions (default 1,000,000) with random image sizes, processed in one thread:

- curate: ``text_stats`` (fastText top-1 per caption + vectorised word/char/token counts) and
  ``decide_basic`` (vectorised rules) over 65,536-row Arrow batches, as a Spark task runs them;
- baseline: a plain per-row Python loop with the same rules (DataComp's expressions through
  fastText's public ``predict``), over --baseline-rows of the same captions.

fastText runs once per distinct caption of a batch. The replicated pool repeats each caption
about 6.5 times per 65,536-row batch, which flatters that; the same pipeline is therefore also
timed on every distinct real caption of the shared alt-text files (web alt-text, CC3M, COCO;
about 50,000, no repeats), the honest per-core figure for a pool without duplicates.

Both selections must agree row for row. Rates are given per wall second and per CPU second of
this process (the per-core figure that holds on a busy machine). Target: >= 50,000 captions/s
per core.

    .venv/bin/python bench/filters.py [--rows 1000000] [--baseline-rows 200000]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CURATE_SHARED_DATA", REPO.parent / "shared" / "data"))


class Timer:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


def load_pool(rows: int, seed: int = 0) -> pa.Table:
    src = DATA / "alttext" / "web_alttext_10k.parquet"
    if not src.exists():
        sys.exit(f"shared data not found: {src}")
    texts = pq.read_table(src, columns=["TEXT"]).column(0).combine_chunks()
    reps = -(-rows // len(texts))
    texts = pa.concat_arrays([texts] * reps).slice(0, rows)
    rng = np.random.default_rng(seed)
    return pa.table({
        "uid": pa.array([f"{i:032x}" for i in range(rows)]),
        "text": texts,
        "original_width": pa.array(rng.choice([120, 200, 256, 640, 1024, 3000], rows), pa.int32()),
        "original_height": pa.array(rng.choice([150, 200, 480, 768, 1000], rows), pa.int32()),
    })


def load_distinct(seed: int = 1) -> pa.Table:
    """Every distinct caption of the three shared alt-text files, with random sizes."""
    import csv
    import json

    alt = DATA / "alttext"
    texts = pq.read_table(alt / "web_alttext_10k.parquet", columns=["TEXT"]).column(0).to_pylist()
    with open(alt / "cc3m_validation.tsv", newline="", encoding="utf-8") as f:
        texts += [row[0] for row in csv.reader(f, delimiter="\t") if row]
    texts += [a["caption"] for a in json.loads((alt / "coco_val2017_captions.json").read_text())["annotations"]]
    texts = sorted({t for t in texts if t is not None})
    n = len(texts)
    rng = np.random.default_rng(seed)
    return pa.table({
        "uid": pa.array([f"{i:032x}" for i in range(n)]),
        "text": pa.array(texts, pa.string()),
        "original_width": pa.array(rng.choice([120, 200, 256, 640, 1024, 3000], n), pa.int32()),
        "original_height": pa.array(rng.choice([150, 200, 480, 768, 1000], n), pa.int32()),
    })


def curate_basic(pool: pa.Table, model, batch_rows: int = 65536) -> np.ndarray:
    from curate.filters.stages import decide_basic, parse_filter
    from curate.filters.text_stats import text_stats

    params = parse_filter("basic").params
    kept = []
    for b in pool.to_batches(max_chunksize=batch_rows):
        t = text_stats(b.column(0), b.column(1), model)
        t = t.append_column("original_width", b.column(2)).append_column("original_height", b.column(3))
        kept.append(decide_basic(t, params, {}).kept)
    return np.concatenate(kept)


def baseline_basic(pool: pa.Table, model) -> np.ndarray:
    """Per-row Python, DataComp's expressions."""
    out = np.zeros(pool.num_rows, dtype=bool)
    texts = pool.column("text").to_pylist()
    ws = pool.column("original_width").to_pylist()
    hs = pool.column("original_height").to_pylist()
    for i, (text, w, h) in enumerate(zip(texts, ws, hs)):
        lang = model.predict(text.replace("\n", " "))[0][0].split("__label__")[1]
        lo, hi = min(w, h), max(w, h)
        out[i] = (lang == "en" and len(text.split()) > 2 and len(text) > 5
                  and lo >= 200 and (hi / lo if lo else float("inf")) <= 3.0)
    return out


def fasttext_only(pool: pa.Table, model) -> None:
    predict = model.f.predict
    for t in pool.column("text").to_pylist():
        predict(t.replace("\n", " ") + "\n", 1, 0.0, "strict")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--baseline-rows", type=int, default=200_000)
    args = ap.parse_args()

    from curate.filters import langid

    model = langid.load_model()
    pool = load_pool(args.rows)
    base_pool = pool.slice(0, min(args.baseline_rows, args.rows))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}; python {platform.python_version()}; model {langid.resolve_model_path().name}")
    print(f"captions: {pool.num_rows:,} (alt-text x{-(-args.rows // 10000)}), baseline on {base_pool.num_rows:,}")

    distinct = load_distinct()
    with Timer() as tc:
        kept = curate_basic(pool, model)
    with Timer() as tu:
        kept_u = curate_basic(distinct, model)
    with Timer() as tb:
        ref = baseline_basic(base_pool, model)
    with Timer() as tbu:
        ref_u = baseline_basic(distinct, model)
    with Timer() as tf:
        fasttext_only(distinct, model)
    agree = bool(np.array_equal(kept[: base_pool.num_rows], ref)) and bool(np.array_equal(kept_u, ref_u))

    def line(label, n, t):
        print(f"  {label:<34} {n / t.wall:>10,.0f} captions/s wall   {n / max(t.cpu, 1e-9):>10,.0f} captions/s per CPU second")

    print("results (one thread):")
    print(f" replicated pool ({pool.num_rows:,} rows, captions repeat within a batch):")
    line("curate text_stats + basic", pool.num_rows, tc)
    line("baseline per-row Python loop", base_pool.num_rows, tb)
    print(f" distinct real captions ({distinct.num_rows:,} rows, no repeats):")
    line("curate text_stats + basic", distinct.num_rows, tu)
    line("baseline per-row Python loop", distinct.num_rows, tbu)
    line("fastText predict alone", distinct.num_rows, tf)
    ratio = (pool.num_rows / tc.cpu) / (base_pool.num_rows / tb.cpu)
    ratio_u = (distinct.num_rows / tu.cpu) / (distinct.num_rows / tbu.cpu)
    print(f"speedup vs per-row loop (CPU time): replicated {ratio:.2f}x, distinct {ratio_u:.2f}x; "
          f"kept {kept.mean():.1%}; selections agree with the loop: {agree}")
    for label, rate in (("replicated", pool.num_rows / tc.cpu), ("distinct", distinct.num_rows / tu.cpu)):
        print(f"target >= 50,000 captions/s per core ({label}): {'met' if rate >= 50_000 else 'NOT met'} ({rate:,.0f})")
    if not agree:
        sys.exit(1)


if __name__ == "__main__":
    main()
