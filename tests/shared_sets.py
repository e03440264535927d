"""Small evaluation sets and sample tables cut from ../shared/data, shared by the tests that
need real photos (evaluate, embed, object storage)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import pyarrow as pa

from curate.uid import derive_uid


def write_eval_sets(shared_data: Path, root: Path, classes: list[str], per_class: int, photos: int) -> Path:
    """``root/cifar/<class>/*.jpg`` (``per_class`` CIFAR-10 photos of each class) and
    ``root/flickr/{images/, captions.csv}`` (the first ``photos`` Flickr8k photos, every caption)."""
    for cls in classes:
        (root / "cifar" / cls).mkdir(parents=True)
        for p in sorted((shared_data / "cifar10_test" / cls).glob("*.jpg"))[:per_class]:
            shutil.copy(p, root / "cifar" / cls / p.name)
    rows = list(csv.DictReader(open(shared_data / "flickr8k" / "captions.csv", newline="")))
    names = sorted({r["image"] for r in rows})[:photos]
    (root / "flickr" / "images").mkdir(parents=True)
    for n in names:
        shutil.copy(shared_data / "flickr8k" / "images" / n, root / "flickr" / "images" / n)
    with open(root / "flickr" / "captions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["image", "caption"])
        w.writerows([r["image"], r["caption"]] for r in rows if r["image"] in names)
    return root


def first_captions(shared_data: Path) -> dict[str, str]:
    """Flickr8k image name -> its first caption."""
    captions: dict[str, str] = {}
    with open(shared_data / "flickr8k" / "captions.csv", newline="") as f:
        for row in csv.DictReader(f):
            captions.setdefault(row["image"], row["caption"])
    return captions


def photo_samples(photos: list[Path], captions: list[str]) -> pa.Table:
    """A ``samples`` table whose URLs are the photos' file:// URIs."""
    urls = [p.resolve().as_uri() for p in photos]
    n = len(urls)
    return pa.table({
        "uid": [derive_uid(u, t) for u, t in zip(urls, captions)],
        "url": urls,
        "text": captions,
        "source_file": ["/test/pool.parquet"] * n,
        "source_row": pa.array(range(n), pa.int64()),
        "original_width": pa.array([None] * n, pa.int32()),
        "original_height": pa.array([None] * n, pa.int32()),
        "extra": pa.array([None] * n, pa.string()),
    })
