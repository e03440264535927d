"""`curate filter` on a dataset in s3://bucket/ds, reading and writing the bucket directly (no local
working copy): text statistics, DataComp's basic, CLIP-score fraction and image_based filters
(pool k-means, centroids written to the store and read by every task, a target file given as
a URI), through the CLI on the in-process engine and through Spark local mode. Every table
object equals a local-path run's file, byte for byte; a rerun recomputes nothing and changes
nothing."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from s3kit import bucket_objects

from curate import storage
from curate.engine import LocalExecutor
from curate.filters.job import run_filters
from curate.filters.stages import parse_filter
from curate.tables import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from filters.conftest import ENGLISH, OTHER, write_embeddings, write_samples  # noqa: E402

N = 160
CENTROIDS = "decisions/f/_image_based_centroids.npy"


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True, text=True)


def _build(root: str) -> Dataset:
    """160 samples in 4 shards (English and other captions, varied sizes), embeddings for 150."""
    ds = Dataset(root)
    rng = np.random.default_rng(11)
    texts = [(ENGLISH + OTHER)[i % 11] for i in range(N)]
    widths = [int(w) for w in rng.choice([100, 200, 640, 1000], N)]
    heights = [int(h) for h in rng.choice([150, 200, 480, 2500], N)]
    uids = write_samples(ds, texts, widths, heights, rows_per_shard=40)
    write_embeddings(ds, "tiny", uids[:150], rng.uniform(0.1, 0.4, 150).round(2), dim=8, rows_per_shard=50)
    return ds


def _filters(target: str) -> list[str]:
    return ["basic", "clip_score:fraction=0.5", f"image_based:k=3,seed=7,target={target}"]


def _visible(files: dict) -> dict:
    return {k: v for k, v in files.items() if not any(p[:1] in "_." for p in k.split("/"))}


def _local_files(ds: Dataset) -> dict:
    return {p.relative_to(ds.root).as_posix(): p.read_bytes() for p in ds.root.rglob("*") if p.is_file()}


def _target_bytes() -> bytes:
    return storage.npy_bytes(np.random.default_rng(4).normal(size=(3, 8)).astype(np.float32))


def _local_run(tmp_path) -> dict:
    local = _build(str(tmp_path / "local"))
    (tmp_path / "target.npy").write_bytes(_target_bytes())
    run_filters(local, [parse_filter(f) for f in _filters(str(tmp_path / "target.npy"))],
                LocalExecutor(), name="f")
    return _local_files(local)


def _check_same(want: dict, bucket: str) -> None:
    got = bucket_objects(bucket, "ds/")
    assert {k for k in _visible(want) if k.startswith("text_stats/")}  # the caption statistics were written
    assert any(k.startswith("decisions/f/") for k in _visible(want)) and "subsets/f/uids.npy" in want
    assert _visible(got) == _visible(want)
    assert got[CENTROIDS] == want[CENTROIDS]  # what every task read
    assert not any(k.startswith("ds/_tmp/") for k in got)
    # every shard the job wrote is committed (visible to readers)
    for k in _visible(got):
        if k.endswith(".parquet"):
            folder, name = k.rsplit("/", 1)
            assert f"{folder}/_committed/{name}" in got, k


def test_filter_cli_on_bucket_matches_local(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    want = _local_run(tmp_path)
    uri = f"s3://{bucket}/ds"
    remote = _build(uri)
    storage.put_bytes(storage.resolve(f"s3://{bucket}/assets/target.npy"), _target_bytes())
    args = ["filter", uri, *[a for f in _filters(f"s3://{bucket}/assets/target.npy") for a in ("-f", f)],
            "--name", "f", "--engine", "local"]
    r = _cli(*args)
    assert r.returncode == 0, r.stderr
    assert f"of {N:,} samples" in r.stdout, r.stdout
    _check_same(want, bucket)
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").rglob("*.parquet"))  # no local copy
    before = bucket_objects(bucket, "ds/")
    r = _cli(*args)  # rerun: text statistics current, every table rewritten with the same bytes
    assert r.returncode == 0, r.stderr
    after = bucket_objects(bucket, "ds/")
    assert _visible(after) == _visible(before)
    run = json.loads(after["_runs/filter-f.json"])
    assert run["counts"]["text_stats"]["skipped_shards"] == 4
    assert run["counts"]["samples"] == N == remote.count("decisions/f") // 3
    r = _cli("sql", uri, "SELECT count(*) AS n FROM decisions_f WHERE kept AND stage = 'basic'", "--out",
             str(tmp_path / "k.csv"))
    assert r.returncode == 0, r.stderr
    assert int((tmp_path / "k.csv").read_text().splitlines()[1]) == run["counts"]["filters"]["basic"]["kept"]


def test_filter_spark_on_bucket_matches_local(bucket, tmp_path, spark):
    from curate.engine.spark import SparkExecutor

    want = _local_run(tmp_path)
    uri = f"s3://{bucket}/ds"
    remote = _build(uri)
    storage.put_bytes(storage.resolve(f"s3://{bucket}/assets/target.npy"), _target_bytes())
    result = run_filters(remote, [parse_filter(f) for f in _filters(f"s3://{bucket}/assets/target.npy")],
                         SparkExecutor(spark), name="f")
    assert result["outputs"]["subset"] == "subsets/f"
    _check_same(want, bucket)
    cent = np.load(io.BytesIO(bucket_objects(bucket, "ds/")[CENTROIDS]))
    assert cent.shape == (3, 8)


def test_filter_on_missing_bucket_dataset_is_one_line(bucket):
    r = _cli("filter", f"s3://{bucket}/nothing-here", "-f", "basic", "--engine", "local")
    assert r.returncode != 0
    err = r.stderr.strip().splitlines()
    assert len(err) == 1 and "nothing-here" in err[0], r.stderr



def test_text_based_synsets_list_in_a_bucket(bucket, tmp_path, monkeypatch):
    """``text_based:synsets=s3://...``: the list is read from the store (copied to the input
    cache) and decides as the same list on disk, byte for byte; the run records the URI; a list
    that is not there is one line before any work."""
    from curate.wordnet import get_wordnet

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    wn = get_wordnet()
    text = "\n".join(f"n{wn.synsets(w)[0].offset():08d}" for w in ("dog", "cat", "beach")) + "\n"
    (tmp_path / "t.txt").write_text(text)
    storage.put_bytes(storage.resolve(f"s3://{bucket}/assets/t.txt"), text.encode())
    tables = {}
    for name, synsets in (("disk", str(tmp_path / "t.txt")), ("store", f"s3://{bucket}/assets/t.txt")):
        ds = _build(str(tmp_path / name))
        r = run_filters(ds, [parse_filter(f"text_based:synsets={synsets}")], LocalExecutor(), name="tb")
        assert r["outputs"]["subset"] == "subsets/tb"
        tables[name] = {k: v for k, v in _visible(_local_files(ds)).items() if k.startswith(("decisions/", "subsets/"))}
        run = json.loads((ds.root / "_runs" / "filter-tb.json").read_text())
        assert json.dumps(run).count(synsets) >= 1
    assert tables["disk"] == tables["store"] and any(k.startswith("decisions/tb/") for k in tables["disk"])
    r = _cli("filter", str(tmp_path / "disk"), "-f", f"text_based:synsets=s3://{bucket}/assets/none.txt",
             "--name", "x", "--engine", "local")
    assert r.returncode != 0 and f"s3://{bucket}/assets/none.txt" in r.stderr and "synset list not found" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
