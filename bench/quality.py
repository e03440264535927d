"""Does curation help on real photos? Raw pool vs random subset vs curated subset, equal compute.

The pool: Flickr8k photos from ../shared/data (minus a held-out split), each with its five
captions, then corrupted the way web pools are:
- 30% of captions swapped between images (misaligned pairs),
- some captions replaced by non-English web alt-texts (../shared/data/alttext),
- duplicates: some samples copied several times under other URLs.
It is laid out as a curate dataset (img2dataset-style image shards + downloads table).

Curation (a small DFN-style recipe): language ID keeps English captions (curate.filters.langid),
exact duplicates (same image bytes and caption) keep one copy, then a data-filtering network
(curate-tiny trained with the reference trainer on a clean seed set of pool images with their
true captions) scores image-caption alignment and the top fraction is kept.

Arms, each resharded (curate.reshard) and trained with curate.train at the same samples seen,
for several seeds: (a) the raw pool, (b) a random subset of the curated size, (c) the curated
subset. Evaluation (curate.evaluate): retrieval on the held-out Flickr8k photos and zero-shot
CIFAR-10. Prints the table and margins; writes everything to --out.

    .venv/bin/python bench/quality.py                     # defaults: 3 seeds, tiny preset
    .venv/bin/python bench/quality.py --samples-seen 4096 --seeds 1   # a quick look
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import random
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("CURATE_SHARED_DATA", REPO.parent / "shared" / "data"))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def small_jpeg(path: Path, size: int) -> bytes:
    """What img2dataset --resize_mode center_crop --image_size N stores."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size), Image.BICUBIC)
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=90)
        return buf.getvalue()


def non_english_alttexts(n: int, rng: random.Random) -> list[str]:
    import pyarrow.parquet as pq

    from curate.filters.langid import load_model, predict_languages

    texts = [t for t in pq.read_table(DATA / "alttext" / "web_alttext_10k.parquet", columns=["TEXT"])
             .column("TEXT").to_pylist() if t and len(t) >= 10]
    langs, probs = predict_languages(texts, load_model())
    picked = [t for t, lab, p in zip(texts, langs.to_pylist(), probs.to_pylist())
              if lab not in (None, "en") and p is not None and p >= 0.5]
    rng.shuffle(picked)
    return (picked * (n // max(1, len(picked)) + 1))[:n]


def build_pool(out: Path, args, rng: random.Random):
    """The corrupted pool as a curate dataset; returns (dataset, samples, eval images, seed pairs)."""
    import webdataset as wds

    from curate.tables import Dataset, load_schema
    from curate.uid import derive_uid

    rows = list(csv.DictReader(open(DATA / "flickr8k" / "captions.csv", newline="", encoding="utf-8")))
    caps: dict[str, list[str]] = {}
    for r in rows:
        caps.setdefault(r["image"], []).append(r["caption"].strip())
    images = sorted(caps)
    rng.shuffle(images)
    eval_images = sorted(images[:args.eval_images])
    pool_images = images[args.eval_images:]
    seed_images = pool_images[:args.seed_images]  # the DFN's clean seed set (true captions)

    samples = []  # dict(image, caption, kind)
    for im in pool_images:
        for c in caps[im]:
            samples.append({"image": im, "caption": c, "true_caption": c, "kind": "clean"})
    idx = list(range(len(samples)))
    rng.shuffle(idx)
    n_swap = int(round(args.swap * len(samples)))
    n_lang = int(round(args.non_english * len(samples)))
    swap_idx, lang_idx = idx[:n_swap], idx[n_swap:n_swap + n_lang]
    rotated = [(samples[i]["caption"], samples[i]["image"]) for i in swap_idx]
    rotated = rotated[1:] + rotated[:1]  # captions move one step along a random cycle
    for i, (c, src) in zip(swap_idx, rotated):
        if src != samples[i]["image"]:
            samples[i].update(caption=c, kind="swapped")
    for i, t in zip(lang_idx, non_english_alttexts(n_lang, rng)):
        samples[i].update(caption=t, kind="non_english")
    dup_src = rng.sample(range(len(samples)), int(round(args.dup_fraction * len(samples))))
    for i in dup_src:
        for k in range(args.dup_copies):
            samples.append({**samples[i], "kind": "duplicate", "mirror": k + 1, "dup_of": i})

    ds = Dataset(out / "dataset")
    (ds.root / "images").mkdir(parents=True, exist_ok=True)
    jpeg_cache: dict[str, bytes] = {}
    down = []
    per_shard = 1000
    for s0 in range(0, len(samples), per_shard):
        rel = f"images/{s0 // per_shard:05d}.tar"
        with wds.TarWriter(str(ds.root / rel), encoder=False, mtime=0.0) as w:
            for i in range(s0, min(len(samples), s0 + per_shard)):
                smp = samples[i]
                url = f"https://photos.example/{smp['image']}" + (f"?mirror={smp['mirror']}" if "mirror" in smp else "")
                smp["uid"] = derive_uid(url, smp["caption"])
                if smp["image"] not in jpeg_cache:
                    jpeg_cache[smp["image"]] = small_jpeg(DATA / "flickr8k" / "images" / smp["image"], args.pool_size)
                jpg = jpeg_cache[smp["image"]]
                key = f"{s0 // per_shard:05d}{i - s0:04d}"
                w.write({"__key__": key, "jpg": jpg, "txt": smp["caption"].encode(),
                         "json": json.dumps({"url": url, "caption": smp["caption"]}).encode()})
                down.append({"uid": smp["uid"], "status": "success", "sha256": hashlib.sha256(jpg).hexdigest(),
                             "width": args.pool_size, "height": args.pool_size, "shard": rel, "key": key,
                             "attempts": 1})
    schema = load_schema("downloads").arrow()
    ds.write_table("downloads", pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in down],
                                                     schema=schema), schema="downloads")
    seed_pairs = [(im, c) for im in seed_images for c in caps[im]]
    return ds, samples, eval_images, seed_pairs, jpeg_cache


