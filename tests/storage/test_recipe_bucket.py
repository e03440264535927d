"""`curate run` (a recipe) on a dataset in s3://bucket/ds, in place (no local working copy):
DataComp filters, k-means, SemDeDup, DBP, exact dedup, SQL and sampling stages read and write
the bucket; every table object equals a local-path run's file, byte for byte; a second run
takes every stage from the cache on the bucket; a coverage stage writes its table and plots into
the bucket. (Spark local mode on a bucket: the stages' jobs in test_jobs_bucket.py, the runner's
frames in tests/engine/test_driver_rows.py; not repeated here, for the suite's time.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from s3kit import bucket_objects
from test_jobs_bucket import _vectors, build, local_files, visible

from curate import storage
from curate.tables import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from filters.conftest import ENGLISH, OTHER, write_samples  # noqa: E402

RECIPE = """\
name: bucketed
dataset: {ds}
embedding_model: m
input: downloaded
output: curated
stages:
  - kind: basic
  - kind: clip_score
    fraction: 0.8
  - kind: cluster
    k: 4
  - kind: semdedup
    eps: 0.02
  - kind: prune
    keep_fraction: 0.7
  - kind: exact_dedup
  - kind: sql
    name: no-cat
    query: SELECT uid FROM samples WHERE text NOT LIKE '%cat%'
    reason: cat
  - kind: sample
    fraction: 0.9
    seed: 3
"""


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True, text=True)


def _pool(root: str) -> Dataset:
    """Embeddings (300 x 16, planted near copies), downloads (repeated hashes, some failures)
    and samples (English and other captions, varied sizes) for the same uids."""
    ds = build(root, _vectors(n=300))
    uids = ds.read("embeddings/m", columns=["uid"]).column(0).to_pylist()
    n = len(uids)
    write_samples(ds, [(ENGLISH + OTHER)[i % 11] for i in range(n)], [640 if i % 7 else 50 for i in range(n)],
                  [480] * n, uids=uids, rows_per_shard=80)
    return ds


def _recipe(tmp_path: Path, ds: str, name: str, kinds: tuple[str, ...] | None = None) -> Path:
    head, *stages = RECIPE.format(ds=ds).split("  - kind: ")
    keep = [st for st in stages if kinds is None or st.split()[0] in kinds]
    p = tmp_path / name
    p.write_text(head + "".join("  - kind: " + st for st in keep))
    return p


def test_recipe_on_bucket_matches_local_and_caches(bucket, tmp_path, monkeypatch):
    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    local = _pool(str(tmp_path / "local"))
    uri = f"s3://{bucket}/ds"
    _pool(uri)
    for ds, name in ((str(local.root), "local.yaml"), (uri, "bucket.yaml")):
        r = _cli("run", str(_recipe(tmp_path, ds, name)), "--engine", "local")
        assert r.returncode == 0, r.stderr
    want, got = local_files(local.root), bucket_objects(bucket, "ds/")
    assert "subsets/curated/uids.npy" in want and any(k.startswith("decisions/bucketed/") for k in want)
    assert visible(got) == visible(want)
    cache = {k for k in got if k.startswith("_cache/recipe/") and k.endswith("meta.json")}
    assert len(cache) == 8  # one entry per stage
    assert not any(k.startswith("_tmp/") for k in got)
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").rglob("*.parquet"))  # no working copy
    r = _cli("run", str(_recipe(tmp_path, uri, "bucket.yaml")), "--engine", "local")
    assert r.returncode == 0, r.stderr
    assert (r.stdout + r.stderr).count("(cached)") == 8
    assert visible(bucket_objects(bucket, "ds/")) == visible(got)


def test_recipe_with_a_coverage_stage_on_bucket(bucket, tmp_path, monkeypatch):
    """The coverage stage counts concepts (a list in the bucket, copied here) and writes its table,
    summary and plots into the bucket: the same objects as a local run."""
    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    local = _pool(str(tmp_path / "local"))
    uri = f"s3://{bucket}/ds"
    _pool(uri)
    concepts = "dog\ncat\nbeach\ncar\n"
    (local.root / "concepts.txt").write_text(concepts)
    storage.put_bytes(storage.resolve(f"{uri}/concepts.txt"), concepts.encode())
    for ds, name in ((str(local.root), "local.yaml"), (uri, "bucket.yaml")):
        p = _recipe(tmp_path, ds, name, ("basic",))
        p.write_text(p.read_text() + "  - kind: coverage\n    concepts: concepts.txt\n")  # inside the dataset
        r = _cli("run", str(p), "--engine", "local")
        assert r.returncode == 0, r.stderr
    want, got = local_files(local.root), bucket_objects(bucket, "ds/")
    cov = {k: v for k, v in want.items() if k.startswith("coverage/") and "/_committed/" not in k
           and not k.endswith("_summary.json")}  # the summary names the concept file's path
    assert any(k.endswith("_longtail.png") for k in cov) and any(k.endswith(".parquet") for k in cov)
    assert {k: got.get(k) for k in cov} == cov
    assert visible(got) == visible(want)
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").rglob("*.parquet"))  # no working copy


def test_a_recipe_file_on_the_bucket(bucket, tmp_path, monkeypatch):
    """``curate run s3://bucket/recipes/r.yaml``: the recipe is read from the store, a relative
    dataset resolves beside it on that store (``../ds``), and the run writes what the same
    recipe from a local file writes; a missing recipe object, or a dataset path that climbs out
    of the bucket, is one line naming the recipe."""
    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    uri = f"s3://{bucket}/ds"
    _pool(uri)
    text = _recipe(tmp_path, "../ds", "rel.yaml", ("basic", "sample")).read_text()
    storage.put_bytes(storage.resolve(f"s3://{bucket}/recipes/r.yaml"), text.encode())
    r = _cli("run", f"s3://{bucket}/recipes/r.yaml", "--check")
    assert r.returncode == 0 and f"s3://{bucket}/recipes/r.yaml:7: basic (basic)" in r.stdout, r.stdout + r.stderr
    r = _cli("run", f"s3://{bucket}/recipes/r.yaml", "--engine", "local")
    assert r.returncode == 0, r.stderr
    from_store = bucket_objects(bucket, "ds/subsets/curated/")
    assert "uids.parquet" in from_store
    r = _cli("run", str(_recipe(tmp_path, uri, "local.yaml", ("basic", "sample"))), "--engine", "local", "--no-cache")
    assert r.returncode == 0, r.stderr
    again = bucket_objects(bucket, "ds/subsets/curated/")
    assert {k: v for k, v in again.items() if k.endswith(".parquet")} == \
        {k: v for k, v in from_store.items() if k.endswith(".parquet")}
    r = _cli("run", f"s3://{bucket}/recipes/missing.yaml", "--check")
    assert r.returncode != 0 and f"s3://{bucket}/recipes/missing.yaml: no such recipe file" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    storage.put_bytes(storage.resolve(f"s3://{bucket}/recipes/out.yaml"), text.replace("../ds", "../../ds").encode())
    r = _cli("run", f"s3://{bucket}/recipes/out.yaml", "--engine", "local")
    assert r.returncode != 0 and f"s3://{bucket}/recipes/out.yaml:2: dataset '../../ds'" in r.stderr, r.stderr
