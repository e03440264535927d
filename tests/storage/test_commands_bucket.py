"""Commands run on a dataset in s3://bucket/ds through the CLI: `curate metadata match/balance`
with the metadata list in the bucket too (objects equal a local run's files), and the commands
that still refuse a URI with one line."""

from __future__ import annotations

import json
import subprocess
import sys

import boto3
from s3kit import bucket_objects


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
    for t in ("metadata_matches/", "entry_counts/", "decisions/metaclip/", "subsets/metaclip/"):
        assert _visible(local, t) and _visible(objects, t) == _visible(local, t), t
    assert "_curate.lock" not in objects


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
