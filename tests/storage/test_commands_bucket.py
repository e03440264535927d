"""Commands run on a dataset in s3://bucket/ds: `curate metadata match/balance` through the CLI
with the metadata list in the bucket too, and MetaCLIP 2's worldwide match and balance on Spark
local mode (objects equal a local run's files), the generated job commands, and the commands
that still refuse a URI with one line."""

from __future__ import annotations

import json
import subprocess
import sys

import boto3
import pyarrow as pa
from s3kit import bucket_objects

from curate.uid import derive_uid


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True, text=True)


def _visible(files: dict, prefix: str) -> dict:
    return {k: v for k, v in files.items() if k.startswith(prefix) and not any(p[:1] in "_." for p in k.split("/"))}


def test_metadata_match_and_balance_on_bucket(bucket, tmp_path, monkeypatch, s3_env):
    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    words = ["red car", "blue sky", "dog", "cat on a mat", "tree"]
    csv = tmp_path / "pool.csv"
    csv.write_text("url,caption\n" + "".join(
        f"http://127.0.0.1/{i}.jpg,a {words[i % 5]} and a {words[(i * 3) % 5]} number {i}\n" for i in range(60)))
    meta = tmp_path / "metadata.json"
    meta.write_text(json.dumps(["red", "sky", "dog", "mat", "car", "nothing here"]))
    boto3.client("s3", endpoint_url=s3_env["AWS_ENDPOINT_URL"]).put_object(
        Bucket=bucket, Key="lists/metadata.json", Body=meta.read_bytes())
    uri = f"s3://{bucket}/ds"
    for root, m in ((str(tmp_path / "local"), str(meta)), (uri, f"s3://{bucket}/lists/metadata.json")):
        for args in (["ingest", str(csv), "-o", root, "--engine", "local"],
                     ["metadata", "match", root, "--metadata", m, "--engine", "local"],
                     ["metadata", "balance", root, "--t", "4", "--seed", "1", "--engine", "local"]):
            r = _cli(*args)
            assert r.returncode == 0, (args, r.stderr)
    local = {p.relative_to(tmp_path / "local").as_posix(): p.read_bytes()
             for p in (tmp_path / "local").rglob("*") if p.is_file()}
    objects = bucket_objects(bucket, "ds/")
    for t in ("metadata_matches/", "entry_counts/", "decisions/metaclip/", "subsets/metaclip/", "entry_balance/"):
        assert _visible(local, t) and _visible(objects, t) == _visible(local, t), t
    assert _visible(objects, "") == _visible(local, "")  # the plot and metaclip/metadata.json too
    assert "_curate.lock" not in objects
    assert not any((tmp_path / "work").rglob("metadata_matches"))  # read and written in place: no working copy


def test_commands_that_refuse_a_uri_say_so_in_one_line(bucket, tmp_path):
    for args in (["demo", "--workdir", f"s3://{bucket}/demo"],):
        r = _cli(*args)
        assert r.returncode == 2 and "object storage" in r.stderr and r.stderr.strip().count("\n") == 0, (args, r.stderr)


def test_cluster_and_dedup_commands_on_bucket(bucket, tmp_path):
    """The generated job commands take a URI DATASET: `curate cluster`, `dedup semantic`,
    `dedup exact` and `prune` on s3://bucket/ds write the objects a local run writes."""
    from test_jobs_bucket import _vectors, build, local_files, visible

    x = _vectors(n=200)
    local = build(str(tmp_path / "local"), x)
    uri = f"s3://{bucket}/ds"
    build(uri, x)
    for root in (str(local.root), uri):
        for args in (["cluster", root, "-k", "4", "-m", "m"],
                     ["dedup", "semantic", root, "--eps", "0.02"],
                     ["prune", "dbp", root, "--keep-fraction", "0.5", "--subset", "semdedup"],
                     ["dedup", "exact", root]):
            r = _cli(*args, "--engine", "local")
            assert r.returncode == 0, (args, r.stderr)
    want, got = visible(local_files(local.root)), visible(bucket_objects(bucket, "ds/"))
    assert any(k.startswith("decisions/dbp/") for k in want) and got == want


