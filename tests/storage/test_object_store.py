"""Datasets in an S3 bucket on a real S3 server on 127.0.0.1 (moto's standalone server over
HTTP): the same bytes as a local write, commit markers, kill -9 mid-table, SQL, the lock."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import boto3
import pyarrow as pa
import pytest

from curate import storage
from curate.manifest import RunManifest, read_manifest
from curate.tables import Dataset, ShardWriter
from s3kit import bucket_objects
from shard_writer import shard_rows

HERE = Path(__file__).resolve().parent


def local_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _samples(n: int) -> pa.Table:
    from curate.uid import derive_uid

    uids = sorted(derive_uid(f"http://127.0.0.1/{i}.jpg", f"caption {i}") for i in range(n))
    return pa.table({"uid": uids, "text": [f"caption {i}" for i in range(n)], "value": list(range(n))})


def _write_everything(ds: Dataset) -> None:
    t = _samples(25)
    ds.write_table("samples", t, rows_per_shard=10)
    ds.write_table("decisions/a", t.slice(0, 7), rows_per_shard=5)
    w = ShardWriter(ds, "embeddings/tiny", t.schema, rows_per_shard=8)
    w.write(t)
    w.close()
    ds.write_json("subsets/s/_manifest.json", {"rows": 25})


def test_round_trip_identical_to_local(bucket, tmp_path):
    local, remote = Dataset(tmp_path / "ds"), Dataset(f"s3://{bucket}/pools/ds")
    assert remote.remote and remote.root == f"s3://{bucket}/pools/ds"
    _write_everything(local)
    _write_everything(remote)

    want, got = local_files(local.root), bucket_objects(bucket, "pools/ds/")
    markers = {k: v for k, v in got.items() if "/_committed/" in k}
    assert {k: v for k, v in got.items() if k not in markers} == want  # every object byte-identical
    # one marker per shard, recording the shard's size and SHA-256
    shards = {k for k in want if k.endswith(".parquet")}
    assert {k.replace("/_committed/", "/") for k in markers} == shards
    for k, body in markers.items():
        data = want[k.replace("/_committed/", "/")]
        assert json.loads(body) == {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}

    assert remote.tables() == local.tables() == ["decisions/a", "embeddings/tiny", "samples"]
    for t in local.tables():
        assert remote.count(t) == local.count(t)
        assert remote.read(t).equals(local.read(t))
        assert [b.num_rows for b in remote.iter_batches(t)] == [b.num_rows for b in local.iter_batches(t)]
        assert [s.rsplit("/", 1)[1] for s in remote.shards(t)] == [p.name for p in local.shards(t)]

    # a shorter rewrite drops the old shards beyond it, markers first
    remote.write_table("samples", _samples(25).slice(0, 12), rows_per_shard=10)
    assert [s.rsplit("/", 1)[1] for s in remote.shards("samples")] == ["part-00000.parquet", "part-00001.parquet"]
    assert not [k for k in bucket_objects(bucket, "pools/ds/samples/") if "00002" in k]


def test_run_manifest_in_bucket(bucket):
    ds = Dataset(f"s3://{bucket}/ds")
    m = RunManifest("ingest", {"rows_per_shard": 10})
    m["counts"] = {"kept": 3}
    path = m.write(ds)
    assert path == f"s3://{bucket}/ds/_runs/ingest.json"
    assert read_manifest(ds, "ingest")["counts"] == {"kept": 3}
    keys = bucket_objects(bucket, "ds/_runs/")
    assert "ingest.json" in keys and len([k for k in keys if k.startswith("history/ingest-")]) == 1
    assert read_manifest(ds, "filter") is None
    with pytest.raises(Exception, match="no Parquet shards"):
        ds.read("samples")


def test_shard_without_marker_is_invisible(bucket, tmp_path):
    """An object without its commit marker (an upload that a library closed on an error, a
    writer killed between object and marker, a partial file on HDFS) is not part of the table."""
    ds = Dataset(f"s3://{bucket}/ds")
    ds.write_table("samples", _samples(20), rows_per_shard=10)
    good = bucket_objects(bucket, "ds/samples/")["part-00001.parquet"]
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    s3.put_object(Bucket=bucket, Key="ds/samples/part-00002.parquet", Body=good[: len(good) // 2])
    s3.put_object(Bucket=bucket, Key="ds/other/part-00000.parquet", Body=good[:100])
    assert ds.tables() == ["samples"]
    assert len(ds.shards("samples")) == 2 and ds.count("samples") == 20
    assert not storage.committed(f"s3://{bucket}/ds/samples/part-00002.parquet")
    assert storage.committed(f"s3://{bucket}/ds/samples/part-00001.parquet")
    from curate.sql import query

    assert query(ds, "SELECT count(*) FROM samples").column(0)[0].as_py() == 20


def test_kill_9_mid_table_then_rerun(bucket, tmp_path):
    """A writer killed with SIGKILL mid-table leaves only whole, committed shards visible; the
    rerun skips them, writes the rest, and every object equals a local run's file."""
    shards, rows = 12, 4000
    root = f"s3://{bucket}/ds"
    cmd = [sys.executable, str(HERE / "shard_writer.py")]
    env = {**os.environ, "PYTHONPATH": str(HERE.parents[1])}
    proc = subprocess.Popen([*cmd, root, str(shards), str(rows)], stdout=subprocess.PIPE, text=True, env=env)
    for line in proc.stdout:
        if line.strip() == "wrote 2":
            break
    os.kill(proc.pid, signal.SIGKILL)  # mid-table: shard 3 is being written or about to be
    proc.wait()
    assert proc.returncode == -signal.SIGKILL

    ds = Dataset(root)
    visible = ds.shards("samples")
    assert 3 <= len(visible) < shards
    for i, s in enumerate(visible):  # each visible shard is whole: it reads back as written
        assert s.endswith(f"part-{i:05d}.parquet")
        assert ds.read("samples").slice(i * rows, rows).equals(shard_rows(i, rows))

    out = subprocess.run([*cmd, root, str(shards), str(rows)], capture_output=True, text=True, env=env, check=True)
    assert out.stdout.count("skip") == len(visible)
    subprocess.run([*cmd, str(tmp_path / "local"), str(shards), str(rows)], check=True, env=env,
                   capture_output=True)
    want = local_files(tmp_path / "local")
    got = {k: v for k, v in bucket_objects(bucket, "ds/").items() if "/_committed/" not in k}
    assert got == want and len(want) == shards
    assert ds.count("samples") == shards * rows


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True, text=True, **kw)


