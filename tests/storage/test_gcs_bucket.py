"""Datasets in a gs:// bucket on a real Google Cloud Storage emulator on 127.0.0.1
(gcp-storage-emulator over HTTP, found through STORAGE_EMULATOR_HOST like every Google client):
pyarrow's GcsFileSystem writes, lists, reads and deletes there exactly as on GCS. The same bytes
as a local write, commit markers, ingest -> dedup -> select -> sql/stats -> reshard with every
object equal to a local-path run's file, the (advisory) lock, and one-line errors."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
from gcskit import gs_objects
from test_images_bucket import downloaded_template  # noqa: F401 (a fixture: the downloaded images)
from test_object_store import _samples, _write_everything, local_files

from curate import storage
from curate.tables import Dataset


def _cli(*args, **kw):
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True, text=True, **kw)


def _visible(files: dict) -> dict:
    return {k: v for k, v in files.items() if not any(p[:1] in "_." for p in k.split("/"))}


def test_round_trip_identical_to_local(gs_bucket, tmp_path):
    local, remote = Dataset(tmp_path / "ds"), Dataset(f"gs://{gs_bucket}/pools/ds")
    assert remote.remote and remote.location.fs.type_name == "gcs"
    _write_everything(local)
    _write_everything(remote)
    want, got = local_files(local.root), gs_objects(gs_bucket, "pools/ds/")
    assert {k: v for k, v in got.items() if "/_committed/" not in k} == want
    # every shard has its commit marker recording its size and SHA-256
    import hashlib

    for k, v in want.items():
        if k.endswith(".parquet"):
            mark = json.loads(got[k.rsplit("/", 1)[0] + "/_committed/" + k.rsplit("/", 1)[1]])
            assert mark == {"bytes": len(v), "sha256": hashlib.sha256(v).hexdigest()}
    assert remote.tables() == local.tables() == ["decisions/a", "embeddings/tiny", "samples"]
    for t in local.tables():
        assert remote.read(t).equals(local.read(t))
    # a shorter rewrite removes the extra shards (marker first) and leaves no folder-marker object
    remote.write_table("samples", _samples(25).slice(0, 12), rows_per_shard=10)
    keys = gs_objects(gs_bucket, "pools/ds/samples/")
    assert sorted(keys) == ["_committed/part-00000.parquet", "_committed/part-00001.parquet",
                            "part-00000.parquet", "part-00001.parquet"]
    assert remote.count("samples") == 12


def test_ingest_into_gs_matches_local(gs_bucket, tmp_path, monkeypatch):
    """`curate ingest` into gs://: the objects equal a local run's files; a rerun keeps every
    object (same bytes, nothing new); a new plan's tables replace them."""
    from test_ingest_bucket import _ingest, _input, _tables_only

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    inp = _input(tmp_path / "pool.csv")
    local = tmp_path / "local"
    assert _ingest(inp, str(local)).returncode == 0
    uri = f"gs://{gs_bucket}/pools/ds"
    r = _ingest(inp, uri)
    assert r.returncode == 0, r.stderr
    want = {k: v for k, v in local_files(local).items() if not k.startswith(("_", "."))}
    got = gs_objects(gs_bucket, "pools/ds/")
    assert _tables_only(got) == want and any(k.startswith("samples/") for k in want)
    assert "_runs/ingest.json" in got and "_curate.lock" not in got
    ds = Dataset(uri)
    assert sum(ds.count(t) for t in ("samples", "duplicates", "rejects") if t in ds.tables()) == 241
    r = _ingest(inp, uri)
    assert r.returncode == 0, r.stderr
    assert _tables_only(gs_objects(gs_bucket, "pools/ds/")) == want

    # a new plan over the completed run: its tables are swapped in (GCS lists a folder's
    # objects, not its sub-folders: the staging runs are found by a recursive listing)
    other, local2 = _input(tmp_path / "other.csv", 90), tmp_path / "local2"
    assert _ingest(other, str(local2)).returncode == 0
    r = _ingest(other, uri)
    assert r.returncode == 0, r.stderr
    got = gs_objects(gs_bucket, "pools/ds/")
    assert _tables_only(got) == {k: v for k, v in local_files(local2).items() if not k.startswith(("_", "."))}
    assert not [k for k in got if k.startswith("_staging/")]


