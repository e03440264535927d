"""``Dataset.iter_batches``: a table's rows in order, shard after shard, whether the dataset is a
folder or in a bucket; on a store, its row groups' reads in flight together (each request is a
round trip on S3), which is what lets a driver's serial pass (the selection finish) stream
thousands of shards without waiting for each read in turn."""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from store_latency import latency_proxy

from curate.errors import DatasetError
from curate.selection import write_kept_subset
from curate.subset import read_subset
from curate.tables import Dataset, write_parquet_atomic

ROW_GROUP = 65536


def _decisions(ds: Dataset, shards: int, rows: int) -> pa.Table:
    """``decisions/run``: ``shards`` shards of ``rows`` sorted uids (several row groups each)."""
    rng = np.random.default_rng(7)
    uids = sorted(f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**63, (shards * rows, 2)))
    kept = rng.random(len(uids)) < 0.6
    whole = pa.table({"uid": uids, "stage": ["s"] * len(uids), "kept": kept,
                      "reason": np.where(kept, "kept", "low"), "value": rng.random(len(uids))})
    for s in range(shards):
        write_parquet_atomic(whole.slice(s * rows, rows), ds.shard_path("decisions/run", s), row_group_size=ROW_GROUP)
    return whole


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_batches_come_in_table_order(where, tmp_path, request):
    root = str(tmp_path / "ds") if where == "folder" else f"s3://{request.getfixturevalue('bucket')}/ds"
    ds = Dataset(root)
    whole = _decisions(ds, shards=3, rows=150_000)
    batches = list(ds.iter_batches("decisions/run", ["uid", "kept"], batch_size=40_000, readahead=3))
    assert all(b.num_rows <= 40_000 for b in batches)
    assert pa.Table.from_batches(batches).equals(whole.select(["uid", "kept"]))
    # the finish streams the same uids a whole-table read keeps
    write_kept_subset(ds, "run", "final", int(np.sum(whole["kept"])), {})
    assert read_subset(ds, "final") == whole.filter(whole["kept"])["uid"].to_pylist()


def test_a_bad_shard_is_named(tmp_path):
    ds = Dataset(tmp_path / "ds")
    _decisions(ds, shards=2, rows=1000)
    bad = ds.shard_path("decisions/run", 1)
    bad.write_bytes(b"not parquet")
    with pytest.raises(DatasetError, match=r"part-00001.parquet: cannot read Parquet shard"):
        list(ds.iter_batches("decisions/run", ["uid"]))


def test_a_shard_in_a_bucket_is_read_with_requests_in_flight_together(bucket, monkeypatch):
    """Behind a proxy that holds each request 50 ms (a store's round trip), one shard of 16
    row groups: its ranged reads go out together, up to the read-ahead, not one after another."""
    ds = Dataset(f"s3://{bucket}/ds")
    whole = _decisions(ds, shards=1, rows=16 * ROW_GROUP)
    assert pq.ParquetFile(ds.open_shard(ds.shards("decisions/run")[0])).metadata.num_row_groups == 16
    with latency_proxy(os.environ["AWS_ENDPOINT_URL"], 0.05) as (url, stats):
        monkeypatch.setenv("AWS_ENDPOINT_URL", url)
        got = pa.Table.from_batches(list(Dataset(f"s3://{bucket}/ds").iter_batches("decisions/run", ["uid"],
                                                                                    readahead=8)))
    assert got.equals(whole.select(["uid"]))
    assert stats.most_in_flight >= 4, (stats.requests, stats.most_in_flight)
    assert stats.requests <= 16 + 6  # one read a row group; the listings, a HEAD and the footer


_PEAK = """
import sys
import pyarrow as pa
from curate.tables import Dataset
for b in Dataset(sys.argv[1]).iter_batches("decisions/run", ["uid", "kept"], readahead=int(sys.argv[2])):
    pass
print(pa.default_memory_pool().max_memory())
"""


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_memory_is_bounded_by_the_read_ahead_not_the_shard(where, tmp_path, request):
    """Arrow's peak while a shard is read (a fresh process each: the pool's peak is per
    process) is the same for a shard of 8 row groups as for one of 32: what is held is the
    read-ahead's row groups on a store, one row group in a folder, not the shard (a whole shard
    pre-buffered held all of its columns)."""
    import subprocess
    import sys

    peaks = {}
    for groups in (8, 32):
        root = tmp_path / f"ds{groups}" if where == "folder" else f"s3://{request.getfixturevalue('bucket')}/ds{groups}"
        ds = Dataset(root)
        _decisions(ds, shards=1, rows=groups * ROW_GROUP)
        out = subprocess.run([sys.executable, "-c", _PEAK, str(ds.root), "4"], capture_output=True, text=True,
                             check=True)
        peaks[groups] = int(out.stdout.split()[-1])
    # a shard held whole would be 4x; the store's read-ahead timing moves the peak a little
    # under load (1.28x once in a clean-clone run; below 1.25x in every run before)
    assert peaks[32] < 1.5 * peaks[8], peaks