def train_dfn(out: Path, seed_pairs, jpeg_cache, args) -> str:
    """A data-filtering network: curate-tiny trained on the clean seed set."""
    import webdataset as wds

    from curate.train import train

    d = out / "dfn_seed"
    d.mkdir(parents=True, exist_ok=True)
    with wds.TarWriter(str(d / "00000000.tar"), encoder=False, mtime=0.0) as w:
        for i, (im, c) in enumerate(seed_pairs):
            w.write({"__key__": f"{i:06d}", "jpg": jpeg_cache[im], "txt": c.encode()})
    (d / "sizes.json").write_text(json.dumps({"00000000.tar": len(seed_pairs)}))
    info = train(d, out / "runs" / "dfn", args.preset, seed=0, samples_seen=args.dfn_samples_seen,
                 model=args.model)
    log(f"DFN trained: {info['steps']} steps, loss {info['loss_first']} -> {info['loss_last']}, {info['wall_s']} s")
    return info["checkpoint"]


def curate_pool(samples, jpeg_cache, dfn_ckpt: str, args) -> tuple[list[str], dict]:
    """English only, one copy of exact duplicates, then the top DFN-score fraction."""
    from curate.embed.core import embed_images, embed_texts
    from curate.filters.langid import load_model as load_lid
    from curate.filters.langid import predict_languages
    from curate.models import load_model

    funnel = {"pool": len(samples)}
    langs, probs = predict_languages([s["caption"] for s in samples], load_lid())
    keep = [i for i, (lab, p) in enumerate(zip(langs.to_pylist(), probs.to_pylist())) if lab == "en" and p >= 0.5]
    funnel["after_english"] = len(keep)
    seen, dedup = set(), []
    for i in keep:
        k = (hashlib.sha256(jpeg_cache[samples[i]["image"]]).hexdigest(), samples[i]["caption"])
        if k not in seen:
            seen.add(k)
            dedup.append(i)
    funnel["after_dedup"] = len(dedup)
    bundle = load_model(args.model or "curate-tiny", pretrained=dfn_ckpt)
    img = embed_images(bundle, [jpeg_cache[samples[i]["image"]] for i in dedup])
    txt = embed_texts(bundle, [samples[i]["caption"] for i in dedup])
    score = (img * txt).sum(axis=1)
    order = np.argsort(-score, kind="stable")
    n_keep = int(round(args.keep_fraction * len(dedup)))
    chosen = [dedup[j] for j in order[:n_keep]]
    funnel["after_dfn_score"] = len(chosen)
    # how well the score separates swapped from clean captions (AUC), for the record
    kinds = np.array([samples[i]["kind"] for i in dedup])
    pos, neg = score[kinds == "clean"], score[kinds == "swapped"]
    if len(pos) and len(neg):
        ranks = np.argsort(np.argsort(np.concatenate([pos, neg])))
        funnel["dfn_auc_clean_vs_swapped"] = round(
            float((ranks[:len(pos)].sum() - len(pos) * (len(pos) - 1) / 2) / (len(pos) * len(neg))), 4)
    return [samples[i]["uid"] for i in chosen], funnel


