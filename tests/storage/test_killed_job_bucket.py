"""A selection job killed with SIGKILL while it writes its decisions into s3://bucket/ds: no partial
shard is visible (every shard a reader sees is whole, with its marker recording its bytes), and a
rerun ends with objects byte-identical to a local run's files."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from s3kit import bucket_objects

from curate import storage
from curate.tables import Dataset, load_schema

HERE = Path(__file__).resolve().parent
ROWS, SHARD_ROWS = 3000, 10


def _downloads(root: str) -> Dataset:
    ds = Dataset(root)
    n = ROWS
    uids = [f"{(i * 0x9E3779B97F4A7C15) % (1 << 64):016x}{i:016x}" for i in range(n)]
    ds.write_table("downloads", pa.table({
        "uid": uids, "status": ["success"] * n, "error_class": [None] * n, "error_message": [None] * n,
        "sha256": [f"{i % 1000:064x}" for i in range(n)],
        "width": pa.array([1] * n, pa.int32()), "height": pa.array([1] * n, pa.int32()),
        "original_width": pa.array([1] * n, pa.int32()), "original_height": pa.array([1] * n, pa.int32()),
        "shard": [None] * n, "key": [None] * n, "attempts": pa.array([1] * n, pa.int32())},
        schema=load_schema("downloads").arrow()), schema="downloads", rows_per_shard=1000)
    return ds


def _job(root: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(HERE / "killed_job.py"), root, str(SHARD_ROWS)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _keys(bucket: str, prefix: str) -> int:
    import boto3

    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    return s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("KeyCount", 0)


def _visible(files: dict) -> dict:
    return {k: v for k, v in files.items() if not any(p[:1] in "_." for p in k.split("/"))}


@pytest.mark.slow
def test_kill_mid_write_leaves_no_partial_shard_and_rerun_is_identical(bucket, tmp_path):
    local = _downloads(str(tmp_path / "local"))
    r = _job(str(local.root))
    assert r.wait(600) == 0, r.stderr.read()
    uri = f"s3://{bucket}/ds"
    remote = _downloads(uri)
    marks = f"ds/decisions/exact_dedup/{storage.COMMIT_DIR}/"
    proc = _job(uri)
    try:
        deadline = time.time() + 600
        while time.time() < deadline and proc.poll() is None:  # wait until a few shards are committed
            if _keys(bucket, marks) >= 5:
                break
            time.sleep(0.05)
        assert proc.poll() is None, "the job finished before it could be killed: " + proc.stderr.read()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
    objects = bucket_objects(bucket, "ds/")
    shards = remote.shards("decisions/exact_dedup")
    total = ROWS // SHARD_ROWS
    assert 5 <= len(shards) < total, "killed mid-write"
    for uri_shard in shards:  # every visible shard is whole: the bytes its marker records, readable
        key = uri_shard[len(f"{uri}/"):]
        mark = json.loads(objects[key.replace("exact_dedup/", f"exact_dedup/{storage.COMMIT_DIR}/")])
        assert mark == {"bytes": len(objects[key]), "sha256": hashlib.sha256(objects[key]).hexdigest()}
        local_file = local.root / key
        assert objects[key] == local_file.read_bytes()  # and already the final bytes
    assert remote.count("decisions/exact_dedup") == SHARD_ROWS * len(shards)
    assert not remote.has_table("subsets/exact_dedup")  # written after the decisions: not there yet
    # the rerun finishes the table; every object equals the local run's file
    r = _job(uri)
    assert r.wait(600) == 0, r.stderr.read()
    want = {p.relative_to(local.root).as_posix(): p.read_bytes() for p in local.root.rglob("*") if p.is_file()}
    got = bucket_objects(bucket, "ds/")
    assert _visible(got) == _visible(want)
    assert len(Dataset(uri).shards("decisions/exact_dedup")) == total
    assert pq.read_table(pa.BufferReader(got["subsets/exact_dedup/uids.parquet"])).num_rows == 1000
