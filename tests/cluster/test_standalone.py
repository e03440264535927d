"""Jobs submitted to a real standalone cluster (spark-submit, master + 2 workers, separate
executor JVMs and Python workers) write exactly the bytes that local mode writes."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.engine.spark import SparkExecutor
from curate.filters.job import run_filters
from curate.filters.stages import parse_filter
from curate.ingest.job import IngestConfig, run_ingest
from curate.tables import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "storage"))  # the loopback S3 server's helpers
from s3kit import S3_ENV, bucket_objects, moto_server  # noqa: E402

pytestmark = pytest.mark.cluster

CAPTIONS = ["a dog running on the beach", "two people riding bicycles in the park", "x",
            "un chien qui court sur la plage", "a red car parked near a building", "  ",
            "a plate of food with vegetables on a wooden table", "собака бежит по пляжу"]


def table_files(root: Path) -> dict[str, str]:
    """sha256 of every visible file of every table (run manifests differ by time and are hidden)."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = p.relative_to(root)
        if p.is_file() and not any(part.startswith(("_", ".")) for part in rel.parts):
            out[rel.as_posix()] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> list[str]:
    d = tmp_path_factory.mktemp("cluster-pool")
    rows = [{"url": f"http://example.com/{i}.jpg", "caption": CAPTIONS[i % len(CAPTIONS)] + f" {i // 8}",
             "width": 64 + (i * 37) % 700, "height": 48 + (i * 53) % 500} for i in range(240)]
    rows.append({"url": "http://example.com/3.jpg", "caption": rows[3]["caption"]})  # duplicate pair
    (d / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{not json\n")
    (d / "b.csv").write_text("url,caption,width,height\nhttp://example.com/5.jpg,"
                             f"{rows[5]['caption']},10,10\nhttp://other.org/1.jpg,a cat on a sofa,300,200\n")
    pq.write_table(pa.table({"uid": ["ab" * 16, "AB" * 16], "url": ["http://z/1.jpg", "http://z/2.jpg"],
                             "text": ["a house by a lake", "same uid again"]}), d / "c.parquet")
    return [str(d / "a.jsonl"), str(d / "b.csv"), str(d / "c.parquet")]


def assert_same_tables(remote: Path, local: Path) -> None:
    a, b = table_files(remote), table_files(local)
    assert sorted(a) == sorted(b)
    differ = {}
    for name in (n for n in a if a[n] != b[n]):
        if name.endswith(".parquet"):  # say what differs: contents, or only the bytes
            x, y = pq.read_table(remote / name), pq.read_table(local / name)
            differ[name] = [c for c in y.column_names if c not in x.column_names or not x.column(c).equals(y.column(c))] \
                or f"same values, different bytes (metadata equal: {x.schema.metadata == y.schema.metadata})"
        else:
            differ[name] = "bytes"
    assert not differ, differ


def _submit_ok(standalone, job, args):
    r = standalone.submit(job, args)
    assert r.returncode == 0, f"spark-submit {job} failed:\n{r.stderr[-4000:]}"
    assert "Spark UI: http://" in r.stdout + r.stderr  # spark-submit merges Python stderr into stdout
    # It really ran as an application of the cluster (not in a local-mode fallback).
    apps = [a["name"] for a in (standalone.state() or {}).get("completedapps", [])]
    assert f"curate-{job}" in apps, apps
    return r


@pytest.fixture(scope="module")
def local_ingest(spark, pool, tmp_path_factory) -> Path:
    """The pool ingested on Spark local mode: the bytes the cluster must write."""
    local = tmp_path_factory.mktemp("local-ingest") / "ds"
    run_ingest(SparkExecutor(spark), IngestConfig(inputs=pool, output=str(local), rows_per_shard=40))
    return local


def test_ingest_on_the_cluster_equals_local_mode(standalone, local_ingest, pool, tmp_path):
    remote = tmp_path / "cluster"
    _submit_ok(standalone, "ingest", [*pool, "-o", str(remote), "--rows-per-shard", "40"])
    files = table_files(local_ingest)
    assert {f.split("/")[0] for f in files} == {"samples", "rejects", "duplicates"}
    assert len([f for f in files if f.startswith("samples/")]) == 7
    assert_same_tables(remote, local_ingest)


@pytest.fixture(scope="module")
def s3_endpoint(tmp_path_factory):
    """moto's S3 server on 127.0.0.1 for this file (tests/storage has its own)."""
    with moto_server(tmp_path_factory.mktemp("moto")) as url:
        yield url


def test_ingest_into_a_bucket_on_the_cluster_equals_local_mode(standalone, local_ingest, pool, s3_endpoint,
                                                                 monkeypatch):
    """`--master spark://... s3://bucket/in/ -o s3://bucket/ds`: the executors read the input
    objects in place (Parquet by range reads, JSONL and CSV streamed) and write the staged
    files, the dedup scratch and the shards to the bucket themselves (the executors'
    environment has no S3 settings: the engine ships the driver's); every table equals local
    mode's on the local files, the source names aside."""
    import boto3

    for k, v in {"AWS_ENDPOINT_URL": s3_endpoint, **S3_ENV}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("CURATE_STORAGE_OPTIONS", raising=False)
    s3 = boto3.client("s3", endpoint_url=s3_endpoint)
    s3.create_bucket(Bucket="cluster")
    names = {}
    for f in pool:
        s3.put_object(Bucket="cluster", Key=f"in/{Path(f).name}", Body=Path(f).read_bytes())
        names[f] = f"s3://cluster/in/{Path(f).name}"
    _submit_ok(standalone, "ingest", ["s3://cluster/in/", "-o", "s3://cluster/ds", "--rows-per-shard", "40"])
    keys = bucket_objects("cluster", "ds/")
    shards = [k for k in keys if k.endswith(".parquet") and not any(p.startswith(("_", ".")) for p in k.split("/"))]
    assert sorted(shards) == sorted(table_files(local_ingest))
    remote = Dataset("s3://cluster/ds")
    for table in {k.split("/")[0] for k in shards}:
        want = Dataset(local_ingest).read(table)
        if "source_file" in want.column_names:
            mapped = [names.get(v, v) for v in want.column("source_file").to_pylist()]
            field = want.schema.field("source_file")
            want = want.set_column(want.schema.get_field_index("source_file"), field, pa.array(mapped, field.type))
        assert remote.read(table).equals(want), table
    assert "_runs/ingest.json" in keys and not [k for k in keys if k.startswith("_staging/")]
    assert len([k for k in keys if "/_committed/" in k]) == len(shards)  # every shard has its marker


@pytest.mark.extended
def test_filter_on_the_cluster_equals_local_mode(standalone, spark, pool, tmp_path):
    """A selection job on the cluster (ingest's sorted writes and dedup are the default test's;
    these are the selection's: text statistics, decisions and subset written by the executors)."""
    import shutil

    local, remote = tmp_path / "local", tmp_path / "cluster"
    run_ingest(SparkExecutor(spark), IngestConfig(inputs=pool, output=str(local), rows_per_shard=40))
    shutil.copytree(local, remote)
    run_filters(Dataset(local), [parse_filter("basic")], SparkExecutor(spark))
    _submit_ok(standalone, "filter", [str(remote), "--filter", "basic"])
    files = table_files(local)
    assert {"text_stats", "decisions", "subsets"} <= {f.split("/")[0] for f in files}
    assert_same_tables(remote, local)
    man = json.loads((remote / "_runs" / "filter-basic.json").read_text())
    assert man["timings_s"] and man["counts"]["kept"] < man["counts"]["samples"]