@pytest.mark.extended
def test_dedup_select_sql_reshard_on_gs_match_local(downloaded_template, gs_bucket, tmp_path):
    """A downloaded dataset in gs://: `dedup exact` -> `select` -> `sql --out gs://` / `stats` ->
    `reshard --out gs://`, every object equal to a local-path run's file."""
    from curate.tables.publish import publish

    shutil.copytree(downloaded_template, tmp_path / "local")
    uri = f"gs://{gs_bucket}/ds"
    publish(downloaded_template, uri)
    runs = {str(tmp_path / "local"): (str(tmp_path / "shards"), str(tmp_path / "q.parquet")),
            uri: (f"gs://{gs_bucket}/shards", f"gs://{gs_bucket}/out/q.parquet")}
    for root, (shards, query_out) in runs.items():
        for args in (["dedup", "exact", root, "--engine", "local"],
                     ["select", root, "--sql", "SELECT uid FROM subsets_exact_dedup WHERE uid > '4'", "--name", "some"],
                     ["sql", root, "SELECT uid, status, sha256 FROM downloads ORDER BY uid", "--out", query_out],
                     ["reshard", root, "--subset", "some", "--out", shards, "--shard-size", "3", "--engine", "local"]):
            r = _cli(*args)
            assert r.returncode == 0, (args, r.stderr)
    files, objects = local_files(tmp_path / "local"), gs_objects(gs_bucket, "ds/")
    for t in ("decisions/exact_dedup/", "subsets/exact_dedup/", "subsets/some/"):
        assert {k for k in _visible(files) if k.startswith(t)}, t
    assert _visible(objects) == _visible(files)
    marks = {k.replace("_committed/", "") for k in objects if "/_committed/" in k}
    assert {k for k in _visible(objects) if k.endswith(".parquet")} <= marks  # every visible shard committed
    assert "_curate.lock" not in objects and not [k for k in objects if k.startswith("_tmp/")]
    assert gs_objects(gs_bucket, "out/") == {"q.parquet": (tmp_path / "q.parquet").read_bytes()}

    def skip_stamps(d):  # the per-shard stats and meta.json hold the run's time and paths
        return {k: v for k, v in d.items() if not k.endswith("_stats.json") and k != "meta.json"}

    want = skip_stamps(local_files(tmp_path / "shards"))
    assert skip_stamps(gs_objects(gs_bucket, "shards/")) == want and any(k.endswith(".tar") for k in want)
    r = _cli("stats", uri)
    assert r.returncode == 0, r.stderr
    cells = [ln.split("│") for ln in r.stdout.splitlines() if ln.count("│") == 3]
    assert {c[1].strip(): c[2].strip() for c in cells}.items() >= {"downloads": "12", "samples": "12"}.items()


def test_exact_dedup_on_spark_matches_local(spark, gs_bucket, tmp_path):
    """Spark local mode's workers reach the emulator through the settings the driver ships
    with every task (STORAGE_EMULATOR_HOST; the session started before it was set)."""
    from test_jobs_bucket import _vectors, build

    from curate.embedding_space.jobs import run_exact_dedup
    from curate.engine import LocalExecutor
    from curate.engine.spark import SparkExecutor

    x = _vectors(n=200)
    local, remote = build(str(tmp_path / "local"), x), build(f"gs://{gs_bucket}/ds", x)
    want = run_exact_dedup(local, executor=LocalExecutor())["counts"]
    assert run_exact_dedup(remote, executor=SparkExecutor(spark))["counts"] == want and want["removed"] > 0
    assert _visible(gs_objects(gs_bucket, "ds/")) == _visible(local_files(local.root))


