"""Benchmark: every DataComp baseline over a generated DataComp-format pool, rows/s per core.

Generates a pool the way DataComp ships it (metadata Parquet shards + one .npz per shard with
float16 ``b32_img/b32_txt/l14_img/l14_txt`` at DataComp's dims, 512 and 768), captions from
the shared real caption files (alt-text, CC3M, Flickr8k) made distinct per row, imports it
with ``curate ingest --format datacomp`` (Spark local mode, timed for information), then runs
each baseline as ``curate filter --engine local`` would (one process), and the same rules as
a straightforward pandas/numpy rendering of DataComp's ``apply_filter.py`` in this process.

Rates are rows per CPU second of this process (the per-core figure; FAISS/Arrow threads are
counted) and per wall second. Both sides' uid sets must agree. Targets (issue 14): basic >=
0.9 x bare fastText predict throughput on the same captions; clip_score threshold and
fraction >= 2,000,000 rows/s per core.

    .venv/bin/python bench/datacomp.py [--rows 1000000] [--full] [--workdir DIR] [--keep]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CURATE_SHARED_DATA", REPO.parent / "shared" / "data"))
DIMS = {"b32": 512, "l14": 768}
KEYS = {"b32": "clip_b32_similarity_score", "l14": "clip_l14_similarity_score"}
SYNSET_WORDS = ["dog", "cat", "man", "woman", "child", "car", "bus", "tree", "house", "beach", "water", "ball",
                "bird", "horse", "flower", "food", "table", "chair", "shirt", "street", "city", "mountain",
                "boat", "train", "book", "phone", "computer", "bike", "girl", "boy"]


class Timer:
    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall = time.perf_counter() - self.wall
        self.cpu = time.process_time() - self.cpu


# ---------------------------------------------------------------- the pool
def real_captions() -> list[str]:
    alt = pq.read_table(DATA / "alttext" / "web_alttext_10k.parquet").column("TEXT").to_pylist()
    with open(DATA / "alttext" / "cc3m_validation.tsv", encoding="utf-8") as f:
        cc3m = [line.split("\t")[0] for line in f]
    with open(DATA / "flickr8k" / "all_captions_text_only.csv", encoding="utf-8") as f:
        flickr = [row[-1] for row in csv.reader(f)][1:]
    return [t for t in alt + cc3m + flickr if t]


def make_pool(folder: Path, rows: int, rows_per_shard: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    captions = real_captions()
    folder.mkdir(parents=True, exist_ok=True)
    for s, start in enumerate(range(0, rows, rows_per_shard)):
        n = min(rows_per_shard, rows - start)
        idx = np.arange(start, start + n)
        # Distinct captions (a web pool repeats few): the real caption plus the row's own tag.
        texts = [f"{captions[i % len(captions)]} #{i // len(captions)}" for i in idx]
        raw = rng.integers(0, 256, size=(n, 16), dtype=np.uint8)
        uids = [b.tobytes().hex() for b in raw]
        sizes = rng.choice([0, 120, 200, 256, 384, 512, 640, 800, 1024, 2048], size=(2, n))
        cols = {"uid": uids, "url": [f"http://127.0.0.1/{i}.jpg" for i in idx], "text": texts,
                "original_width": sizes[0].astype(np.int64), "original_height": sizes[1].astype(np.int64)}
        arrays = {}
        for m, d in DIMS.items():
            score = rng.normal(0.28, 0.05, n).astype(np.float32)
            img = rng.standard_normal((n, d), dtype=np.float32)
            img /= np.linalg.norm(img, axis=1, keepdims=True)
            other = rng.standard_normal((n, d), dtype=np.float32)
            other -= np.einsum("ij,ij->i", other, img)[:, None] * img
            other /= np.linalg.norm(other, axis=1, keepdims=True)
            c = np.clip(score, -1, 1)[:, None]
            txt = c * img + np.sqrt(1 - c * c) * other
            arrays[f"{m}_img"], arrays[f"{m}_txt"] = img.astype(np.float16), txt.astype(np.float16)
            cols[KEYS[m]] = score
        cols["face_bboxes"] = pa.array([[]] * n, pa.list_(pa.list_(pa.float64())))
        cols["sha256"] = [f"{i:064x}" for i in idx]
        pq.write_table(pa.table(cols), folder / f"{s:08d}.parquet")
        np.savez(folder / f"{s:08d}.npz", **arrays)


def make_assets(folder: Path, pool: Path, k: int, seed: int = 0) -> dict:
    """DataComp-style assets: centroids .pt (numpy, protocol 4), target features .pt, synsets."""
    import torch

    from curate.wordnet import get_wordnet

    rng = np.random.default_rng(seed)
    sample = np.load(sorted(pool.glob("*.npz"))[0])["l14_img"][:k].astype(np.float32)
    torch.save(sample, folder / "centroids_l14.pt", pickle_protocol=4)
    targets = folder / "in1k"
    targets.mkdir(exist_ok=True)
    tgt = sample[rng.choice(k, k // 10, replace=False)] + 0.01 * rng.standard_normal((k // 10, sample.shape[1]))
    torch.save({"image_features": torch.from_numpy(tgt.astype(np.float16))}, targets / "in1k_clip_vit_l14_0.pt")
    wn = get_wordnet(None)
    synsets = folder / "imagenet21k_wordnet_ids.txt"
    synsets.write_text("".join(f"n{wn.synsets(w)[0].offset():08d}\n" for w in SYNSET_WORDS))
    return {"centroids": folder / "centroids_l14.pt", "targets": targets, "synsets": synsets}


# ---------------------------------------------------------------- DataComp's rules, plainly (pandas/numpy)
class Plain:
    """The baselines as DataComp's apply_filter.py computes them, shard by shard."""

    def __init__(self, pool: Path, lid_path: str):
        import fasttext

        self.files = sorted(pool.glob("*.parquet"))
        self.lid = fasttext.load_model(lid_path)

    def lang(self, text: pd.Series) -> pd.Series:
        return text.apply(lambda x: self.lid.predict(x.replace("\n", " "))[0][0].split("__label__")[1])

    @staticmethod
    def to_uids(uids) -> np.ndarray:
        return np.array([(int(u[:16], 16), int(u[16:32], 16)) for u in uids], np.dtype("u8,u8"))

    def basic(self):
        out = []
        for f in self.files:
            df = pd.read_parquet(f, columns=["uid", "text", "original_width", "original_height"])
            lo = np.minimum(df.original_width, df.original_height)
            aspect = np.maximum(df.original_width, df.original_height) / lo
            mask = ((self.lang(df.text) == "en") & (df.text.apply(lambda x: len(x.split())) > 2)
                    & (df.text.apply(len) > 5) & (lo >= 200) & (aspect <= 3.0))
            out.append(self.to_uids(df.uid[mask]))
        return np.concatenate(out)

    def threshold(self, arch, fraction):
        values = pd.concat([pd.read_parquet(f, columns=[KEYS[arch]]) for f in self.files])[KEYS[arch]].values
        return -np.sort(-values)[int(len(values) * fraction)]

    def clip_score(self, arch, threshold=None, fraction=None, gcld3=False):
        if threshold is None:
            threshold = self.threshold(arch, fraction)
        out = []
        det = None
        if gcld3:
            import gcld3 as g

            det = g.NNetLanguageIdentifier(min_num_bytes=0, max_num_bytes=1000)
        for f in self.files:
            df = pd.read_parquet(f, columns=["uid", KEYS[arch]] + (["text"] if gcld3 else []))
            if gcld3:
                df = df[df.text.apply(lambda x: det.FindLanguage(text=x.replace("\n", " ")).language) == "en"]
            out.append(self.to_uids(df[df[KEYS[arch]] >= threshold].uid.values))
        return np.concatenate(out)

    def text_based(self, synsets: Path):
        from functools import lru_cache

        from curate.wordnet import get_wordnet

        wn = get_wordnet(None)
        entity = {int(x.strip()[1:]) for x in open(synsets)}

        @lru_cache(maxsize=None)  # DataComp looks every word up; a cache keeps this run short
        def first(word):
            ss = wn.synsets(word)
            return ss[0].offset() if ss else -1

        out = []
        for f in self.files:
            df = pd.read_parquet(f, columns=["uid", "text"])
            hit = df.text.apply(lambda x: any(first(w) in entity for w in x.split()))
            out.append(self.to_uids(df.uid[(self.lang(df.text) == "en") & hit]))
        return np.concatenate(out)

    @staticmethod
    def tokens(text: str) -> int:
        n, word = 0, False
        for ch in text:
            if ch in " \n\r\t\v\f\0":
                n += word
                word = False
                n += ch == "\n"
            else:
                word = True
        return n + word

    def image_based(self, centroids_file, targets, arch=None, fraction=None):
        import torch

        centroids = torch.load(centroids_file, weights_only=False)  # the file this bench wrote
        target = torch.cat([torch.load(f)["image_features"] for f in sorted(targets.glob("*.pt"))]).float().numpy()
        target_ids = np.unique(np.argmax(target @ centroids.T, axis=1))
        threshold = self.threshold(arch, fraction) if arch else None
        out = []
        for f in self.files:
            df = pd.read_parquet(f, columns=["uid", "text"] + ([KEYS[arch]] if arch else []))
            emb = np.load(f.with_suffix(".npz"))["l14_img"]
            if arch:
                keep = (df[KEYS[arch]] >= threshold).to_numpy()
                df, emb = df[keep], emb[keep]
            mask = ((self.lang(df.text) == "en") & (df.text.apply(self.tokens) > 1)
                    & (df.text.apply(len) > 5)).to_numpy()
            labels = np.concatenate([np.argmax(emb[mask][i:i + 4096].astype(np.float32) @ centroids.T, axis=1)
                                     for i in range(0, int(mask.sum()), 4096)] or [np.zeros(0, int)])
            out.append(self.to_uids(df.uid.values[mask][np.isin(labels, target_ids)]))
        return np.concatenate(out)