def test_curate_sql_and_stats_on_bucket(bucket, tmp_path):
    ds = Dataset(f"s3://{bucket}/ds")
    ds.write_table("samples", _samples(30), rows_per_shard=10)
    ds.write_table("scores/a", _samples(30).slice(0, 10), rows_per_shard=10)
    ds.write_table("scores/b", _samples(30).slice(10, 5), rows_per_shard=10)
    r = _cli("sql", ds.root, "SELECT count(*) AS n, sum(value) AS s FROM samples", "--out", str(tmp_path / "r.csv"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "r.csv").read_text().splitlines() == ['"n","s"', f"30,{sum(range(30))}"]
    r = _cli("sql", ds.root, "SELECT _table, count(*) AS n FROM scores GROUP BY ALL ORDER BY 1",
             "--out", str(tmp_path / "u.csv"))  # the union view over a folder of tables
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "u.csv").read_text().splitlines() == ['"_table","n"', '"a",10', '"b",5']
    # read-only and confined to the dataset: another prefix in the same bucket is refused
    Dataset(f"s3://{bucket}/other").write_table("t", _samples(3))
    r = _cli("sql", ds.root, f"SELECT * FROM read_parquet('s3://{bucket}/other/t/part-00000.parquet')")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "SQL error" in r.stderr
    r = _cli("sql", f"s3://{bucket}/nope", "SELECT 1")  # no such dataset: one line, exit 2
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and f"s3://{bucket}/nope does not exist" in r.stderr
    r = _cli("stats", ds.root)
    assert r.returncode == 0, r.stderr
    rows = {ln.split("│")[1].strip(): ln.split("│")[2].strip() for ln in r.stdout.splitlines() if ln.count("│") == 3}
    assert rows == {"samples": "30", "scores/a": "10", "scores/b": "5"}


def test_storage_option_overrides_environment(bucket, tmp_path, monkeypatch):
    """--storage-option endpoint_url=... works with no AWS_ENDPOINT_URL in the environment."""
    endpoint = os.environ["AWS_ENDPOINT_URL"]
    Dataset(f"s3://{bucket}/ds").write_table("samples", _samples(5))
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}
    r = _cli("sql", f"s3://{bucket}/ds", "SELECT count(*) AS n FROM samples", "--out", str(tmp_path / "n.csv"),
             "--storage-option", f"endpoint_url={endpoint}", env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "n.csv").read_text().splitlines()[1] == "5"
    r = _cli("sql", f"s3://{bucket}/ds", "SELECT 1", "--storage-option", "endpoint_url", env=env)
    assert r.returncode == 2 and "KEY=VALUE" in r.stderr


