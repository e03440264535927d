"""`curate download` into a dataset in s3://bucket/ds, in place (no local working copy): img2dataset
reads the uids to fetch from the bucket and writes its shards there through fsspec with
curate's S3 settings, on the in-process engine and on Spark local mode (whose workers get the
settings from the driver). The downloads table equals a local-path run's file byte for byte,
every shard holds the same members, the scratch folder is gone and a rerun does nothing."""

from __future__ import annotations

import io
import subprocess
import sys
import tarfile

import pyarrow as pa
import pytest
from PIL import Image
from s3kit import bucket_objects

from curate.download import DownloadOptions, FetchPolicy, run_download
from curate.engine import LocalExecutor
from curate.tables import Dataset, load_schema
from curate.uid import derive_uid


def _samples(tmp_path) -> pa.Table:
    """12 photos on disk (file:// URLs) and 2 that are not there."""
    rows = []
    for i in range(12):
        p = tmp_path / "photos" / f"{i}.jpg"
        p.parent.mkdir(exist_ok=True)
        Image.new("RGB", (40 + i, 30), (20 * i, 100, 200 - 10 * i)).save(p, quality=90)
        rows.append((p.as_uri(), f"photo {i}"))
    rows += [((tmp_path / "photos" / f"gone{i}.jpg").as_uri(), f"gone {i}") for i in range(2)]
    n = len(rows)
    t = pa.table({"uid": [derive_uid(u, c) for u, c in rows], "url": [u for u, _ in rows], "text": [c for _, c in rows],
                  "source_file": ["/in/pool.csv"] * n, "source_row": pa.array(range(n), pa.int64()),
                  "original_width": pa.nulls(n, pa.int32()), "original_height": pa.nulls(n, pa.int32()),
                  "extra": pa.nulls(n, pa.string())})
    return load_schema("samples").conform(t.sort_by("uid"))


def _opts() -> DownloadOptions:
    return DownloadOptions(samples_per_shard=5, thread_count=4, policy=FetchPolicy(allow_file_urls=True))


def _members(data: bytes) -> dict:
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        return {m.name: tf.extractfile(m).read() for m in tf.getmembers()}


def _check_same(local: Dataset, bucket: str) -> None:
    got = bucket_objects(bucket, "ds/")
    want = {p.relative_to(local.root).as_posix(): p.read_bytes() for p in local.root.rglob("*") if p.is_file()}
    table = {k: v for k, v in want.items() if k.startswith("downloads/")}
    assert table and {k: v for k, v in got.items() if k.startswith("downloads/") and "/_committed/" not in k} == table
    assert all(f"downloads/_committed/{k.split('/')[-1]}" in got for k in table)  # committed shards
    tars = sorted(k for k in want if k.endswith(".tar"))
    assert tars == sorted(k for k in got if k.endswith(".tar")) and len(tars) == 3
    for k in tars:
        assert _members(got[k]) == _members(want[k]), k
    assert {k for k in got if k.endswith("_stats.json")} == {k for k in want if k.endswith("_stats.json")}
    assert not any(k.startswith("_download/") for k in got)  # the uids to fetch and img2dataset's scratch


@pytest.mark.parametrize("engine", ["local", pytest.param("spark", marks=pytest.mark.extended)])
def test_download_into_bucket_matches_local(bucket, tmp_path, engine, request):
    samples = _samples(tmp_path)
    local = Dataset(tmp_path / "local")
    local.write_table("samples", samples, schema="samples")
    assert run_download(local, LocalExecutor(), _opts())["success"] == 12
    remote = Dataset(f"s3://{bucket}/ds")
    remote.write_table("samples", samples, schema="samples")
    if engine == "spark":
        from curate.engine.spark import SparkExecutor

        executor = SparkExecutor(request.getfixturevalue("spark"))
    else:
        executor = LocalExecutor()
    stats = run_download(remote, executor, _opts())
    assert stats["success"] == 12 and stats["failed"] == 2 and stats["new_shards"] == ["00000000", "00000001", "00000002"]
    _check_same(local, bucket)
    # img2dataset's raw results (no commit markers in a bucket) are `images` in SQL and stats, as in a folder
    from curate.sql.connection import connect
    from curate.stats import image_attempts

    sql = "SELECT count(*), count(DISTINCT url) FROM images"
    assert connect(remote).execute(sql).fetchone() == connect(local).execute(sql).fetchone() == (14, 14)
    assert image_attempts(remote) == image_attempts(local) == (14, 3)
    again = run_download(remote, executor, _opts(), retry_failed=True)  # the two missing files, retried
    assert again["to_download"] == 2 and again["new_shards"] == ["00000003"]
    assert remote.count("downloads") == 14


