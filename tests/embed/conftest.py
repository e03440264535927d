"""A dataset with real downloaded image shards, made by the real download job from file:// URLs."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from curate.download import DownloadOptions, FetchPolicy, run_download
from curate.engine import LocalExecutor
from curate.tables import Dataset
from tests.shared_sets import first_captions, photo_samples


@pytest.fixture(scope="session")
def downloaded_template(tmp_path_factory, shared_data) -> Path:
    """18 flickr8k photos with their real captions in 3 image shards of 6."""
    photos = sorted((shared_data / "flickr8k" / "images").glob("*.jpg"))[:18]
    captions = first_captions(shared_data)
    root = tmp_path_factory.mktemp("embed") / "template"
    ds = Dataset(root)
    ds.write_table("samples", photo_samples(photos, [captions.get(p.name, "") for p in photos]), schema="samples")
    opts = DownloadOptions(samples_per_shard=6, thread_count=4, policy=FetchPolicy(allow_file_urls=True))
    stats = run_download(ds, LocalExecutor(), opts)
    assert stats["success"] == 18, stats
    return root


@pytest.fixture
def downloaded(downloaded_template, tmp_path) -> Dataset:
    dst = tmp_path / "ds"
    shutil.copytree(downloaded_template, dst)
    return Dataset(dst)
