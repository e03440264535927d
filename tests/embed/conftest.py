"""A dataset with real downloaded image shards, made by the real download job from file:// URLs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pyarrow as pa
import pytest

from curate.download import DownloadOptions, FetchPolicy, run_download
from curate.engine import LocalExecutor
from curate.tables import Dataset
from curate.uid import derive_uid


def make_samples(photos: list[Path], captions: list[str]) -> pa.Table:
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


@pytest.fixture(scope="session")
def downloaded_template(tmp_path_factory, shared_data) -> Path:
    """18 flickr8k photos with their real captions in 3 image shards of 6."""
    import csv

    photos = sorted((shared_data / "flickr8k" / "images").glob("*.jpg"))[:18]
    captions = {}
    with open(shared_data / "flickr8k" / "captions.csv", newline="") as f:
        for row in csv.DictReader(f):
            captions.setdefault(row["image"], row["caption"])
    root = tmp_path_factory.mktemp("embed") / "template"
    ds = Dataset(root)
    ds.write_table("samples", make_samples(photos, [captions.get(p.name, "") for p in photos]), schema="samples")
    opts = DownloadOptions(samples_per_shard=6, thread_count=4, policy=FetchPolicy(allow_file_urls=True))
    stats = run_download(ds, LocalExecutor(), opts)
    assert stats["success"] == 18, stats
    return root


@pytest.fixture
def downloaded(downloaded_template, tmp_path) -> Dataset:
    dst = tmp_path / "ds"
    shutil.copytree(downloaded_template, dst)
    return Dataset(dst)
