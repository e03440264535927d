"""Benchmark: perceptual duplicates, measured against ground truth and against all-pairs.

    python bench/perceptual.py                 # demo pool truth + flickr8k copies + speed
    python bench/perceptual.py --n 200000      # the speed part at another size

1. **Demo pool truth.** The demo's generated pool (``curate.demo.pool``, 3,000 samples, seed 0)
   hashed with the job's own ``hash_images``; for each hash and radius, ``dedup perceptual`` on
   the hashed images (broken, tiny and strip images left out, as the demo's basic filter does):
   recall = share of the redundant copies (byte duplicates and web-style near-duplicate copies
   beyond one per source) removed; precision = share of removals whose survivor shows the same
   source; pictures lost = distinct pictures with no copy kept; duplicate share in / out =
   redundant copies over the images in / kept; and, per kind of edit, the share of copies no
   longer kept beside their original.
2. **flickr8k** (``../shared/data``, skipped when absent): 1,000 real photos plus a resized,
   a re-encoded and a 2.5%-cropped copy of 200 of them; the same three figures.
3. **Speed.** The grouping (multi-index buckets, local components, merge) on ``--n`` random
   64-bit hashes with 5% planted copies, against all pairs in NumPy blocks (the baseline, on
   a subsample, scaled by n^2), in this process.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from curate.perceptual import groups as G  # noqa: E402
from curate.perceptual.hashes import hash_images  # noqa: E402
from curate.perceptual.job import REASON, run_perceptual_dedup  # noqa: E402
from curate.tables import Dataset  # noqa: E402

GRID = {"phash": (0, 2, 4, 6, 8, 10, 12), "dhash": (0, 2, 4, 6, 8, 10), "colorhash": (0, 1, 2)}


def score(dec: pa.Table, source: dict[str, str], edits: dict[str, str] | None = None) -> dict:
    """precision: removals whose survivor shows the same picture; recall: share of the redundant
    copies (members beyond one per picture) gone from the kept set; distinct lost: pictures
    with no member kept, over the distinct pictures; redundant share before / after: redundant
    copies over the rows in / kept; with ``edits`` (a copy's edits, "" for an original), the
    share of copies of each edit no longer kept beside their source."""
    rows = dec.to_pylist()
    removed = [r for r in rows if r["reason"] == REASON]
    good = sum(source[r["uid"]] == source[r["detail"]] for r in removed)
    before: dict[str, int] = {}
    after: dict[str, int] = {}
    for r in rows:
        before[source[r["uid"]]] = before.get(source[r["uid"]], 0) + 1
        if r["kept"]:
            after[source[r["uid"]]] = after.get(source[r["uid"]], 0) + 1
    redundant = sum(c - 1 for c in before.values())
    left = sum(c - 1 for c in after.values())
    kept = sum(after.values())
    out = {"removed": len(removed), "precision": good / len(removed) if removed else 1.0,
           "recall": 1 - left / redundant if redundant else 1.0,
           "distinct_lost": (len(before) - len(after)) / len(before),
           "share_before": redundant / len(rows), "share_after": left / max(1, kept)}
    if edits:
        kept_uid = {r["uid"] for r in rows if r["kept"]}
        uid_of = {source[u]: u for u in source if not edits.get(u)}  # the original of each picture
        found: dict[str, list[bool]] = {}
        for u, e in edits.items():
            if e and source[u] in uid_of:
                hit = not (u in kept_uid and uid_of[source[u]] in kept_uid)
                for one in e.split("+"):
                    found.setdefault("jpeg" if one.startswith("jpeg") else one, []).append(hit)
        out["by_edit"] = {k: sum(v) / len(v) for k, v in sorted(found.items())}
    return out


def evaluate(images: dict[str, bytes], source: dict[str, str], label: str, grid=GRID,
             edits: dict[str, str] | None = None) -> None:
    names = sorted(images)
    uids = [f"{i:032x}" for i in range(len(names))]  # sample uids (32 hex) for the job's subsets
    images = dict(zip(uids, (images[k] for k in names)))
    source = dict(zip(uids, (source[k] for k in names)))
    edits = dict(zip(uids, (edits.get(k, "") for k in names))) if edits else None
    t = time.perf_counter()
    table, fails, _ = hash_images(uids, uids, images, label)
    secs = time.perf_counter() - t
    print(f"\n{label}: {len(uids):,} images hashed in {secs:.1f} s ({len(uids) / secs:,.0f}/s, one core), "
          f"{fails.num_rows} undecodable; {len(set(source.values())):,} distinct pictures")
    with tempfile.TemporaryDirectory() as tmp:
        ds = Dataset(Path(tmp) / "d")
        ds.write_table("phashes", table, schema="phashes")
        print(f"{'hash':<10}{'radius':>7}{'removed':>9}{'precision':>11}{'recall':>9}{'pictures lost':>15}"
              f"{'dup share in':>14}{'dup share out':>15}" + ("   copies found by edit" if edits else ""))
        for kind, radii in grid.items():
            for r in radii:
                s = score(run_perceptual_dedup(ds, r, kind, run=f"{kind}{r}")["decisions"], source, edits)
                by = ("   " + " ".join(f"{k} {v:.2f}" for k, v in s["by_edit"].items())) if edits else ""
                print(f"{kind:<10}{r:>7}{s['removed']:>9}{s['precision']:>11.3f}{s['recall']:>9.3f}"
                      f"{s['distinct_lost']:>14.2%}{s['share_before']:>14.2%}{s['share_after']:>15.2%}{by}")


def demo_pool() -> None:
    import pyarrow.parquet as pq

    from curate.demo.pool import PoolSpec, generate_pool

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        generate_pool(out, PoolSpec(n=3000, seed=0))
        truth = pq.read_table(out / "truth.parquet").to_pylist()
        rows = [r for r in truth if r["noise"] not in ("broken", "tiny", "extreme_aspect")]
        images = {r["url"].rsplit("/", 1)[1]: (out / "www" / "img" / r["url"].rsplit("/", 1)[1]).read_bytes()
                  for r in rows}
        source = {r["url"].rsplit("/", 1)[1]: r["source"] for r in rows}
        edits = {r["url"].rsplit("/", 1)[1]: r["edits"] for r in rows}
        evaluate(images, source, "demo pool (64 px pictures; byte duplicates and web-style copies)", edits=edits)


def flickr(shared: Path) -> None:
    from PIL import Image

    photos = sorted((shared / "flickr8k" / "images").glob("*.jpg"))[:1000]
    if len(photos) < 1000:
        print(f"\nflickr8k: skipped (need 1,000 photos under {shared})")
        return

    def jpeg(im, q):
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=q)
        return buf.getvalue()

    images = {p.stem: p.read_bytes() for p in photos}
    source = {p.stem: p.stem for p in photos}
    for p in photos[:200]:
        im = Image.open(p).convert("RGB")
        w, h = im.size
        c = max(1, w // 40)
        for kind, data in (("resized", jpeg(im.resize((w // 2, h // 2), Image.BICUBIC), 85)),
                           ("reencoded", jpeg(im, 40)), ("cropped", jpeg(im.crop((c, c, w - c, h - c)), 85))):
            images[f"{p.stem}-{kind}"] = data
            source[f"{p.stem}-{kind}"] = p.stem
    evaluate(images, source, "flickr8k (1,000 photos + 600 copies)",
             {"phash": (4, 6, 8, 10, 12), "dhash": (4, 8, 10)})


def speed(n: int) -> None:
    rng = np.random.default_rng(0)
    h = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) << np.uint64(1)
    k = n // 20
    flips = rng.integers(0, 64, (k, 3)).astype(np.uint64)
    h[n - k:] = h[:k] ^ (np.uint64(1) << flips[:, 0]) ^ (np.uint64(1) << flips[:, 1])
    uids = pa.array([f"{i:032x}" for i in range(n)])
    radius = 8
    plan, s = G.band_plan(64, radius)
    parts = G.partitions(n, plan, s)
    t = time.perf_counter()
    e = pa.Table.from_batches([G.bucket_entries(uids, h, plan, s, parts)]).sort_by("part")
    keys = e.column("part").to_numpy()
    starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
    ends = np.r_[starts[1:], len(keys)]
    links = [G.bucket_links(e.slice(a, b - a), radius) for a, b in zip(starts, ends)]
    nodes, labels = G.merge_links(pa.concat_tables(links))
    mi = time.perf_counter() - t
    m = min(n, 20000)
    t = time.perf_counter()
    pairs = 0
    for a in range(0, m, 2000):
        pairs += int((np.bitwise_count(h[a:a + 2000, None] ^ h[None, :m]) <= radius).sum())
    brute = (time.perf_counter() - t) * (n / m) ** 2
    print(f"\nspeed, {n:,} hashes, radius {radius}, {len(plan)} bands, band radius {s}, {parts} partitions: multi-index "
          f"{mi:.1f} s ({len(e):,} bucket entries, {len(nodes):,} rows in groups); all pairs "
          f"(NumPy popcount, {m:,}-row sample scaled by n^2) {brute:.1f} s; ratio {brute / mi:.1f}x")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--shared", default=str(Path(__file__).resolve().parents[2] / "shared" / "data"))
    ap.add_argument("--skip", nargs="*", default=[], choices=["demo", "flickr", "speed"])
    a = ap.parse_args()
    if "demo" not in a.skip:
        demo_pool()
    if "flickr" not in a.skip:
        flickr(Path(a.shared))
    if "speed" not in a.skip:
        speed(a.n)


if __name__ == "__main__":
    main()