def test_download_cli_into_bucket(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    remote = Dataset(f"s3://{bucket}/ds")
    remote.write_table("samples", _samples(tmp_path), schema="samples")
    args = [sys.executable, "-m", "curate.cli", "download", f"s3://{bucket}/ds", "--samples-per-shard", "5",
            "--allow-file-urls", "--engine", "local"]
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "12 success, 2 failed of 14 samples" in r.stdout + r.stderr
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").rglob("*.parquet"))  # no working copy
    before = bucket_objects(bucket, "ds/")
    r = subprocess.run(args, capture_output=True, text=True)
    assert r.returncode == 0 and "nothing to do" in r.stdout + r.stderr, r.stderr
    after = bucket_objects(bucket, "ds/")
    assert {k: v for k, v in after.items() if not k.startswith("_runs/")} == \
        {k: v for k, v in before.items() if not k.startswith("_runs/")}


def test_download_into_gs_bucket_matches_local(gs_bucket, tmp_path):
    """The same into gs:// (the loopback GCS emulator): img2dataset gets fsspec's wrapper of the
    pyarrow GCS filesystem curate reads with."""
    from gcskit import gs_objects

    samples = _samples(tmp_path)
    local = Dataset(tmp_path / "local")
    local.write_table("samples", samples, schema="samples")
    run_download(local, LocalExecutor(), _opts())
    remote = Dataset(f"gs://{gs_bucket}/ds")
    remote.write_table("samples", samples, schema="samples")
    stats = run_download(remote, LocalExecutor(), _opts())
    assert stats["success"] == 12 and stats["new_shards"] == ["00000000", "00000001", "00000002"]
    got = gs_objects(gs_bucket, "ds/")
    want = {p.relative_to(local.root).as_posix(): p.read_bytes() for p in local.root.rglob("*") if p.is_file()}
    table = {k: v for k, v in want.items() if k.startswith("downloads/")}
    assert table and {k: v for k, v in got.items() if k.startswith("downloads/") and "/_committed/" not in k} == table
    for k in sorted(k for k in want if k.endswith(".tar")):
        assert _members(got[k]) == _members(want[k]), k
    assert not any(k.startswith("_download/") for k in got)
    assert run_download(remote, LocalExecutor(), _opts())["skipped"] is True


def _store_images(bucket: str, tmp_path) -> dict:
    """Photos on disk and the same bytes in the bucket, plus objects that must not be read;
    name -> local path of the photos."""
    import boto3
    import os

    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    photos = {}
    for name in ("0.jpg", "sub/1.png", "two words.jpg"):
        p = tmp_path / "photos" / name
        p.parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (30 + len(name), 20), (len(name) * 20, 90, 160)).save(p)
        s3.put_object(Bucket=bucket, Key=f"imgs/{name}", Body=p.read_bytes())
        photos[name] = p
    s3.put_object(Bucket=bucket, Key="imgs/big.jpg", Body=b"\xff\xd8" + bytes(300_000))  # over --max-bytes
    s3.put_object(Bucket=bucket, Key="imgs/notes.jpg", Body=b"<html>not a picture</html>")
    s3.put_object(Bucket=bucket, Key="imgs/folder/x.jpg", Body=photos["0.jpg"].read_bytes())
    for key in ("secret/a.jpg", "imgs2/a.jpg"):  # outside the allowed folder
        s3.put_object(Bucket=bucket, Key=key, Body=photos["0.jpg"].read_bytes())
    return photos


def _pool(urls: list[str]) -> pa.Table:
    n = len(urls)
    t = pa.table({"uid": [derive_uid(u, "c") for u in urls], "url": urls, "text": ["c"] * n,
                  "source_file": ["/in/pool.csv"] * n, "source_row": pa.array(range(n), pa.int64()),
                  "original_width": pa.nulls(n, pa.int32()), "original_height": pa.nulls(n, pa.int32()),
                  "extra": pa.nulls(n, pa.string())})
    return load_schema("samples").conform(t.sort_by("uid"))


def _by_url(ds: Dataset) -> dict:
    """url -> (status, error_class, sha256, width, height) of each downloaded sample."""
    urls = dict(zip(*ds.read("samples").select(["uid", "url"]).to_pydict().values()))
    d = ds.read("downloads").to_pydict()
    return {urls[u]: (s, c, h, w, ht) for u, s, c, h, w, ht in
            zip(d["uid"], d["status"], d["error_class"], d["sha256"], d["width"], d["height"])}