def composition(uids: list[str], by_uid: dict) -> dict:
    c = Counter(by_uid[u]["kind"] for u in uids)
    return {k: round(v / len(uids), 4) for k, v in sorted(c.items())}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/tmp/curate-bench-quality"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--preset", default="tiny")
    ap.add_argument("--model", default=None, help="architecture override (default: the preset's)")
    ap.add_argument("--samples-seen", type=int, default=16_384)
    ap.add_argument("--dfn-samples-seen", type=int, default=8_192)
    ap.add_argument("--eval-images", type=int, default=200, help="held-out Flickr8k photos for retrieval")
    ap.add_argument("--seed-images", type=int, default=150, help="pool photos in the DFN's clean seed set")
    ap.add_argument("--swap", type=float, default=0.30)
    ap.add_argument("--non-english", type=float, default=0.10)
    ap.add_argument("--dup-fraction", type=float, default=0.05)
    ap.add_argument("--dup-copies", type=int, default=4)
    ap.add_argument("--keep-fraction", type=float, default=0.6, help="DFN score: top fraction kept")
    ap.add_argument("--pool-size", type=int, default=64, help="stored image size (img2dataset --image_size)")
    ap.add_argument("--cifar-per-class", type=int, default=200)
    ap.add_argument("--fresh", action="store_true", help="delete --out first (default: reuse finished runs)")
    args = ap.parse_args(argv)
    if not (DATA / "flickr8k" / "captions.csv").exists():
        print(f"shared data not found at {DATA}; nothing to measure", file=sys.stderr)
        return 1
    import shutil

    from curate.evaluate import evaluate
    from curate.reshard import reshard
    from curate.subset import write_subset
    from curate.train import train

    t_all = time.perf_counter()
    if args.fresh and args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True, exist_ok=True)  # finished runs in it are reused (same config)
    rng = random.Random(0)
    log("building the corrupted Flickr8k pool")
    ds, samples, eval_images, seed_pairs, jpeg_cache = build_pool(args.out, args, rng)
    by_uid = {s["uid"]: s for s in samples}
    log(f"pool: {len(samples)} samples, composition {composition([s['uid'] for s in samples], by_uid)}")
    dfn = train_dfn(args.out, seed_pairs, jpeg_cache, args)
    curated, funnel = curate_pool(samples, jpeg_cache, dfn, args)
    log(f"curated: {funnel}")
    all_uids = [s["uid"] for s in samples]
    write_subset(ds, "raw", all_uids)
    write_subset(ds, "curated", curated)
    arms = {"raw": "raw", "random": None, "curated": "curated"}
    comp = {"raw": composition(all_uids, by_uid), "curated": composition(curated, by_uid)}
    results: dict = {a: [] for a in arms}
    eval_list = args.out / "eval_images.txt"
    eval_list.write_text("\n".join(eval_images) + "\n")
    cifar = DATA / "cifar10_test"
    for seed in range(args.seeds):
        rand = random.Random(1000 + seed).sample(all_uids, len(curated))
        write_subset(ds, f"random-s{seed}", rand)
        comp.setdefault("random", composition(rand, by_uid))
        for arm, sub in arms.items():
            name = sub or f"random-s{seed}"
            shards = ds.root / "webdataset" / f"{arm}-s{seed}"  # shuffled with this seed
            reshard(ds, name, shards, shard_size=1000, shuffle=True, seed=seed)
            info = train(shards, args.out / "runs" / f"{arm}-s{seed}", args.preset,
                         seed=seed, samples_seen=args.samples_seen, model=args.model)
            res = evaluate(info["checkpoint"], zeroshot=[cifar], retrieval_sets=[DATA / "flickr8k"],
                           retrieval_images=eval_images, max_per_class=args.cifar_per_class)
            fl, cf = res["retrieval"]["flickr8k"], res["zeroshot"]["cifar10_test"]
            row = {"seed": seed, "subset_size": info["data"]["samples"], "samples_seen": info["samples_seen"],
                   "train_s": info["wall_s"], "loss_last": info["loss_last"],
                   "flickr_mean_recall": fl["mean_recall"],
                   **{f"flickr_{k}": fl[k] for k in fl if "_R@" in k},
                   "cifar_top1": cf["top1"], "cifar_mean_per_class_recall": cf["mean_per_class_recall"]}
            results[arm].append(row)
            log(f"{arm:8s} seed {seed}: flickr mean R {row['flickr_mean_recall']:.4f}  "
                f"t2i R@10 {row['flickr_text_to_image_R@10']:.4f}  cifar top1 {row['cifar_top1']:.4f}  "
                f"({info['wall_s']} s train, loss {info['loss_last']})")

    metrics = ["flickr_mean_recall", "flickr_image_to_text_R@1", "flickr_image_to_text_R@10",
               "flickr_text_to_image_R@1", "flickr_text_to_image_R@10", "cifar_top1", "cifar_mean_per_class_recall"]

    def ms(arm, m):
        v = [r[m] for r in results[arm]]
        return statistics.mean(v), (statistics.stdev(v) if len(v) > 1 else 0.0)

    print()
    print(f"quality benchmark: Flickr8k pool {len(samples)} samples ({args.swap:.0%} swapped, "
          f"{args.non_english:.0%} non-English, {args.dup_fraction:.0%} x{args.dup_copies} duplicates); "
          f"{args.preset} preset ({args.model or 'preset model'}), {args.samples_seen} samples seen, "
          f"{args.seeds} seeds; retrieval on {len(eval_images)} held-out photos, CIFAR-10 zero-shot "
          f"{args.cifar_per_class}/class")
    sizes = {a: results[a][0]["subset_size"] for a in arms}
    print(f"subset sizes: {sizes}; curated funnel: {funnel}")
    for a in arms:
        print(f"  composition {a:8s}: {comp[a]}")
    head = f"{'metric':30s}" + "".join(f"{a:>18s}" for a in arms) + f"{'cur-raw':>10s}{'cur-rand':>10s}"
    print(head)
    print("-" * len(head))
    margins = {}
    for m in metrics:
        cells = "".join(f"{ms(a, m)[0]:>11.4f} ±{ms(a, m)[1]:.3f}" for a in arms)
        d_raw = ms("curated", m)[0] - ms("raw", m)[0]
        d_rand = ms("curated", m)[0] - ms("random", m)[0]
        margins[m] = {"curated_minus_raw": d_raw, "curated_minus_random": d_rand}
        print(f"{m:30s}{cells}{d_raw:>+10.4f}{d_rand:>+10.4f}")
    wins = {m: sum(c["flickr_mean_recall"] > r["flickr_mean_recall"] for c, r in zip(results["curated"], results[x]))
            for x, m in (("raw", "vs_raw"), ("random", "vs_random"))}
    print(f"curated beats (per seed, flickr mean recall): raw {wins['vs_raw']}/{args.seeds}, "
          f"random {wins['vs_random']}/{args.seeds}")
    total = time.perf_counter() - t_all
    print(f"total {total:.0f} s on {os.cpu_count()} CPU cores")
    (args.out / "results.json").write_text(json.dumps(
        {"args": {k: str(v) for k, v in vars(args).items()}, "funnel": funnel, "composition": comp,
         "results": results, "margins": margins, "wins": wins, "total_s": total}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
