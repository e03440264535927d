"""kill -9 in the middle of a job: a lost worker does not change the output; a lost driver
leaves only complete shards, and the rerun resumes to a byte-identical result."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest
from faultkit import (ROWS_PER_SHARD, curate_cmd, digests, kill_group, start_group, visible_shards,
                      wait_for)

from curate.ingest.job import IngestConfig, run_ingest
from curate.engine.spark import SparkExecutor

SHARD_NAME = r"part-\d{5}\.parquet"


@pytest.fixture(scope="module")
def reference(spark, fault_pool, tmp_path_factory):
    """The uninterrupted local-mode run."""
    out = tmp_path_factory.mktemp("reference") / "ds"
    m = run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(fault_pool)], output=str(out), rows_per_shard=ROWS_PER_SHARD))
    assert m["outputs"]["samples"]["shards"] >= 100  # a long write stage to kill into
    return out


def test_driver_killed_mid_ingest_leaves_only_complete_shards_and_resumes(spark, fault_pool, reference, tmp_path):
    out = tmp_path / "ds"
    log = tmp_path / "ingest.log"
    proc = start_group(curate_cmd("ingest", str(fault_pool), "-o", str(out), "--rows-per-shard",
                                  str(ROWS_PER_SHARD), "--master", "local[2]"), log)
    wait_for(lambda: len(visible_shards(out / "samples")) >= 3, proc, 600, log, "the first committed shards")
    assert proc.poll() is None
    kill_group(proc)  # the driver, its JVM and its Python workers, mid write stage

    assert not (out / "_runs" / "ingest.json").exists()  # the run did not finish
    committed = visible_shards(out / "samples")
    assert 3 <= len(committed) < len(visible_shards(reference / "samples"))
    ref = digests(reference)["samples"]
    for p in (out / "samples").iterdir():
        if p.name.startswith("."):
            continue  # temp files of interrupted writes are hidden
        assert p.name in ref, f"unexpected visible file {p.name}"
        # every visible shard is complete: readable, the right rows, the final bytes
        assert pq.ParquetFile(p).metadata.num_rows == ROWS_PER_SHARD
    assert digests(out)["samples"].items() <= ref.items()

    m = run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(fault_pool)], output=str(out), rows_per_shard=ROWS_PER_SHARD))
    assert m["resumed"] is True
    assert m["outputs"]["samples"]["skipped_shards"] >= len(committed)
    assert digests(out) == digests(reference)
    assert not [p for p in (out / "samples").iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.cluster
@pytest.mark.extended
def test_worker_killed_mid_stage_job_completes_with_identical_output(standalone, fault_pool, reference, tmp_path):
    out = tmp_path / "ds"
    log = tmp_path / "submit.log"
    cmd = standalone.submit_cmd("ingest", [str(fault_pool), "-o", str(out), "--rows-per-shard", str(ROWS_PER_SHARD)])
    proc = start_group(cmd, log, env=standalone.env())
    try:
        wait_for(lambda: len(visible_shards(out / "samples")) >= 3, proc, 600, log, "the write stage")
        assert proc.poll() is None
        standalone.kill_worker(0)  # the worker, its executor JVM and Python workers: a lost machine
        rc = proc.wait(timeout=600)
    finally:
        if proc.poll() is None:
            kill_group(proc)
    text = log.read_text()
    assert rc == 0, text[-4000:]
    assert "Lost executor" in text or "lost executor" in text.lower()
    assert digests(out) == digests(reference)
    man = json.loads((out / "_runs" / "ingest.json").read_text())
    assert man["resumed"] is False and man["counts"]["kept"] == 600
    standalone.restart_worker(0)


def test_driver_killed_mid_filter_resumes_to_identical_tables(reference, tmp_path):
    import shutil

    from curate.engine import LocalExecutor
    from curate.filters.job import run_filters
    from curate.filters.stages import parse_filter
    from curate.tables import Dataset

    tables = ("text_stats", "decisions/basic", "subsets/basic")
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    for d in (whole, killed):
        shutil.copytree(reference, d)
    run_filters(Dataset(whole), [parse_filter("basic")], LocalExecutor())

    log = tmp_path / "filter.log"
    proc = start_group(curate_cmd("filter", str(killed), "--filter", "basic", "--engine", "local"), log)
    wait_for(lambda: len(visible_shards(killed / "text_stats")) >= 3, proc, 600, log, "the first text_stats shards")
    kill_group(proc)
    done = visible_shards(killed / "text_stats")
    assert 3 <= len(done) and not (killed / "_runs" / "filter-basic.json").exists()
    for p in done:  # complete shards only
        assert pq.ParquetFile(p).metadata.num_rows == ROWS_PER_SHARD

    m = run_filters(Dataset(killed), [parse_filter("basic")], LocalExecutor())
    assert m["counts"]["text_stats"]["skipped_shards"] >= len(done)

    def files(root):
        return {t: {p.name: p.read_bytes() for p in sorted((root / t).iterdir()) if not p.name.startswith((".", "_"))}
                for t in tables}

    assert files(killed) == files(whole)
