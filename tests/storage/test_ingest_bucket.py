"""`curate ingest` of a local input into s3://bucket/ds (local engine) on the loopback S3
server: every table object equals a local-path run's file; a rerun writes nothing new."""

from __future__ import annotations

import json
import os
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


def _ingest_cmd(inp, out, rows_per_shard=64):
    return [sys.executable, "-m", "curate.cli", "ingest", str(inp), "-o", out, "--engine", "local",
            "--rows-per-shard", str(rows_per_shard)]


def _ingest(inp, out, rows_per_shard=64, env=None):
    return subprocess.run(_ingest_cmd(inp, out, rows_per_shard), capture_output=True, text=True, env=env)


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


def test_ingest_refuses_cluster_master_and_missing_uri_inputs(bucket, tmp_path):
    inp = _input(tmp_path / "pool.csv", 5)
    r = subprocess.run([sys.executable, "-m", "curate.cli", "ingest", str(inp), "-o", f"s3://{bucket}/ds",
                        "--master", "spark://127.0.0.1:1"], capture_output=True, text=True)
    assert r.returncode == 2 and "not supported yet" in r.stderr and r.stderr.count("\n") == 1
    r = subprocess.run([sys.executable, "-m", "curate.cli", "ingest", f"s3://{bucket}/in.csv", "-o",
                        str(tmp_path / "ds")], capture_output=True, text=True)
    assert r.returncode == 2 and f"s3://{bucket}/in.csv" in r.stderr and r.stderr.count("\n") == 1


def test_ingest_inputs_from_a_bucket_glob(bucket, tmp_path, monkeypatch):
    """`curate ingest 's3://bucket/pool/*.csv'`: the glob is listed on the store, the files are
    read from local copies, ``source_file`` names the objects; every other column equals a
    local ingest of the same files."""
    import boto3
    import pyarrow.compute as pc

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    folder = tmp_path / "pool"
    folder.mkdir()
    for name, n in (("a.csv", 7), ("b.csv", 5)):
        (folder / name).write_text("url,caption\n" + "".join(
            f"http://127.0.0.1/{name}/{i}.jpg,photo {i} of {name}\n" for i in range(n)) + "not a url,bad row\n")
        s3.put_object(Bucket=bucket, Key=f"pool/{name}", Body=(folder / name).read_bytes())
    s3.put_object(Bucket=bucket, Key="pool/notes.txt", Body=b"not matched by the glob")
    r = _ingest(folder, str(tmp_path / "local"))
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "curate.cli", "ingest", f"s3://{bucket}/pool/*.csv", "-o",
                        f"s3://{bucket}/ds", "--engine", "local", "--rows-per-shard", "64"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    want = Dataset(tmp_path / "local").read("samples")
    got = Dataset(f"s3://{bucket}/ds").read("samples")
    assert got.num_rows == want.num_rows == 13, (sorted(got.column("url").to_pylist()), sorted(want.column("url").to_pylist()))
    assert sorted(set(got.column("source_file").to_pylist())) == [f"s3://{bucket}/pool/a.csv", f"s3://{bucket}/pool/b.csv"]
    names = [c for c in want.column_names if c != "source_file"]
    assert got.select(names).equals(want.select(names))
    assert pc.all(pc.equal(pc.utf8_slice_codeunits(got.column("source_file"), 0, 5), "s3://")).as_py()
    m = json.loads(bucket_objects(bucket, "ds/_runs/")["ingest.json"])
    assert all(i.startswith(f"s3://{bucket}/pool/") for i in m["params"]["inputs"])


def test_ingest_killed_mid_publish_then_rerun(bucket, tmp_path):
    """kill -9 of `curate ingest -o s3://...` while it uploads: only whole, committed shards are
    visible; the rerun publishes the rest and the objects equal a local run's files."""
    import os
    import signal
    import time

    import boto3

    env = {**os.environ, "CURATE_WORK_DIR": str(tmp_path / "work")}
    inp = _input(tmp_path / "pool.csv")
    local = tmp_path / "local"
    assert _ingest(inp, str(local), 5, env=env).returncode == 0
    want = {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*")
            if p.is_file() and not p.relative_to(local).as_posix().startswith(("_", "."))}
    uri = f"s3://{bucket}/ds"
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    proc = subprocess.Popen(_ingest_cmd(inp, uri, 5), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # the first committed shard: publishing
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="ds/").get("Contents", [])]
        if any("/_committed/" in k for k in keys):
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "ingest finished before it could be killed"

    ds = Dataset(uri)
    visible = [s[len(uri) + 1:] for t in ds.tables() for s in ds.shards(t)]
    assert len(visible) < len([k for k in want if k.endswith(".parquet")])  # killed part-way
    for rel in visible:  # every visible shard is whole
        assert bucket_objects(bucket, f"ds/{rel}")[""] == want[rel]
    assert "_runs/ingest.json" not in bucket_objects(bucket, "ds/")  # the manifest goes last

    r = _ingest(inp, uri, 5, env=env)
    assert r.returncode == 0, r.stderr
    assert _tables_only(bucket_objects(bucket, "ds/")) == want