def test_lock_object_on_bucket(bucket):
    from curate.lock import LOCK_FILE, acquire, release

    root = f"s3://{bucket}/ds"
    acquire(root)
    try:
        body = json.loads(bucket_objects(bucket, "ds/")[LOCK_FILE])
        assert body["pid"] == os.getpid()
        r = subprocess.run([sys.executable, "-c", f"from curate.lock import acquire; acquire({root!r})"],
                           capture_output=True, text=True)
        assert r.returncode != 0 and f"dataset {root} is being written by pid {os.getpid()}" in r.stderr
    finally:
        release(root)
    assert LOCK_FILE not in bucket_objects(bucket, "ds/")
    # a holder killed with -9 leaves its object behind; the next writer on this host takes it over
    r = subprocess.run([sys.executable, "-c", f"import os; from curate.lock import acquire; acquire({root!r}); "
                        "os.kill(os.getpid(), 9)"], capture_output=True, text=True)
    assert r.returncode == -9 and LOCK_FILE in bucket_objects(bucket, "ds/")
    acquire(root)
    assert json.loads(bucket_objects(bucket, "ds/")[LOCK_FILE])["pid"] == os.getpid()
    release(root)


def test_demo_workdir_stays_local_and_a_missing_uri_dataset_is_named(bucket):
    """`demo --workdir` is the one path still refused as a URI (it serves its pool from disk);
    a command on a working copy of a URI dataset that is not there names the URI, not the
    local copy."""
    r = _cli("demo", "--workdir", f"s3://{bucket}/demo")
    assert r.returncode == 2 and r.stderr.count("\n") == 1
    assert "this command does not read or write object storage yet (docs/storage.md" in r.stderr
    r = _cli("coverage", f"s3://{bucket}/nods", "--concepts", "concepts.txt")
    assert r.returncode == 2 and r.stderr == f"curate: error: dataset folder s3://{bucket}/nods does not exist\n"


def test_resolve_schemes(tmp_path, s3_env):
    loc = storage.resolve(tmp_path / "x")
    assert loc.local and loc.path == (tmp_path / "x").resolve().as_posix() and loc.renames
    assert storage.resolve(f"file://{tmp_path}/x").path == loc.path
    s3 = storage.resolve("s3://bkt/a/b/")
    assert (s3.scheme, s3.path, s3.uri, s3.renames) == ("s3", "bkt/a/b", "s3://bkt/a/b", False)
    assert s3.fs.type_name == "s3"
    mem = storage.resolve("memory://m/ds")  # a scheme only fsspec has
    assert mem.scheme == "memory" and mem.fs.type_name.startswith("py::fsspec")
    ds = Dataset(f"memory://m/{tmp_path.name}")  # the same protocol through fsspec's filesystem
    ds.write_table("x/y", _samples(7), rows_per_shard=3)
    assert ds.tables() == ["x/y"] and ds.read("x/y").equals(_samples(7))
    ds.write_table("x/y", _samples(7).slice(0, 2), rows_per_shard=3)
    assert [s.rsplit("/", 1)[1] for s in ds.shards("x/y")] == ["part-00000.parquet"] and ds.count("x/y") == 2
    with pytest.raises(storage.StorageError, match="needs a bucket"):
        storage.resolve("s3:///nobucket")
    with pytest.raises(storage.StorageError, match="no filesystem"):
        storage.resolve("nosuchscheme://x/y")
    assert not storage.is_uri("plain/path") and not storage.is_uri(f"file://{tmp_path}") and storage.is_uri("gs://b/k")


@pytest.mark.parametrize("uri, said", [
    ("s3://bkt/run#1", "'#' cannot be part of a URI's path"),  # wrote to bkt/run, over another dataset
    ("gs://b/q?r/ds", "'?' cannot be part of a URI's path"),
    ("file:///tmp/fa#b/ds", "'#' cannot be part of a URI's path"),
    ("s3://bkt//ds", "an empty folder name ('//')"),  # a pyarrow traceback
    ("s3:/bkt/x", "not a s3:// URI (one slash or none after 's3:'); write s3://bkt/x"),  # a local folder "s3:"
    ("GS:bkt/x", "not a gs:// URI"),
])
def test_uris_a_parser_would_cut_or_a_store_refuse_are_one_line(uri, said, s3_env):
    with pytest.raises(storage.StorageError) as e:
        storage.resolve(uri)
    assert said in str(e.value) and str(e.value).startswith(uri)


def test_an_upper_case_scheme_is_the_store_and_options_are_checked(s3_env, bucket):
    """S3:// is s3:// (it was a local folder named S3:); a non-number or non-boolean storage
    option is one line (a traceback, or anonymous=maybe read as false); a store that answers
    'access denied' is not 'cannot reach storage'."""
    from curate.storage.objects import _REFUSED
    from curate.storage.settings import truthy

    assert storage.is_uri(f"S3://{bucket}/ds") and storage.resolve(f"S3://{bucket}/ds").uri == f"s3://{bucket}/ds"
    with pytest.raises(storage.StorageError, match="--storage-option for s3: could not convert string to float"):
        storage.resolve(f"s3://{bucket}/ds", {"connect_timeout": "abc"})
    with pytest.raises(storage.StorageError, match="anonymous='maybe': expected true or false"):
        storage.resolve(f"s3://{bucket}/ds", {"anonymous": "maybe"})
    assert truthy("Yes") and not truthy("off")
    assert _REFUSED.search("AWS Error ACCESS_DENIED during HeadObject operation")
    assert _REFUSED.search("HTTP status 403") and not _REFUSED.search("Could not connect to 127.0.0.1:4030")


