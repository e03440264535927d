"""Ingest end to end on Spark local mode: dedup, counts, byte-identical reruns, resume, SQL."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.errors import InputFileError
from curate.ingest.job import IngestConfig, run_ingest
from curate.engine.spark import SparkExecutor
from curate.sql import query
from curate.tables import Dataset, load_schema
from curate.uid import derive_uid

REPO = Path(__file__).resolve().parents[2]


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


@pytest.fixture
def pool(tmp_path):
    a = tmp_path / "a.jsonl"
    rows = [{"url": f"http://x/{i}.jpg", "caption": f"caption {i}"} for i in range(30)]
    rows.append({"url": "http://x/0.jpg", "caption": "caption  0"})        # same pair after normalisation
    rows.append({"url": "", "caption": "no url"})
    a.write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    b = tmp_path / "b.csv"
    b.write_text("url,caption\nhttp://x/5.jpg,caption 5\nhttp://y/1.jpg,other\n")  # cross-file duplicate
    c = tmp_path / "c.parquet"
    uid = "ab" * 16
    pq.write_table(pa.table({"uid": [uid, uid.upper()], "url": ["http://z/1.jpg", "http://z/2.jpg"],
                             "text": ["first", "second"]}), c)
    return [str(a), str(b), str(c)], uid


def test_ingest_counts_dedup_and_tables(spark, pool, tmp_path):
    inputs, uid = pool
    out = tmp_path / "ds"
    m = run_ingest(SparkExecutor(spark), IngestConfig(inputs=inputs, output=str(out), rows_per_shard=10))
    c = m["counts"]
    assert c["input_rows"] == 33 + 2 + 2
    assert c["kept"] + c["duplicates"] + c["rejects"] == c["input_rows"]
    assert c["reject_reasons"] == {"empty_url": 1, "malformed_record": 1}
    assert c["duplicate_reasons"] == {"duplicate_uid": 1, "duplicate_url_text": 2}
    ds = Dataset(out)
    samples = ds.read("samples", schema="samples")
    assert samples.num_rows == c["kept"] == 32
    uids = samples.column("uid").to_pylist()
    assert uids == sorted(uids) and len(set(uids)) == len(uids)
    assert [len(pq.read_table(p)) for p in ds.shards("samples")] == [10, 10, 10, 2]
    dups = ds.read("duplicates", schema="duplicates").to_pylist()
    # The earliest input row wins: a.jsonl row 0 over its own row 30 and over b.csv row 0.
    first0 = derive_uid("http://x/0.jpg", "caption 0")
    assert {(Path(d["source_file"]).name, d["source_row"], d["duplicate_of"]) for d in dups} == {
        ("a.jsonl", 30, first0), ("b.csv", 0, derive_uid("http://x/5.jpg", "caption 5")),
        ("c.parquet", 1, uid)}
    rejects = ds.read("rejects", schema="rejects").to_pylist()
    assert [(Path(r["source_file"]).name, r["source_row"], r["reason"]) for r in rejects] == [
        ("a.jsonl", 31, "empty_url"), ("a.jsonl", 32, "malformed_record")]
    man = json.loads((out / "_runs" / "ingest.json").read_text())
    # Inputs are known by size and modification time (nothing read on the driver to plan).
    assert [(i["kind"], i["version"], i["bytes"]) for i in man["inputs"]] == [
        ("file", f"{os.stat(p).st_size}:{os.stat(p).st_mtime_ns}", os.stat(p).st_size) for p in inputs]
    assert not any("sha256" in i for i in man["inputs"])
    assert man["code"]["curate"] and "read_normalise" in man["timings_s"]
    # SQL over the result.
    r = query(out, "SELECT count(*) AS n FROM samples WHERE url LIKE 'http://x/%'").to_pylist()
    assert r == [{"n": 30}]
    r = query(out, "SELECT reason, count(*) AS n FROM rejects GROUP BY 1 ORDER BY 1").to_pylist()
    assert r == [{"reason": "empty_url", "n": 1}, {"reason": "malformed_record", "n": 1}]


def test_rerun_is_byte_identical_and_resume_skips_committed_shards(spark, pool, tmp_path):
    inputs, _ = pool
    out1, out2 = tmp_path / "one", tmp_path / "two"
    run_ingest(SparkExecutor(spark), IngestConfig(inputs=inputs, output=str(out1), rows_per_shard=7))
    run_ingest(SparkExecutor(spark), IngestConfig(inputs=inputs, output=str(out2), rows_per_shard=7))
    for t in ("samples", "rejects", "duplicates"):
        assert digest(out1 / t) == digest(out2 / t) != {}
    # Simulate a kill after two shards were committed: later shards missing, a temp file left.
    shards = sorted((out2 / "samples").glob("*.parquet"))
    for p in shards[2:]:
        p.unlink()
    (out2 / "samples" / ".part-00002.parquet.deadbeef.tmp").write_bytes(b"partial")
    mtimes = {p.name: p.stat().st_mtime_ns for p in shards[:2]}
    m = run_ingest(SparkExecutor(spark), IngestConfig(inputs=inputs, output=str(out2), rows_per_shard=7))
    assert m["resumed"] is True and m["outputs"]["samples"]["skipped_shards"] == 2
    assert {p.name: p.stat().st_mtime_ns for p in sorted((out2 / "samples").glob("*.parquet"))[:2]} == mtimes
    assert digest(out1 / "samples") == digest(out2 / "samples")
    # A changed input (a row added): a new plan, every shard written again.
    with open(inputs[1], "a") as f:
        f.write("http://y/2.jpg,added\n")
    m = run_ingest(SparkExecutor(spark), IngestConfig(inputs=inputs, output=str(out2), rows_per_shard=7))
    assert m["resumed"] is False and m["counts"]["kept"] == 33
    # Changed parameters: a new plan, old shards replaced.
    m = run_ingest(SparkExecutor(spark), IngestConfig(inputs=inputs, output=str(out2), rows_per_shard=100))
    assert m["resumed"] is False and len(list((out2 / "samples").glob("*.parquet"))) == 1


def test_corrupt_input_file_is_a_clear_error(spark, tmp_path):
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(InputFileError, match=r"bad\.parquet: not a readable Parquet file"):
        run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(bad)], output=str(tmp_path / "ds")))


def test_cli_reports_a_bad_file_in_one_line(tmp_path):
    bad = tmp_path / "pool.tar"
    bad.write_bytes(b"garbage" * 100)
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    r = subprocess.run([sys.executable, "-m", "curate.cli", "ingest", str(bad), "-o", str(tmp_path / "ds")],
                       capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 2
    assert f"curate: error: {bad.resolve()}: not a readable tar file" in r.stderr


def test_gathered_and_shuffled_samples_shards_are_identical(spark, pool, tmp_path, monkeypatch):
    """Samples shards are gathered from the uid-sorted staged runs, or (for pools where
    that would read rows many times over) cut from one Spark shuffle: same bytes."""
    import curate.ingest.job as job

    inputs, _ = pool
    # Several runs per task and row groups of a few rows, so a shard reads slices of runs.
    monkeypatch.setattr(job, "STAGED_RUN_ROWS", 8)
    monkeypatch.setattr(job, "STAGED_ROW_GROUP", 3)
    monkeypatch.setattr(job, "KEY_SAMPLE_EVERY", 2)  # several dedup key ranges
    gathered = run_ingest(SparkExecutor(spark), IngestConfig(inputs=inputs, output=str(tmp_path / "gather"), rows_per_shard=7))
    monkeypatch.setattr(job, "_gather_reads_little", lambda *a: False)
    shuffled = run_ingest(SparkExecutor(spark), IngestConfig(inputs=inputs, output=str(tmp_path / "shuffle"), rows_per_shard=7))
    assert (gathered["samples_write"], shuffled["samples_write"]) == ("gather", "shuffle")
    assert gathered["counts"] == shuffled["counts"]
    for t in ("samples", "rejects", "duplicates"):
        assert digest(tmp_path / "gather" / t) == digest(tmp_path / "shuffle" / t) != {}


def test_gather_is_chosen_only_when_it_reads_little():
    from curate.ingest.job import STAGED_ROW_GROUP, _gather_reads_little

    assert _gather_reads_little(runs=8, shards=4, staged_rows=1_000_000, kept=1_000_000)
    assert _gather_reads_little(runs=3, shards=40, staged_rows=300, kept=280)  # tiny: any way is cheap
    # A billion rows in 4,000 runs and 2,000 shards: each shard would touch every run.
    assert not _gather_reads_little(runs=4000, shards=2000, staged_rows=10**9, kept=10**9)
    assert not _gather_reads_little(runs=2000, shards=2000, staged_rows=2000 * STAGED_ROW_GROUP,
                                    kept=2000 * STAGED_ROW_GROUP)


def test_driver_side_hash_matches_spark_hash_partitioning(spark):
    from pyspark.sql import functions as F

    from curate.engine.spark import spark_hash_long

    values = [0, 1, 2, 41, -1, -7, 2**31, 2**40 + 5, -(2**62), 2**63 - 1, 123456789]
    got = spark.createDataFrame([(v,) for v in values], "v long").select(
        "v", F.expr("hash(v)").alias("h"), F.expr("pmod(hash(v), 7)").alias("p")).collect()
    assert [(spark_hash_long(r["v"]), spark_hash_long(r["v"]) % 7) for r in got] == [(r["h"], r["p"]) for r in got]
