"""`--engine auto` (the default): which engine it picks, and that auto, local and Spark write
the same bytes for every job on a small pool; Spark's console noise stays off by default."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.cli import main
from curate.engine import auto_engine
from curate.tables import Dataset

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from embedding_space.helpers import clustered_embeddings, uid, write_embeddings  # noqa: E402

TEXTS = ["a dog running on the beach", "two people riding bicycles in the park", "a red car parked near a building",
         "a plate of food with vegetables", "a cat sleeping on a sofa", "Golden Gate Bridge at night",
         "the Golden Gate Bridge in fog", "un chien qui court sur la plage", "img_0001.jpg", ""]


def make_pool(root: Path, n: int = 400) -> Dataset:
    """A pool with a samples table and an embeddings table (model id ``m``), written directly."""
    ds = Dataset(root)
    uids = [uid(i) for i in range(n)]
    rng = np.random.default_rng(3)
    t = pa.table({
        "uid": pa.array(uids, pa.string()),
        "url": pa.array([f"http://127.0.0.1/{i}.jpg" for i in range(n)], pa.string()),
        "text": pa.array([f"{TEXTS[i % len(TEXTS)]} {i % 7}" if i % 3 else TEXTS[i % len(TEXTS)]
                          for i in range(n)], pa.string()),
        "source_file": pa.array(["/in/pool.parquet"] * n, pa.string()),
        "source_row": pa.array(range(n), pa.int64()),
        "original_width": pa.array(rng.integers(50, 800, n), pa.int32()),
        "original_height": pa.array(rng.integers(50, 800, n), pa.int32()),
        "extra": pa.nulls(n, pa.string()),
    })
    ds.write_table("samples", t.sort_by("uid"), schema="samples", rows_per_shard=150)
    write_embeddings(ds, "m", clustered_embeddings(n=n, d=16, centers=4, seed=5), uids=uids, rows_per_shard=150)
    return ds


JOBS = [
    ["filter", "{ds}", "-f", "basic", "-f", "clip_score:fraction=0.5", "--name", "f"],
    ["metadata", "build", "{ds}/meta.json", "--dataset", "{ds}", "--no-wordnet", "--wordfreq-top", "500",
     "--bigram-min-count", "5", "--bigram-min-pmi", "1"],
    ["metadata", "match", "{ds}", "--metadata", "{ds}/meta.json"],
    ["metadata", "balance", "{ds}", "--t", "5", "--seed", "5", "--name", "mc"],
    ["cluster", "{ds}", "-k", "4", "--name", "km"],
    ["dedup", "semantic", "{ds}", "--eps", "0.05", "-c", "km"],
    ["prune", "dbp", "{ds}", "--keep-fraction", "0.5", "-c", "km", "--subset", "semdedup", "--output", "pruned"],
    ["prune", "ssp", "{ds}", "--keep-fraction", "0.5", "-c", "km"],
]


def _without_engine(obj):
    if isinstance(obj, dict):
        return {k: _without_engine(v) for k, v in obj.items() if k != "engine"}
    return [_without_engine(v) for v in obj] if isinstance(obj, list) else obj


def _tables(root: Path) -> dict[str, bytes]:
    """Every output file but run reports (which record paths and timings); the JSON beside a
    table compared without its ``engine`` field, the one thing meant to differ."""
    out = {}
    for p in sorted(root.rglob("*")):
        if (not p.is_file() or "_runs" in p.parts or p.name.startswith(".") or p.name.endswith(".build.json")
                or p.suffix not in (".parquet", ".json", ".npy", ".txt")):
            continue
        data = p.read_bytes()
        if p.name.startswith("_") and p.suffix == ".json":
            data = json.dumps(_without_engine(json.loads(data)), sort_keys=True).encode()
        out[p.relative_to(root).as_posix()] = data
    return out


def test_auto_rules(tmp_path, monkeypatch):
    ds = make_pool(tmp_path / "pool", n=50)
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    monkeypatch.delenv("CURATE_LOCAL_MAX_ROWS", raising=False)
    assert auto_engine(dataset=str(ds.root)) == ("local", "50 samples <= 500,000 (CURATE_LOCAL_MAX_ROWS)")
    assert auto_engine(master="local[2]", dataset=str(ds.root))[0] == "spark"
    assert auto_engine(conf=["spark.executor.memory=2g"], dataset=str(ds.root))[0] == "spark"
    assert auto_engine(dataset=str(tmp_path / "missing")) == ("spark", "dataset size unknown")
    monkeypatch.setenv("CURATE_LOCAL_MAX_ROWS", "49")
    assert auto_engine(dataset=str(ds.root)) == ("spark", "50 samples > 49 (CURATE_LOCAL_MAX_ROWS)")
    monkeypatch.delenv("CURATE_LOCAL_MAX_ROWS")
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "1")  # what spark-submit sets for a Python driver
    assert auto_engine(dataset=str(ds.root)) == ("spark", "running under spark-submit")


@pytest.mark.slow
def test_every_job_writes_the_same_bytes_under_auto_local_and_spark(tmp_path, spark, capsys):
    base = make_pool(tmp_path / "base").root
    roots = {}
    for engine in ("auto", "local", "spark"):
        roots[engine] = tmp_path / engine
        shutil.copytree(base, roots[engine])
        for job in JOBS:
            argv = [a.format(ds=roots[engine]) for a in job] + ["--engine", engine]
            with pytest.raises(SystemExit) as e:
                main(argv)
            assert e.value.code == 0, (engine, job, capsys.readouterr().err)
    out = {e: _tables(r) for e, r in roots.items()}
    assert {"decisions/f/part-00000.parquet", "meta.json", "decisions/mc/part-00000.parquet",
            "clusters/km/part-00000.parquet", "decisions/semdedup/part-00000.parquet"} <= set(out["local"])
    assert len(out["local"]) >= 15
    for engine in ("auto", "spark"):
        assert out[engine].keys() == out["local"].keys(), engine
        differ = [k for k in out["local"] if out[engine][k] != out["local"][k]]
        assert not differ, (engine, differ)
    # auto ran in-process on this small pool; --engine spark really ran on Spark.
    engines = {e: {json.loads(p.read_text()).get("params", {}).get("engine")
                   for p in (r / "_runs").rglob("*.json")} - {None} for e, r in roots.items()}
    # (A manifest or two records the --engine value as given, "auto".)
    assert "local" in engines["auto"] and "spark" not in engines["auto"] and engines["spark"] == {"spark"}, engines


# ---------------------------------------------------------------- quiet Spark
NOISE = ("Using incubator modules", "NativeCodeLoader", "log4j", "could not bind on port",
         "Using Spark's default", "setLogLevel")


def _ingest(tmp_path: Path, name: str, *flags: str) -> subprocess.CompletedProcess:
    src = tmp_path / "pool.csv"
    src.write_text("url,text\nhttp://127.0.0.1/a.jpg,a cat on a mat\nhttp://127.0.0.1/b.jpg,a dog\n", encoding="utf-8")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CURATE_VERBOSE", "PYSPARK_GATEWAY",
                                                                    "CURATE_SPARK_LOG"))}
    return subprocess.run([sys.executable, "-m", "curate.cli", *flags, "ingest", str(src), "-o", str(tmp_path / name),
                           "--conf", "spark.ui.enabled=true"],
                          capture_output=True, text=True, env=env, timeout=900)


@pytest.mark.slow
def test_a_spark_job_prints_no_noise(tmp_path):
    # The UI is asked for here so that port selection is exercised too (no 4040 probing).
    quiet = _ingest(tmp_path, "quiet")
    assert quiet.returncode == 0, quiet.stderr
    assert "2 rows in -> 2 samples" in quiet.stderr
    noisy = [line for line in quiet.stderr.splitlines() if any(n in line for n in NOISE) or " INFO " in line]
    assert not noisy, noisy
    assert (tmp_path / "quiet" / "samples").is_dir()


@pytest.mark.extended
def test_verbose_brings_spark_info_back(tmp_path):
    loud = _ingest(tmp_path, "loud", "-v")
    assert loud.returncode == 0, loud.stderr
    # Spark filters a pyspark driver's console at WARN during start-up (its shell rule);
    # from the first job on, -v shows INFO.
    assert re.search(r" INFO (SparkContext|DAGScheduler|TaskSetManager|Executor): ", loud.stderr), loud.stderr[-2000:]
    assert (tmp_path / "loud" / "samples").is_dir()


@pytest.mark.extended
def test_under_spark_submit_the_jobs_print_no_info(tmp_path):
    """spark-submit's own JVM start-up lines come before curate runs (docs/engine.md); once
    the session exists curate's levels apply, so the job itself logs nothing at INFO."""
    import pyspark

    ds = make_pool(tmp_path / "pool", n=20)
    submit = Path(pyspark.__file__).parent / "bin" / "spark-submit"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CURATE_VERBOSE", "PYSPARK_GATEWAY"))}
    env.update(PYSPARK_PYTHON=sys.executable, PYSPARK_DRIVER_PYTHON=sys.executable)
    r = subprocess.run([str(submit), "--master", "local[1]", str(REPO / "jobs" / "filter.py"), str(ds.root),
                        "-f", "basic", "--name", "submitted"], capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "kept" in r.stdout + r.stderr and (ds.root / "subsets" / "submitted").is_dir()
    job_info = [line for line in r.stderr.splitlines()
                if re.search(r" INFO (DAGScheduler|TaskSetManager|CodeGenerator|SparkContext: Starting job|Executor: Running task)", line)]
    assert not job_info, job_info[:5]