def test_unmarked_object_is_invisible(gs_bucket):
    """Commit markers on gs:// as on s3://: an object without its marker (a writer stopped
    between the upload and the marker, or a partial upload an unwinding error completed) is not
    read, and a rerun's resume check does not count it."""
    ds = Dataset(f"gs://{gs_bucket}/ds")
    ds.write_table("samples", _samples(20), rows_per_shard=10)
    good = gs_objects(gs_bucket, "ds/samples/")["part-00001.parquet"]
    storage.put_bytes(storage.resolve(f"gs://{gs_bucket}/ds/samples/part-00002.parquet"), good[: len(good) // 2])
    storage.put_bytes(storage.resolve(f"gs://{gs_bucket}/ds/other/part-00000.parquet"), good)
    assert ds.tables() == ["samples"] and ds.count("samples") == 20 and len(ds.shards("samples")) == 2
    assert not storage.committed(f"gs://{gs_bucket}/ds/samples/part-00002.parquet")
    assert storage.committed(f"gs://{gs_bucket}/ds/samples/part-00001.parquet")


def test_a_large_shard_file_is_committed_whole_and_marked(gs_bucket, tmp_path, monkeypatch):
    """A shard file past ``WHOLE_SHARD_BYTES`` goes up streamed (through a hidden temporary key,
    published by a copy), hashed on the way: the object and its marker equal ``commit_shard`` of
    the same bytes, and no temporary key is left."""
    import hashlib

    from curate.storage import commits

    monkeypatch.setattr(commits, "WHOLE_SHARD_BYTES", 1 << 20)
    data = os.urandom((8 << 20) + 4321)
    (tmp_path / "part.parquet").write_bytes(data)
    storage.commit_shard_file(storage.resolve(f"gs://{gs_bucket}/a/t/part-00000.parquet"), tmp_path / "part.parquet")
    storage.commit_shard(storage.resolve(f"gs://{gs_bucket}/b/t/part-00000.parquet"), data)
    a, b = gs_objects(gs_bucket, "a/"), gs_objects(gs_bucket, "b/")
    assert a == b and sorted(a) == ["t/_committed/part-00000.parquet", "t/part-00000.parquet"]
    assert json.loads(a["t/_committed/part-00000.parquet"]) == {"bytes": len(data),
                                                                "sha256": hashlib.sha256(data).hexdigest()}


def test_lock_on_gs_is_advisory_but_holds(gs_bucket):
    """pyarrow's GCS filesystem has no conditional create, so the lock object on gs:// is
    advisory (check, then write; docs/storage.md); a held lock still stops a second writer with
    one line naming the holder, goes when released, and a dead holder's is taken over."""
    from curate.lock import LOCK_FILE, acquire, release

    root = f"gs://{gs_bucket}/ds"
    acquire(root)
    try:
        assert json.loads(gs_objects(gs_bucket, "ds/")[LOCK_FILE])["pid"] == os.getpid()
        r = subprocess.run([sys.executable, "-m", "curate.cli", "dedup", "exact", root, "--engine", "local"],
                           capture_output=True, text=True)
        assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
        assert f"dataset {root} is being written by pid {os.getpid()}" in r.stderr
    finally:
        release(root)
    assert LOCK_FILE not in gs_objects(gs_bucket, "ds/")
    r = subprocess.run([sys.executable, "-c", f"import os; from curate.lock import acquire; acquire({root!r}); "
                        "os.kill(os.getpid(), 9)"], capture_output=True, text=True)
    assert r.returncode == -9 and LOCK_FILE in gs_objects(gs_bucket, "ds/")
    acquire(root)
    assert json.loads(gs_objects(gs_bucket, "ds/")[LOCK_FILE])["pid"] == os.getpid()
    release(root)
    assert LOCK_FILE not in gs_objects(gs_bucket, "ds/")


def test_storage_options_and_bad_paths(gs_bucket, gcs_server, tmp_path):
    """--storage-option endpoint_url=... (no STORAGE_EMULATOR_HOST) reaches the server; a query
    outside the dataset, a missing dataset, a URI without a bucket, a bad option value and an
    endpoint that does not answer are each one line, exit 2."""
    Dataset(f"gs://{gs_bucket}/ds").write_table("samples", _samples(5))
    env = {k: v for k, v in os.environ.items() if k != "STORAGE_EMULATOR_HOST"}
    opts = ["--storage-option", f"endpoint_url={gcs_server}", "--storage-option", "anonymous=true"]
    r = _cli("sql", f"gs://{gs_bucket}/ds", "SELECT count(*) AS n FROM samples", "--out", str(tmp_path / "n.csv"),
             *opts, env=env)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "n.csv").read_text().splitlines()[1] == "5"
    # ingest reads its input objects in place (Parquet by range reads, CSV streamed) with the same settings
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf = pa.BufferOutputStream()
    pq.write_table(pa.table({"url": [f"http://127.0.0.1/p/{i}.jpg" for i in range(6)], "caption": ["p"] * 6}), buf,
                   row_group_size=2)
    storage.put_bytes(storage.resolve(f"gs://{gs_bucket}/in/a.parquet"), buf.getvalue().to_pybytes())
    storage.put_bytes(storage.resolve(f"gs://{gs_bucket}/in/b.csv"),
                      b"url,caption\nhttp://127.0.0.1/c/1.jpg,c\n,no url\n")
    r = _cli("ingest", f"gs://{gs_bucket}/in/", "-o", str(tmp_path / "ing"), "--engine", "local", *opts,
             env={**env, "CURATE_WORK_DIR": str(tmp_path / "work")})
    assert r.returncode == 0, r.stderr
    assert (Dataset(tmp_path / "ing").count("samples"), Dataset(tmp_path / "ing").count("rejects")) == (7, 1)
    assert not (tmp_path / "work").exists()  # nothing copied
    # gcsfs-style aliases name the same settings (in-process, options given to resolve)
    loc = storage.resolve(f"gs://{gs_bucket}/ds/samples", {"endpoint_url": gcs_server, "token": "anon",
                                                            "project": "p", "retry_time_limit": "5"})
    assert storage.listing(loc) and loc.fs.type_name == "gcs"
    Dataset(f"gs://{gs_bucket}/other").write_table("t", _samples(3))
    other = f"gs://{gs_bucket}/other/t/part-00000.parquet"
    for args, text in (  # the first: read-only and confined to the dataset, another prefix is refused
            (["sql", f"gs://{gs_bucket}/ds", f"SELECT * FROM read_parquet('{other}')"], "SQL error"),
            (["sql", f"gs://{gs_bucket}/nope", "SELECT 1"], f"gs://{gs_bucket}/nope does not exist"),
            (["stats", "gs:///ds"], "needs a bucket"),
            (["stats", f"gs://{gs_bucket}/ds", "--storage-option", "retry_time_limit=soon"], "--storage-option for gs"),
            (["sql", f"gs://{gs_bucket}/ds", "SELECT 1", "--storage-option", "endpoint_url=http://127.0.0.1:9",
              "--storage-option", "retry_time_limit=1"], f"gs://{gs_bucket}/ds")):
        r = _cli(*args)  # STORAGE_EMULATOR_HOST set: nothing may go to the real GCS endpoint
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and text in r.stderr, (args, r.stderr)

