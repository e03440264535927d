"""Ctrl-C in the middle of a Spark job: one line, exit 130, no traceback (Python, py4j or Java),
and what is left resumes: the rerun finishes with the same bytes as an uninterrupted run."""

from __future__ import annotations

import signal
import sys
from pathlib import Path

import pytest

from curate.ingest.job import IngestConfig, run_ingest
from curate.engine.spark import SparkExecutor
from curate.lock import acquire, release

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clikit import ROWS_PER_SHARD, curate_cmd, digests, kill_group, shards, start, wait_for, write_pool  # noqa: E402

LINE = "curate: interrupted; rerun the same command to resume"


@pytest.fixture(scope="module")
def pool(tmp_path_factory) -> Path:
    return write_pool(tmp_path_factory.mktemp("pool") / "pool.jsonl")


@pytest.fixture(scope="module")
def reference(spark, pool, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("reference") / "ds"
    run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(pool)], output=str(out), rows_per_shard=ROWS_PER_SHARD))
    return out


@pytest.mark.slow
def test_ctrl_c_mid_ingest_prints_one_line_and_the_rerun_resumes_to_identical_output(spark, pool, reference, tmp_path):
    out = tmp_path / "ds"
    log = tmp_path / "ingest.log"
    proc = start(curate_cmd("ingest", str(pool), "-o", str(out), "--rows-per-shard", str(ROWS_PER_SHARD),
                            "--master", "local[2]"), log)
    wait_for(lambda: len(shards(out / "samples")) >= 3, proc, 600, log, "the first committed shards")
    kill_group(proc, signal.SIGINT)  # a terminal's Ctrl-C reaches the whole foreground group
    try:
        proc.wait(120)
    finally:
        kill_group(proc)
    assert proc.returncode == 130
    text = log.read_text()
    assert text.splitlines()[-1] == LINE
    assert text.count(LINE) == 1
    for noise in ("Traceback", "KeyboardInterrupt", "Py4J", "Exception", "ERROR"):
        assert noise not in text, text[-3000:]

    assert not (out / "_runs" / "ingest.json").exists()  # it was interrupted, not finished
    acquire(out)  # and left no stale lock behind
    release(out)
    m = run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(pool)], output=str(out), rows_per_shard=ROWS_PER_SHARD))
    assert m["resumed"] is True
    assert digests(out) == digests(reference)
