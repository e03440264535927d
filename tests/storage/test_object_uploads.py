"""One object written as a stream (``storage.ObjectUpload``, ``tables.atomic.atomic_stream``)
against the loopback S3 server and the GCS emulator: the bytes equal a whole upload's, the
object is published only at the end, an error publishes nothing and leaves no upload behind,
and a subset streamed into a bucket equals a local one, file for file."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from gcskit import gs_objects
from s3kit import bucket_objects

from curate import storage
from curate.storage import uploads
from curate.subset import write_subset, write_subset_sorted
from curate.tables import Dataset
from curate.tables.atomic import atomic_stream

HERE = Path(__file__).resolve().parent
MIB = 1 << 20


def _s3():
    import boto3

    return boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])


def _pending_uploads(bucket: str) -> list:
    return _s3().list_multipart_uploads(Bucket=bucket).get("Uploads", [])


def _blocks(total: int, size: int = 300_001) -> list[bytes]:
    """``total`` pseudo-random bytes in writes of an odd size (parts never align with writes)."""
    data = np.random.default_rng(total).integers(0, 256, total, dtype=np.uint8).tobytes()
    return [data[i:i + size] for i in range(0, total, size)]


def test_part_sizes_grow_to_cover_the_largest_object():
    assert uploads.part_bytes(1) == uploads.part_bytes(1000) == 8 * MIB
    assert uploads.part_bytes(1001) == 16 * MIB
    assert sum(uploads.part_bytes(n) for n in range(1, 10_001)) >= 5 << 40  # S3's largest object, 10,000 parts
    assert uploads.part_bytes(10_000) <= 5 << 30  # S3's largest part


def test_s3_stream_in_parts_equals_the_bytes_and_is_published_at_the_end(bucket, monkeypatch):
    monkeypatch.setattr(uploads, "PART_BYTES", 5 * MIB)  # S3's smallest part: three parts here
    blocks = _blocks(12 * MIB + 12345)
    loc = storage.resolve(f"s3://{bucket}/big/blob.bin")
    up = storage.ObjectUpload(loc, parts_in_flight=2)
    for b in blocks:
        up.write(b)
    assert not storage.exists(loc)  # parts uploaded, nothing published yet
    up.complete()
    data = b"".join(blocks)
    assert bucket_objects(bucket, "big/") == {"blob.bin": data}
    assert (up.size, up.sha256) == (len(data), hashlib.sha256(data).hexdigest())
    assert _s3().head_object(Bucket=bucket, Key="big/blob.bin")["ETag"].strip('"').endswith("-3")
    assert _pending_uploads(bucket) == []


@pytest.mark.parametrize("size", [0, 1000])
def test_s3_stream_under_a_part_is_one_put(bucket, size):
    up = storage.ObjectUpload(storage.resolve(f"s3://{bucket}/small.bin"))
    data = bytes(range(256)) * (size // 256) + bytes(size % 256)
    up.write(data)
    up.complete()
    assert bucket_objects(bucket) == {"small.bin": data}
    assert "-" not in _s3().head_object(Bucket=bucket, Key="small.bin")["ETag"]  # not a multipart upload


def test_s3_stream_that_fails_publishes_nothing_and_aborts_its_upload(bucket, monkeypatch):
    monkeypatch.setattr(uploads, "PART_BYTES", 5 * MIB)
    with pytest.raises(RuntimeError, match="the writer failed"), \
            atomic_stream(f"s3://{bucket}/t/part-00000.parquet") as out:
        for b in _blocks(11 * MIB):
            out.write(b)
        assert len(_pending_uploads(bucket)) == 1  # parts went up during the writes
        raise RuntimeError("the writer failed")
    assert bucket_objects(bucket) == {}  # no object, no marker
    assert _pending_uploads(bucket) == []


def test_a_streamed_shard_gets_its_marker_and_a_rewrite_replaces_both(bucket, monkeypatch):
    monkeypatch.setattr(uploads, "PART_BYTES", 5 * MIB)
    uri = f"s3://{bucket}/t/part-00000.parquet"
    for total in (6 * MIB, 1000):
        data = b"".join(_blocks(total))
        with atomic_stream(uri) as out:
            out.write(data)
        objs = bucket_objects(bucket, "t/")
        assert objs["part-00000.parquet"] == data
        assert json.loads(objs["_committed/part-00000.parquet"]) == {
            "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        assert storage.committed(uri)
    # a rewrite that fails leaves no marker: the old object is not taken for the new one
    with pytest.raises(RuntimeError), atomic_stream(uri) as out:
        out.write(b"x")
        raise RuntimeError("stop")
    assert storage.committed(uri)  # the failure came before the publish: the old shard stands


def test_gcs_stream_publishes_at_the_end_and_a_failure_leaves_nothing(gs_bucket):
    blocks = _blocks(3 * MIB)
    loc = storage.resolve(f"gs://{gs_bucket}/d/blob.bin")
    up = storage.ObjectUpload(loc)
    for b in blocks:
        up.write(b)
    assert not storage.exists(loc)
    up.complete()
    assert gs_objects(gs_bucket) == {"d/blob.bin": b"".join(blocks)}  # the temporary key is gone
    with pytest.raises(RuntimeError), atomic_stream(f"gs://{gs_bucket}/d/other.bin", shard=False) as out:
        out.write(b"half")
        raise RuntimeError("stop")
    assert gs_objects(gs_bucket) == {"d/blob.bin": b"".join(blocks)}


def _uids(n: int, seed: int = 0) -> pa.Array:
    rng = np.random.default_rng(seed)
    hexes = sorted(f"{a:016x}{b:016x}" for a, b in zip(rng.integers(0, 1 << 63, n).tolist(),
                                                       rng.integers(0, 1 << 63, n).tolist()))
    return pa.array(hexes, pa.string())


def test_a_subset_streamed_into_a_bucket_equals_a_local_one(bucket, tmp_path, monkeypatch):
    monkeypatch.setattr(uploads, "PART_BYTES", 5 * MIB)
    uids = _uids(400_000)  # uids.npy 6.4 MB and uids.parquet ~7 MB: two parts each
    chunks = [uids.slice(i, 50_000) for i in range(0, len(uids), 50_000)]
    write_subset_sorted(Dataset(tmp_path / "ds"), "s", chunks, len(uids), {"stage": "t"})
    write_subset_sorted(Dataset(f"s3://{bucket}/ds"), "s", chunks, len(uids), {"stage": "t"})
    local = {p.name: p.read_bytes() for p in (tmp_path / "ds/subsets/s").iterdir()}
    got = bucket_objects(bucket, "ds/subsets/s/")
    assert {k: v for k, v in got.items() if not k.startswith("_committed/")} == local
    assert _s3().head_object(Bucket=bucket, Key="ds/subsets/s/uids.npy")["ETag"].strip('"').endswith("-2")
    assert json.loads(got["_committed/uids.parquet"])["sha256"] == hashlib.sha256(local["uids.parquet"]).hexdigest()


def test_a_subset_that_fails_midway_publishes_neither_file(bucket, monkeypatch):
    monkeypatch.setattr(uploads, "PART_BYTES", 5 * MIB)
    ds = Dataset(f"s3://{bucket}/ds")
    write_subset(ds, "s", ["0" * 32])  # an earlier subset of the same name stays whole
    before = bucket_objects(bucket, "ds/subsets/s/")
    uids = _uids(600_000)

    def chunks():
        yield uids.slice(0, 500_000)  # past a part of each file
        raise RuntimeError("the decisions could not be read")

    with pytest.raises(RuntimeError, match="could not be read"):
        write_subset_sorted(ds, "s", chunks(), len(uids))
    assert bucket_objects(bucket, "ds/subsets/s/") == before
    assert _pending_uploads(bucket) == []


@pytest.mark.slow
def test_a_subset_write_killed_mid_stream_shows_nothing_and_a_rerun_equals_a_local_one(bucket, tmp_path):
    """SIGKILL while both files stream up: neither is published (the old subset, its marker
    and manifest stand), and the rerun's objects equal a local write's files."""
    ready = tmp_path / "ready"
    script = f"""