# ---------------------------------------------------------------- main
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--full", action="store_true", help="12,800,000 rows (DataComp's small pool)")
    ap.add_argument("--rows-per-shard", type=int, default=50_000)
    ap.add_argument("--k", type=int, default=1000, help="image_based centroids")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--keep", action="store_true", help="keep the generated pool and dataset")
    ap.add_argument("--skip-plain", action="store_true", help="skip the pandas/numpy side")
    args = ap.parse_args()
    rows = 12_800_000 if args.full else args.rows
    if not DATA.is_dir():
        sys.exit(f"shared data not found: {DATA}")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="curate-bench-datacomp-"))
    work.mkdir(parents=True, exist_ok=True)
    pool, out = work / "metadata", work / "ds"

    from curate.engine import LocalExecutor
    from curate.engine.spark import get_session
    from curate.filters import langid, stages
    from curate.filters.job import run_filters
    from curate.filters.stages import parse_filter
    from curate.ingest.job import IngestConfig, run_ingest
    from curate.engine.spark import SparkExecutor
    from curate.ingest.stage import IngestRules
    from curate.subset import read_subset
    from curate.tables import Dataset

    print(f"# DataComp baselines, {rows:,} rows ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f})", flush=True)
    if not (pool / f"{0:08d}.npz").exists():
        with Timer() as t:
            make_pool(pool, rows, args.rows_per_shard)
        print(f"generate pool: {t.wall:.1f} s", flush=True)
    assets = make_assets(work, pool, args.k)
    if not (out / "_runs" / "ingest.json").exists():
        spark = get_session(master="local[2]", app_name="bench-datacomp")
        with Timer() as t:
            r = run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(pool)], output=str(out), format="datacomp",
                                               rules=IngestRules(faithful=True)))
        print(f"ingest --format datacomp (Spark local[2]): {t.wall:.1f} s wall, {rows / t.wall:,.0f} rows/s; "
              f"timings {r['timings_s']}", flush=True)
        spark.stop()
    ds = Dataset(out)
    lid = str(langid.default_model_path())

    curate_runs = [
        ("basic (incl. fastText text_stats)", ["basic"], dict(recompute_stats=True)),
        ("clip_score threshold b32 0.3", ["clip_score:model=b32,threshold=0.3"], {}),
        ("clip_score fraction l14 0.3", ["clip_score:model=l14,fraction=0.3"], {}),
        ("laion2b", ["laion2b:model=b32"], {}),
        ("text_based", [f"text_based:synsets={assets['synsets']}"], {}),
        ("image_based", [f"image_based:model=l14,centroids={assets['centroids']},target={assets['targets']}"], {}),
        ("image_based ∩ clip_score l14 0.3", [f"image_based:model=l14,centroids={assets['centroids']},"
                                              f"target={assets['targets']},clip_model=l14,clip_fraction=0.3"], {}),
    ]
    plain = Plain(pool, lid)
    plain_runs = [
        lambda: plain.basic(),
        lambda: plain.clip_score("b32", threshold=0.3),
        lambda: plain.clip_score("l14", fraction=0.3),
        lambda: plain.clip_score("b32", threshold=0.28, gcld3=True),
        lambda: plain.text_based(assets["synsets"]),
        lambda: plain.image_based(assets["centroids"], assets["targets"]),
        lambda: plain.image_based(assets["centroids"], assets["targets"], arch="l14", fraction=0.3),
    ]
    lines = []
    for i, ((label, filters, kw), plain_fn) in enumerate(zip(curate_runs, plain_runs)):
        name = f"bench{i}"
        with Timer() as tc:
            run_filters(ds, [parse_filter(f) for f in filters], LocalExecutor(), name=name, **kw)
        kept = read_subset(ds, name)
        row = {"filter": label, "kept": len(kept), "curate_cpu": tc.cpu, "curate_wall": tc.wall}
        if not args.skip_plain:
            with Timer() as tp:
                uids = plain_fn()
            uids.sort()
            agree = [f"{int(a):016x}{int(b):016x}" for a, b in uids.tolist()] == kept
            row.update(plain_cpu=tp.cpu, plain_wall=tp.wall, agree=agree)
        lines.append(row)
        msg = (f"{label}: curate {rows / tc.cpu:,.0f} rows/CPU-s ({tc.wall:.1f} s wall), kept {len(kept):,}")
        if "plain_cpu" in row:
            msg += (f"; pandas/numpy {rows / row['plain_cpu']:,.0f} rows/CPU-s ({row['plain_wall']:.1f} s wall); "
                    f"x{row['plain_cpu'] / tc.cpu:.1f}; same uids: {row['agree']}")
        print(msg, flush=True)

    # The clip_score decision alone (one stored column against a float32 threshold), and bare fastText.
    scores = pa.concat_tables([pq.read_table(p, columns=["uid", "clip_score"]) for p in
                               ds.shards("embeddings/ViT-B-32__openai")]).rename_columns(["uid", "s0"])
    with Timer() as td:
        for b in scores.to_batches(max_chunksize=65536):
            stages.decide_clip_score(pa.Table.from_batches([b]), {}, {"score_column": "s0", "threshold": 0.3})
    with Timer() as tn:
        s = scores.column("s0").to_numpy()
        _ = s >= np.float32(0.3)
    model = langid.load_model(lid)
    texts = pa.concat_tables([pq.read_table(p, columns=["text"]) for p in ds.shards("samples")]).column(0).to_pylist()
    predict = model.f.predict
    with Timer() as tf:
        for t in texts:
            predict(t.replace("\n", " ") + "\n", 1, 0.0, "strict")
    fasttext_rate = rows / tf.cpu
    print(f"clip_score decision alone (decide_clip_score over 65,536-row batches): {rows / td.cpu:,.0f} rows/CPU-s; "
          f"bare numpy float32 compare: {rows / max(tn.cpu, 1e-9):,.0f} rows/CPU-s", flush=True)
    print(f"bare fastText predict: {fasttext_rate:,.0f} captions/CPU-s", flush=True)
    basic_rate = rows / lines[0]["curate_cpu"]
    print(f"target basic >= 0.9 x fastText: {basic_rate:,.0f} vs {0.9 * fasttext_rate:,.0f} -> "
          f"{'met' if basic_rate >= 0.9 * fasttext_rate else 'MISSED'} (ratio {basic_rate / fasttext_rate:.2f})")
    for row in lines[1:3]:
        rate = rows / row["curate_cpu"]
        print(f"target {row['filter']} >= 2,000,000 rows/CPU-s: {rate:,.0f} -> {'met' if rate >= 2e6 else 'MISSED'}")
    print("\n| filter | curate rows/CPU-s | wall s | pandas/numpy rows/CPU-s | wall s | speed-up | same uids |")
    print("|---|---|---|---|---|---|---|")
    for row in lines:
        p = (f"{rows / row['plain_cpu']:,.0f} | {row['plain_wall']:.1f} | x{row['plain_cpu'] / row['curate_cpu']:.1f} | "
             f"{row['agree']}") if "plain_cpu" in row else "- | - | - | -"
        print(f"| {row['filter']} | {rows / row['curate_cpu']:,.0f} | {row['curate_wall']:.1f} | {p} |")
    if not args.keep and args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
