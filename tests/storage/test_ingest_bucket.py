"""`curate ingest` of a local input into s3://bucket/ds (local engine) on the loopback S3
server: every table object equals a local-path run's file; a rerun writes nothing new."""

from __future__ import annotations

import re
import subprocess
import sys

from s3kit import bucket_objects

from curate.tables import Dataset


def _input(path, n=240):
    rows = ["url,caption"]
    for i in range(n):
        rows.append(f"http://127.0.0.1/img/{i % 200}.jpg,a photo number {i % 200} of a thing")  # 40 duplicates
    rows.append("not a url,bad row")
    path.write_text("\n".join(rows) + "\n")
    return path


def _ingest(inp, out, *extra, env=None):
    return subprocess.run([sys.executable, "-m", "curate.cli", "ingest", str(inp), "-o", out, "--engine", "local",
                           "--rows-per-shard", "64", *extra], capture_output=True, text=True, env=env)


def _tables_only(files: dict) -> dict:
    return {k: v for k, v in files.items() if not k.startswith("_") and "/_committed/" not in k}


def test_ingest_into_bucket_matches_local(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    inp = _input(tmp_path / "pool.csv")
    local = tmp_path / "local"
    r = _ingest(inp, str(local))
    assert r.returncode == 0, r.stderr
    uri = f"s3://{bucket}/pools/ds"
    r = _ingest(inp, uri)
    assert r.returncode == 0, r.stderr
    assert f"published to {uri}" in r.stderr + r.stdout

    want = {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*")
            if p.is_file() and not p.relative_to(local).as_posix().startswith(("_", "."))}
    got = bucket_objects(bucket, "pools/ds/")
    assert _tables_only(got) == want and any(k.startswith("samples/") for k in want)
    assert "_runs/ingest.json" in got and "_curate.lock" not in got  # the lock object is gone at the end
    ds, ref = Dataset(uri), Dataset(local)
    assert ds.tables() == ref.tables()
    for t in ref.tables():
        assert ds.count(t) == ref.count(t)
    # every input row ends somewhere: samples + duplicates + rejects = the 241 rows read
    assert sum(ds.count(t) for t in ("samples", "duplicates", "rejects") if t in ds.tables()) == 241

    # a rerun resumes in the working folder and finds every shard already committed
    r = _ingest(inp, uri)
    assert r.returncode == 0, r.stderr
    m = re.search(r"\((\d+) objects written, (\d+) shards already there\)", r.stderr + r.stdout)
    assert m and int(m[2]) == len([k for k in want if k.endswith(".parquet")])
    assert int(m[1]) == len([k for k in bucket_objects(bucket, "pools/ds/_runs/")])  # only manifests
    assert _tables_only(bucket_objects(bucket, "pools/ds/")) == want

    # then curate sql reads the bucket's tables
    r = subprocess.run([sys.executable, "-m", "curate.cli", "sql", uri, "SELECT count(DISTINCT uid) AS n FROM samples",
                        "--out", str(tmp_path / "n.csv")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "n.csv").read_text().splitlines()[1] == str(ref.count("samples"))


def test_ingest_refuses_cluster_master_and_uri_inputs(bucket, tmp_path):
    inp = _input(tmp_path / "pool.csv", 5)
    r = subprocess.run([sys.executable, "-m", "curate.cli", "ingest", str(inp), "-o", f"s3://{bucket}/ds",
                        "--master", "spark://127.0.0.1:1"], capture_output=True, text=True)
    assert r.returncode == 2 and "not supported yet" in r.stderr and r.stderr.count("\n") == 1
    r = subprocess.run([sys.executable, "-m", "curate.cli", "ingest", f"s3://{bucket}/in.csv", "-o",
                        str(tmp_path / "ds")], capture_output=True, text=True)
    assert r.returncode == 2 and "input s3://" in r.stderr and r.stderr.count("\n") == 1
