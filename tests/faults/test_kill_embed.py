"""kill -9 the driver in the middle of the embed job: only complete shards are visible, and the
rerun skips them and ends byte-identical to an uninterrupted run."""

from __future__ import annotations

import shutil

import pyarrow.parquet as pq
from faultkit import curate_cmd, kill_group, start_group, visible_shards, wait_for

from curate.download import DownloadOptions, FetchPolicy, run_download
from curate.embed.job import EmbedOptions, run_embed
from curate.engine import LocalExecutor
from curate.tables import Dataset
from curate.uid import derive_uid

PHOTOS = 80
MODEL_ID = "curate-tiny__random-seed0"


def _downloaded(shared_data, root):
    """80 real photos downloaded (file:// URLs) into 80 one-image shards: a long embed run."""
    import pyarrow as pa

    photos = sorted((shared_data / "flickr8k" / "images").glob("*.jpg"))[:PHOTOS]
    urls = [p.resolve().as_uri() for p in photos]
    texts = [f"photo {i}" for i in range(len(urls))]
    n = len(urls)
    ds = Dataset(root)
    ds.write_table("samples", pa.table({
        "uid": [derive_uid(u, t) for u, t in zip(urls, texts)], "url": urls, "text": texts,
        "source_file": ["/test/pool.parquet"] * n, "source_row": pa.array(range(n), pa.int64()),
        "original_width": pa.array([None] * n, pa.int32()), "original_height": pa.array([None] * n, pa.int32()),
        "extra": pa.array([None] * n, pa.string())}), schema="samples")
    stats = run_download(ds, LocalExecutor(), DownloadOptions(samples_per_shard=1, thread_count=4,
                                                              policy=FetchPolicy(allow_file_urls=True)))
    assert stats["success"] == n, stats
    return ds


def _files(root):
    out = {}
    for table in (f"embeddings/{MODEL_ID}", f"embed_failures/{MODEL_ID}"):
        d = root / table
        out[table] = {p.name: p.read_bytes() for p in sorted(d.glob("*.parquet"))} if d.is_dir() else {}
    return out


def test_driver_killed_mid_embed_resumes_to_identical_tables(shared_data, tmp_path):
    whole = _downloaded(shared_data, tmp_path / "whole")
    killed_root = tmp_path / "killed"
    shutil.copytree(whole.root, killed_root)
    opts = EmbedOptions(model="curate-tiny", batch_size=4, threads=1)
    run_embed(whole, LocalExecutor(), opts)

    log = tmp_path / "embed.log"
    emb = killed_root / "embeddings" / MODEL_ID
    proc = start_group(curate_cmd("embed", str(killed_root), "--model", "curate-tiny", "--batch-size", "4",
                                  "--threads", "1", "--engine", "local"), log)
    wait_for(lambda: len(visible_shards(emb)) >= 3, proc, 600, log, "the first embedding shards")
    kill_group(proc)  # the driver and everything it started, mid stage
    done = visible_shards(emb)
    assert 3 <= len(done) < PHOTOS, "the run must be interrupted, not finished"
    assert not (killed_root / "_runs" / f"embed-{MODEL_ID}.json").exists()
    for p in done:  # every visible shard is complete and final
        assert pq.ParquetFile(p).metadata.num_rows == 1
        assert p.read_bytes() == (whole.root / "embeddings" / MODEL_ID / p.name).read_bytes()

    second = run_embed(Dataset(killed_root), LocalExecutor(), opts)
    assert second["shards_skipped"] >= len(done)
    assert _files(killed_root) == _files(whole.root)
    assert not [p for p in emb.iterdir() if p.name.startswith(".")]  # no temp files left