def test_a_shard_committed_from_a_file_is_streamed_and_marked_alike(bucket, tmp_path, monkeypatch):
    """``commit_shard_file`` (every table shard written through ``atomic_path`` on a store, a
    subset's ``uids.parquet`` included) uploads a file past ``WHOLE_SHARD_BYTES`` streamed and
    hashes it a block at a time: the object and its marker equal ``commit_shard`` of the same
    bytes (a file of several 8 MiB blocks; before, every file was read whole into memory). The
    file is read once: hashed on its way up, not in a pass of its own before the upload."""
    import os

    from curate import storage
    from curate.storage import commits

    def bytes_read() -> int:  # read by this process, every thread, from files and sockets
        return int(dict(line.split(": ") for line in open("/proc/self/io").read().splitlines())["rchar"])

    monkeypatch.setattr(commits, "WHOLE_SHARD_BYTES", 1 << 20)
    data = os.urandom((8 << 20) * 2 + 12345)
    (tmp_path / "part.parquet").write_bytes(data)
    before = bytes_read()
    storage.commit_shard_file(storage.resolve(f"s3://{bucket}/a/t/part-00000.parquet"), tmp_path / "part.parquet")
    assert bytes_read() - before < 1.5 * len(data)  # once (the hashing pass of its own read it twice)
    storage.commit_shard(storage.resolve(f"s3://{bucket}/b/t/part-00000.parquet"), data)
    a, b = bucket_objects(bucket, "a/"), bucket_objects(bucket, "b/")
    assert a == b and a["t/part-00000.parquet"] == data
    assert json.loads(a["t/_committed/part-00000.parquet"]) == {"bytes": len(data),
                                                                "sha256": hashlib.sha256(data).hexdigest()}
    assert storage.committed(f"s3://{bucket}/a/t/part-00000.parquet")


def test_shards_past_five_digits_list_in_index_order(bucket, tmp_path):
    """A table of more than 99,999 shards (a todo of 1B rows has 100,000 parts): ``part-100000``
    lists after ``part-99999``, locally and in a bucket, so a table sorted by uid across its
    shards streams in order."""
    from curate.subset import sorted_uids_from_table
    from curate.tables.atomic import write_parquet_atomic

    schema = pa.schema([("uid", pa.string())])
    indices = [99_998, 99_999, 100_000, 100_001, 1_000_000]
    for root in (tmp_path / "ds", f"s3://{bucket}/ds"):
        ds = Dataset(root)
        for k, i in enumerate(indices):  # shard i holds uids greater than every earlier shard's
            write_parquet_atomic(pa.table({"uid": [f"{k:032x}"]}, schema=schema), ds.shard_path("t", i))
        names = [storage.basename(str(p)) for p in ds.shards("t")]
        assert names == [f"part-{i:05d}.parquet" for i in indices], root
        assert [u for c in sorted_uids_from_table(ds, "t", None) for u in c.to_pylist()] == \
            [f"{k:032x}" for k in range(len(indices))]


def test_a_large_object_is_copied_server_side_in_parts(bucket, tmp_path):
    """``copy_file_atomic`` within one S3 store: boto3's managed copy, in parts past its 8 MiB
    threshold (a CopyObject is refused past 5 GB; a subset's ``uids.npy`` at a billion uids is
    16 GB); the same bytes, and to or from a local path the bytes are streamed."""
    from curate.tables.atomic import copy_file_atomic

    data = os.urandom(9 << 20) + b"end"
    src = tmp_path / "big.bin"
    src.write_bytes(data)
    copy_file_atomic(src, f"s3://{bucket}/a/big.bin")  # local -> store: one whole upload
    copy_file_atomic(f"s3://{bucket}/a/big.bin", f"s3://{bucket}/b/big.bin")  # server-side, in parts
    copy_file_atomic(f"s3://{bucket}/b/big.bin", tmp_path / "back.bin")  # store -> local: streamed
    objects = bucket_objects(bucket)
    assert objects["a/big.bin"] == objects["b/big.bin"] == data == (tmp_path / "back.bin").read_bytes()
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    assert s3.head_object(Bucket=bucket, Key="b/big.bin")["ETag"].strip('"').endswith("-2")  # a multipart copy
    assert sorted(p.name for p in tmp_path.iterdir()) == ["back.bin", "big.bin"]  # no temporary file left