def test_metaclip_worldwide_on_bucket_with_spark(bucket, tmp_path, spark):
    """MetaCLIP 2's worldwide match (language ID per caption, per-language lists) and balance on
    s3://bucket/ds with Spark local mode, reading and writing the bucket directly: every object
    equals the local in-process run's file; a resumed match skips every committed shard."""
    from curate.engine import LocalExecutor
    from curate.engine.spark import SparkExecutor
    from curate.metaclip.jobs import run_balance, run_match
    from curate.tables import Dataset, load_schema

    texts = (["a dog on the beach with a red ball"] * 9 + ["le chien joue dans le jardin avec les enfants"] * 5
             + ["ein Foto von meinem Hund im Garten"] * 4 + ["a cat sleeping on the beach"] * 6)
    folder = tmp_path / "meta"
    folder.mkdir()
    (folder / "en.json").write_text(json.dumps(["dog", "beach", "cat", "red ball"]), encoding="utf-8")
    (folder / "other.json").write_text(json.dumps(["chien", "jardin", "Hund"]), encoding="utf-8")
    urls = [f"http://127.0.0.1/{i}.jpg" for i in range(len(texts))]
    n = len(texts)
    samples = pa.table({
        "uid": [derive_uid(u, x) for u, x in zip(urls, texts)], "url": urls, "text": texts,
        "source_file": ["/data/pool.parquet"] * n, "source_row": list(range(n)),
        "original_width": pa.nulls(n, pa.int32()), "original_height": pa.nulls(n, pa.int32()),
        "extra": pa.nulls(n, pa.string())}).sort_by("uid")
    uri = f"s3://{bucket}/ds"
    local, remote = Dataset(tmp_path / "local"), Dataset(uri)
    for ds in (local, remote):
        ds.write_table("samples", load_schema("samples").conform(samples), schema="samples", rows_per_shard=7)
    for ds, ex in ((local, LocalExecutor()), (remote, SparkExecutor(spark))):
        run_match(ds, folder, ex)
        run_balance(ds, ex, t=3, seed=2, name="ww")
    want = {p.relative_to(local.root).as_posix(): p.read_bytes() for p in local.root.rglob("*") if p.is_file()}
    got = bucket_objects(bucket, "ds/")
    for t in ("metadata_matches/", "metadata_languages/", "entry_counts/", "decisions/ww/", "subsets/ww/",
              "entry_balance/ww/", "language_balance/ww/", "metaclip/"):
        assert _visible(want, t) and _visible(got, t) == _visible(want, t), t
    assert got["metadata_matches/_counts/part-00003.parquet"] == want["metadata_matches/_counts/part-00003.parquet"]
    assert "metadata_matches/_counts/_committed/part-00003.parquet" in got  # the parts are committed shards too
    again = run_match(remote, folder, SparkExecutor(spark), resume=True)
    assert again["counts"]["skipped"] == 4 and again["counts"]["samples"] == n
    assert _visible(bucket_objects(bucket, "ds/"), "") == _visible(got, "")


def test_a_missing_bucket_is_one_line_and_every_job_takes_the_endpoint_as_an_option(bucket, tmp_path, s3_env):
    """Writing into a bucket that does not exist is one line naming it (it was a traceback from
    the lock); `cluster`, `dedup` and `prune` take --storage-option as the other jobs do."""
    import os

    from test_jobs_bucket import _vectors, build

    pool = tmp_path / "pool.csv"
    pool.write_text("url,caption\nhttp://x/1.jpg,one\n")
    r = _cli("ingest", str(pool), "-o", "s3://no-such-bucket/ds", "--engine", "local")
    assert r.returncode == 2 and "bucket 'no-such-bucket' does not exist" in r.stderr, r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr

    uri = f"s3://{bucket}/ds"
    build(uri, _vectors(n=100))
    env = {k: v for k, v in os.environ.items() if k != "AWS_ENDPOINT_URL"}  # the option alone names the server
    for args in (["cluster", uri, "-k", "2", "-m", "m"], ["dedup", "semantic", uri, "--eps", "0.02"],
                 ["prune", "dbp", uri, "--keep-fraction", "0.5", "--subset", "semdedup"]):
        r = subprocess.run([sys.executable, "-m", "curate.cli", *args, "--engine", "local",
                            "--storage-option", f"endpoint_url={s3_env['AWS_ENDPOINT_URL']}"],
                           capture_output=True, text=True, env=env)
        assert r.returncode == 0, (args, r.stderr)