@pytest.mark.parametrize("engine", ["local", pytest.param("spark", marks=pytest.mark.extended)])
def test_store_urls_are_read_under_allowed_folders(bucket, tmp_path, s3_requests, engine, request):
    """Image URLs on the store (``s3://bucket/imgs/0.jpg``) are fetched through curate.storage
    with the run's storage settings, under ``--allow-store-prefix`` folders only: each stores
    what a ``file://`` download of the same bytes stores (key as written, a space too). Refused
    (``blocked_store_url``) without a request to the store: a URL outside the folder, one that
    climbs out of it with ``..``, a folder whose name only starts like the allowed one, and
    every store URL when none is allowed. A missing object, a folder, an object over
    ``--max-bytes`` and one that is no image are named as such."""
    photos = _store_images(bucket, tmp_path)
    keys = ("secret/a.jpg", "imgs2/a.jpg", "imgs/0.jpg")
    before = {key: s3_requests(key) for key in keys}  # its upload
    base = f"s3://{bucket}/imgs"
    good = [f"{base}/{name}" for name in photos]
    bad = {f"{base}/gone.jpg": "missing_object", f"{base}/folder": "missing_object",
           f"{base}/big.jpg": "too_large", f"{base}/notes.jpg": "not_an_image",
           f"{base}/../secret/a.jpg": "blocked_store_url", f"s3://{bucket}/secret/a.jpg": "blocked_store_url",
           f"s3://{bucket}/imgs2/a.jpg": "blocked_store_url"}
    if engine == "spark":
        from curate.engine.spark import SparkExecutor

        executor = SparkExecutor(request.getfixturevalue("spark"))
    else:
        executor = LocalExecutor()
    local = Dataset(tmp_path / "local")
    local.write_table("samples", _pool([p.as_uri() for p in photos.values()]), schema="samples")
    run_download(local, LocalExecutor(), _opts())
    want = {name: v for name, v in zip(photos, (_by_url(local)[p.as_uri()] for p in photos.values()))}
    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", _pool(good + list(bad)), schema="samples")
    policy = FetchPolicy(allow_store_prefixes=[base], max_bytes=200_000)
    stats = run_download(ds, executor, DownloadOptions(samples_per_shard=5, thread_count=4, policy=policy))
    got = _by_url(ds)
    assert stats["success"] == 3 and {name: got[f"{base}/{name}"] for name in photos} == want
    assert {u: got[u][1] for u in bad} == bad
    read = {key: s3_requests(key) - before[key] for key in keys}
    assert read == {"secret/a.jpg": 0, "imgs2/a.jpg": 0, "imgs/0.jpg": 1}  # one GET
    messages = dict(zip(*ds.read("downloads").select(["uid", "error_message"]).to_pydict().values()))
    uid = dict(zip(*ds.read("samples").select(["url", "uid"]).to_pydict().values()))
    assert messages[uid[f"{base}/gone.jpg"]] == f"no such object: {base}/gone.jpg"
    assert messages[uid[f"s3://{bucket}/imgs2/a.jpg"]] == (
        f"blocked store URL: s3://{bucket}/imgs2/a.jpg is not under an --allow-store-prefix folder")
    none = Dataset(tmp_path / "none")  # no folder allowed: every store URL refused, none read
    none.write_table("samples", _pool(good), schema="samples")
    run_download(none, LocalExecutor(), _opts())
    assert {v[1] for v in _by_url(none).values()} == {"blocked_store_url"}
    assert s3_requests("imgs/0.jpg") - before["imgs/0.jpg"] == 1


def test_gs_store_urls_are_read_through_pyarrow(gs_bucket, tmp_path):
    """A ``gs://`` image URL (the loopback GCS emulator) is read through pyarrow's filesystem
    (S3's one-request read is boto3's): the same image a ``file://`` download stores; one over
    ``--max-bytes`` and a missing one named as such."""
    from curate import storage

    photo = tmp_path / "p.jpg"
    Image.new("RGB", (33, 21), (200, 30, 60)).save(photo)
    base = f"gs://{gs_bucket}/imgs"
    storage.put_bytes(storage.resolve(f"{base}/p.jpg"), photo.read_bytes())
    storage.put_bytes(storage.resolve(f"{base}/big.jpg"), b"\xff\xd8" + bytes(300_000))
    local = Dataset(tmp_path / "local")
    local.write_table("samples", _pool([photo.as_uri()]), schema="samples")
    run_download(local, LocalExecutor(), _opts())
    ds = Dataset(tmp_path / "ds")
    urls = [f"{base}/p.jpg", f"{base}/big.jpg", f"{base}/gone.jpg"]
    ds.write_table("samples", _pool(urls), schema="samples")
    policy = FetchPolicy(allow_store_prefixes=[f"gcs://{gs_bucket}/imgs/"], max_bytes=200_000)
    run_download(ds, LocalExecutor(), DownloadOptions(samples_per_shard=5, thread_count=2, policy=policy))
    got = _by_url(ds)
    assert got[urls[0]] == _by_url(local)[photo.as_uri()]
    assert (got[urls[1]][1], got[urls[2]][1]) == ("too_large", "missing_object")
