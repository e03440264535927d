"""``curate select --sql``: DuckDB over the dataset into a subset (CLI end to end)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pyarrow.compute as pc

from curate.subset import read_subset, read_subset_manifest


def curate(*args):
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True, text=True, timeout=120)


def test_select_sql_writes_subset_and_npy(pool):
    q = ("SELECT s.uid FROM samples s JOIN embeddings_toy_model e USING (uid) "
         "WHERE e.clip_score > 0 AND s.text NOT LIKE 'spam%'")
    r = curate("select", str(pool.root), "--sql", q, "--name", "pos")
    assert r.returncode == 0, r.stderr
    emb = pool.read("embeddings/toy-model")
    samples = pool.read("samples")
    spam = {u for u, t in zip(samples["uid"].to_pylist(), samples["text"].to_pylist()) if t.startswith("spam")}
    expected = sorted(u for u, s in zip(emb["uid"].to_pylist(), emb["clip_score"].to_pylist()) if s > 0 and u not in spam)
    assert read_subset(pool, "pos") == expected
    arr = np.load(pool.root / "subsets" / "pos" / "uids.npy")
    assert arr.dtype == np.dtype("u8,u8") and len(arr) == len(expected)
    man = read_subset_manifest(pool, "pos")
    assert man["sql"] == q and man["counts"]["selected"] == len(expected)
    assert f"{len(expected):,} uids" in r.stdout


def test_select_sql_upsamples_repeats_and_uses_embeddings_alias(pool):
    q = "SELECT uid FROM embeddings WHERE clip_score > 0.5 UNION ALL SELECT uid FROM embeddings WHERE clip_score > 0.5"
    r = curate("select", str(pool.root), "--sql", q, "--name", "twice", "--embedding-model", "toy-model")
    assert r.returncode == 0, r.stderr
    emb = pool.read("embeddings/toy-model")
    n = pc.sum(pc.greater(emb["clip_score"], 0.5)).as_py()
    got = read_subset(pool, "twice")
    assert len(got) == 2 * n and len(set(got)) == n


def test_select_memory_limit_reaches_duckdb(pool):
    """--memory-limit bounds DuckDB's joins and sort (it spills beyond); the same subset either way."""
    q = "SELECT uid FROM samples WHERE uid IN (SELECT uid FROM embeddings_toy_model)"
    r = curate("select", str(pool.root), "--sql", q, "--name", "small_mem", "--memory-limit", "64MB")
    assert r.returncode == 0, r.stderr
    assert read_subset(pool, "small_mem") == sorted(pool.read("embeddings/toy-model")["uid"].to_pylist())
    r = curate("select", str(pool.root), "--sql", q, "--name", "x", "--memory-limit", "lots")
    assert r.returncode == 2 and "--memory-limit" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_select_sql_errors_are_one_clear_line(pool):
    r = curate("select", str(pool.root), "--sql", "SELECT url FROM samples", "--name", "x")
    assert r.returncode == 2 and "must return a 'uid' column" in r.stderr
    r = curate("select", str(pool.root), "--sql", "SELECT uid FROM nowhere", "--name", "x")
    assert r.returncode == 2 and "nowhere" in r.stderr and "Traceback" not in r.stderr
    r = curate("select", str(pool.root), "--sql", "SELECT 'abc' AS uid", "--name", "x")
    assert r.returncode == 2 and "not a 32-char" in r.stderr
    r = curate("select", str(pool.root), "--sql", "SELECT '" + "0" * 32 + "' AS uid", "--name", "x")
    assert r.returncode == 2 and "not in samples" in r.stderr
    r = curate("select", str(pool.root), "--sql", "SELECT '" + "0" * 32 + "' AS uid", "--name", "x", "--allow-unknown")
    assert r.returncode == 0 and read_subset(pool, "x") == []
    # a model with no table: `embeddings` would be the union of every model's, each sample once per model
    r = curate("select", str(pool.root), "--sql", "SELECT uid FROM embeddings", "--name", "y", "--embedding-model",
               "nosuchmodel")
    assert r.returncode == 2 and "has no embeddings/nosuchmodel (embeddings: toy-model)" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and not pool.has_table("subsets/y")


def test_run_cli_check_and_run(pool, tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text(f"name: cli\ndataset: {pool.root}\ninput: all\nstages:\n  - kind: sample\n    count: 5\n")
    r = curate("run", str(p), "--check")
    assert r.returncode == 0 and f"{p}:5: sample (sample)" in r.stdout
    r = curate("run", str(p), "--engine", "local", "--output", "five")
    assert r.returncode == 0, r.stderr
    assert len(read_subset(pool, "five")) == 5
    bad = tmp_path / "bad.yaml"
    bad.write_text(f"name: cli\ndataset: {pool.root}\nstages:\n  - kind: sample\n    count: -1\n")
    r = curate("run", str(bad))
    assert r.returncode == 2 and f"{bad}:5:" in r.stderr


def test_rows_a_query_returns_that_the_subset_leaves_out_are_said(pool):
    """A LEFT JOIN's NULL uids and, with --allow-unknown, uids not in samples are dropped: the
    summary line says how many, as the manifest counts them."""
    q = ("SELECT uid FROM samples UNION ALL SELECT NULL AS uid UNION ALL SELECT '" + "f" * 32 + "' AS uid")
    r = curate("select", str(pool.root), "--sql", q, "--name", "holes", "--allow-unknown")
    assert r.returncode == 0, r.stderr
    n = pool.count("samples")
    assert f"subset holes: {n:,} uids ({n:,} distinct, 1 NULL uids dropped, 1 unknown uids dropped)" in r.stdout
    assert read_subset_manifest(pool, "holes")["counts"]["null_uid"] == 1