import sys, time
import numpy as np, pyarrow as pa
from curate.storage import uploads
from curate.subset import write_subset_sorted
from curate.tables import Dataset
uploads.PART_BYTES = 5 << 20
rng = np.random.default_rng(0)
hexes = sorted(f"{{a:016x}}{{b:016x}}" for a, b in zip(rng.integers(0, 1 << 63, 600_000).tolist(),
                                                       rng.integers(0, 1 << 63, 600_000).tolist()))
uids = pa.array(hexes, pa.string())
def chunks():
    yield uids.slice(0, 500_000)
    open({str(ready)!r}, "w").close()
    time.sleep(600)
    yield uids.slice(500_000)
write_subset_sorted(Dataset(sys.argv[1]), "s", chunks(), len(uids))
"""
    ds = Dataset(f"s3://{bucket}/ds")
    write_subset(ds, "s", ["0" * 32])
    before = bucket_objects(bucket, "ds/subsets/s/")
    job = subprocess.Popen([sys.executable, "-c", script, ds.root], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ready.exists():
        assert job.poll() is None, job.stderr.read()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    time.sleep(0.5)  # the parts of the first chunk go up
    job.kill()
    job.wait()
    assert bucket_objects(bucket, "ds/subsets/s/") == before  # nothing of the killed write is visible
    uids = _uids(600_000)
    write_subset_sorted(ds, "s", [uids], len(uids))
    write_subset_sorted(Dataset(tmp_path / "local"), "s", [uids], len(uids))
    local = {p.name: p.read_bytes() for p in (tmp_path / "local/subsets/s").iterdir()}
    got = bucket_objects(bucket, "ds/subsets/s/")
    assert {k: v for k, v in got.items() if not k.startswith("_committed/")} == local


def test_datacomp_subset_conversions_stream_into_a_bucket_as_they_write_locally(bucket, tmp_path):
    """A DataComp ``.npy`` subset (unsorted, with a repeat) converted on the driver: reshard's
    ``sample_ids.npy`` and a job's ``--subset`` uid table, each written into the bucket as a
    stream, equal the local files."""
    from curate.reshard.finish import _write_sample_ids
    from curate.subset_file import write_uid_table
    from curate.uid import DATACOMP_DTYPE

    hexes = _uids(50_000, seed=3).to_pylist()
    hexes = hexes[::-1] + hexes[:1]  # unsorted, one uid twice
    src = tmp_path / "pick.npy"
    np.save(src, np.array([(int(u[:16], 16), int(u[16:], 16)) for u in hexes], DATACOMP_DTYPE))
    for out in (tmp_path / "local", f"s3://{bucket}/out"):
        work = tmp_path / f"work-{len(str(out))}"
        work.mkdir()
        _write_sample_ids(src, work, storage.join(out, "sample_ids.npy"))
        assert write_uid_table(src, storage.join(out, "t/part-00000.parquet")) == (len(hexes), False)
    got = bucket_objects(bucket, "out/")
    assert got["sample_ids.npy"] == (tmp_path / "local/sample_ids.npy").read_bytes()
    assert got["t/part-00000.parquet"] == (tmp_path / "local/t/part-00000.parquet").read_bytes()
    assert storage.committed(f"s3://{bucket}/out/t/part-00000.parquet")  # a table shard: marked
    assert len(np.load(tmp_path / "local/sample_ids.npy")) == len(hexes)


def test_a_store_that_refuses_the_upload_is_one_line_naming_the_object(bucket, monkeypatch):
    """The store's refusal reaches the writer (also from Parquet's encoding thread) as one line
    naming the object, and the job fails without publishing."""
    monkeypatch.setattr(uploads, "PART_BYTES", 5 * MIB)
    uids = _uids(400_000)
    ds = Dataset(f"s3://{bucket}-missing/ds")  # a bucket that does not exist
    with pytest.raises(storage.StorageError, match=rf"cannot write s3://{bucket}-missing/ds/subsets/s/uids\."):
        write_subset_sorted(ds, "s", [uids], len(uids))
