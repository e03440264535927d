"""`curate filter` (local engine) on a dataset in s3://bucket/ds: the job works on a local
working copy fetched from the bucket and publishes its outputs back with commit markers; every
table object equals a local-path run's file."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow as pa
from s3kit import bucket_objects

from curate.tables import Dataset, load_schema


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True, text=True)


def _build(root: str, csv) -> Dataset:
    r = _cli("ingest", str(csv), "-o", root, "--engine", "local", "--rows-per-shard", "40")
    assert r.returncode == 0, r.stderr
    ds = Dataset(root)
    uids = ds.read("samples", columns=["uid"]).column(0).to_pylist()
    rng = np.random.default_rng(3)
    emb = rng.standard_normal((len(uids), 8)).astype(np.float16)
    schema = load_schema("embeddings").arrow(dim=8)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel(), pa.float16()), 8)
    table = pa.table({"uid": uids, "image_embedding": vec, "text_embedding": vec,
                      "clip_score": pa.array(rng.uniform(0.1, 0.4, len(uids)).round(2), pa.float32())}, schema=schema)
    ds.write_table("embeddings/tiny", table, schema="embeddings", rows_per_shard=50)
    return ds


def _visible(files: dict) -> dict:
    return {k: v for k, v in files.items() if not any(p[:1] in "_." for p in k.split("/"))}


def test_filter_on_bucket_matches_local(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    csv = tmp_path / "pool.csv"
    csv.write_text("url,caption\n" + "".join(f"http://127.0.0.1/{i}.jpg,a red thing number {i}\n" for i in range(120)))
    local = _build(str(tmp_path / "local"), csv)
    uri = f"s3://{bucket}/ds"
    remote = _build(uri, csv)
    for ds in (str(local.root), uri):
        r = _cli("filter", ds, "-f", "clip_score:fraction=0.5", "--name", "half", "--engine", "local")
        assert r.returncode == 0, r.stderr
    want = _visible({p.relative_to(local.root).as_posix(): p.read_bytes()
                     for p in local.root.rglob("*") if p.is_file()})
    got = _visible(bucket_objects(bucket, "ds/"))
    assert any(k.startswith("decisions/half/") for k in want) and any(k.startswith("subsets/half/") for k in want)
    assert got == want
    assert remote.tables() == local.tables()
    assert remote.count("decisions/half") == local.count("decisions/half") == 120
    # the same run manifests (their contents name the folder and the times, so differ)
    runs = {p.relative_to(local.root).as_posix() for p in local.root.glob("_runs/*.json")}
    assert {k for k in bucket_objects(bucket, "ds/") if k.startswith("_runs/") and k.count("/") == 1} == runs
    assert "_runs/ingest.json" in runs and len(runs) >= 2
    r = _cli("sql", uri, "SELECT count(*) AS n FROM decisions_half WHERE kept", "--out", str(tmp_path / "k.csv"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "k.csv").read_text().splitlines()[1] == str(remote.count("subsets/half"))
