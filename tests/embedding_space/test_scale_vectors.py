"""The scale-shaped vector jobs: k-means training sample bounded by a byte cap, near duplicates
searched within partitions of an IVF layout (local vs Spark byte-identical, equal to the
in-memory all-pairs reference at full probe, recall measured below it)."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from curate.embedding_space.clusters import run_cluster
from curate.embedding_space.common import uid_hash
from curate.embedding_space.duplicates import near_duplicate_decisions, similar_pairs
from curate.embedding_space.jobs import run_near_dedup
from curate.embedding_space.sampling import sample_rows, uid_hash_array
from curate.engine import LocalExecutor
from curate.tables import Dataset

from .helpers import clustered_embeddings, sample_on_the_driver, uid, write_embeddings

K = 6


@pytest.fixture(scope="module")
def data():
    return clustered_embeddings(n=1800, d=24, centers=6, dup_frac=0.3, seed=11)


def _files(ds: Dataset, prefixes: tuple[str, ...]) -> dict[str, str]:
    out = {}
    for p in sorted(ds.root.rglob("*.parquet")):
        rel = str(p.relative_to(ds.root))
        if rel.startswith(prefixes):
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _decisions(ds: Dataset, run: str) -> pa.Table:
    return ds.read(f"decisions/{run}").sort_by("uid")


def test_uid_hash_array_equals_reference():
    uids = [uid(i) for i in range(500)] + ["ABCDEF0123456789abcdef0123456789"]
    for seed in (0, 7):
        assert np.array_equal(uid_hash_array(pa.array(uids), seed), uid_hash(uids, seed))
    # a sliced column (non-zero offset) and a chunked one
    arr = pa.array(uids)
    assert np.array_equal(uid_hash_array(arr.slice(100, 50), 3), uid_hash(uids[100:150], 3))
    assert np.array_equal(uid_hash_array(pa.chunked_array([arr[:10], arr[10:]]), 1), uid_hash(uids, 1))


def test_sample_rows_bound():
    # FAISS's own cap: k * max_points_per_centroid, never more than the input
    assert sample_rows(10_000, 10, 64, 256) == (2560, False)
    assert sample_rows(1000, 10, 64, 256) == (1000, False)
    # the byte cap: 4 bytes x dim per row, independent of the pool size
    assert sample_rows(10**10, 50_000, 768, 256, max_sample_bytes=2 << 30) == ((2 << 30) // (4 * 768), True)
    assert sample_rows(10**7, 50_000, 768, 256, max_sample_bytes=2 << 30) == sample_rows(
        10**10, 50_000, 768, 256, max_sample_bytes=2 << 30)
    # never below k
    assert sample_rows(10**6, 100, 512, 256, max_sample_bytes=1000) == (100, True)


def _capped_run(tmp_path, data) -> tuple[Dataset, dict, int]:
    """run_cluster with a byte cap on the sample, checked against training on the cap's rows."""
    cap_rows = 300
    cap = cap_rows * 4 * data.shape[1]
    a = Dataset(tmp_path / "a")
    uids = write_embeddings(a, "m", data, rows_per_shard=1800)
    ra = run_cluster(a, "m", K, max_sample_bytes=cap, executor=LocalExecutor())
    assert ra["counts"]["train_rows"] == cap_rows and ra["counts"]["sample_capped"]
    assert ra["meta"]["max_sample_bytes"] == cap
    # the same centroids as training on the cap_rows smallest uid hashes directly
    from curate.embedding_space.kmeans import train_kmeans
    from curate.embedding_space.vectors import normalize_rows

    h = uid_hash(uids, 0)
    pick = np.lexsort((np.asarray(uids), h))[:cap_rows]
    xs = normalize_rows(data.astype(np.float16))[pick].astype(np.float16).astype(np.float32)
    c = train_kmeans(xs, K, seed=0, spherical=True)
    got = np.asarray(a.read("centroids/kmeans").sort_by("cluster_id").column("centroid").to_pylist(), np.float32)
    np.testing.assert_array_equal(got, c)
    assert not (a.root / "_tmp" / "cluster-kmeans").exists()  # the decode cache is removed
    return a, ra, cap


def test_capped_sample_is_the_smallest_hashes(tmp_path, data):
    _capped_run(tmp_path, data)


@pytest.mark.extended
def test_capped_sample_on_spark_equals_local(tmp_path, spark, data):
    """Spark, seven shards, three shuffle partitions: the same bytes as the local run."""
    from curate.engine.spark import SparkExecutor

    a, ra, cap = _capped_run(tmp_path, data)
    b = Dataset(tmp_path / "b")
    write_embeddings(b, "m", data, rows_per_shard=260)
    old = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "3")
    try:
        rb = run_cluster(b, "m", K, max_sample_bytes=cap, executor=SparkExecutor(spark))
        for name, kw in (("exact", {}), ("ivf2", dict(clusters="kmeans", nprobe=2))):
            run_near_dedup(a, "m", 0.97, run=name, executor=LocalExecutor(), **kw)
            run_near_dedup(b, "m", 0.97, run=name, executor=SparkExecutor(spark), **kw)
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", old)
    assert rb["counts"] == ra["counts"]
    assert _files(a, ("centroids/", "cluster_stats/")) == _files(b, ("centroids/", "cluster_stats/"))
    assert a.read("clusters/kmeans").sort_by("uid").equals(b.read("clusters/kmeans").sort_by("uid"))
    for run in ("exact", "ivf2"):
        assert _files(a, (f"decisions/{run}/", f"subsets/{run}/")) == _files(b, (f"decisions/{run}/", f"subsets/{run}/"))


def test_near_dedup_partitions_full_probe_equals_all_pairs_and_recall_below(tmp_path, data):
    ds = Dataset(tmp_path / "d")
    uids = write_embeddings(ds, "m", data, rows_per_shard=500)
    k = 12
    run_cluster(ds, "m", k)
    threshold = 0.97
    # the in-memory all-pairs reference (the library function the job used to call on the driver)
    x = data.astype(np.float16).astype(np.float32)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)  # the stored vectors, normalised in float32
    emb = ds.read("embeddings/m", columns=["uid", "clip_score"])
    score = dict(zip(emb.column("uid").to_pylist(), emb.column("clip_score").to_pylist()))
    for keep_by in ("uid", "clip_score"):
        ref, ref_stats = near_duplicate_decisions(
            uids, x, threshold, stage="near_dedup",
            scores=np.asarray([score[u] for u in uids], np.float32) if keep_by == "clip_score" else None)
        ref = ref.sort_by("uid")
        for run, kw in ((f"one-{keep_by}", {}), (f"full-{keep_by}", dict(clusters="kmeans", nprobe=k))):
            r = run_near_dedup(ds, "m", threshold, run=run, keep_by=keep_by, **kw)
            got = _decisions(ds, run)
            assert got.equals(ref), run
            assert {key: r["counts"][key] for key in ref_stats} == ref_stats
    # every sample has exactly one decision whatever nprobe; removals never exceed the exact run's
    r1 = run_near_dedup(ds, "m", threshold, run="p1", clusters="kmeans", nprobe=1)
    assert r1["counts"]["input"] == len(uids)
    assert r1["counts"]["removed"] <= ref_stats["removed"]


def test_near_dedup_recall_against_all_pairs(tmp_path):
    """Uniform vectors on the sphere put many near pairs across partition borders: recall
    below full probe is measured against the exact all-pairs search (figures in docs/embedding_space.md)."""
    from curate.embedding_space.near_partitions import near_duplicates

    rng = np.random.default_rng(0)
    x = rng.standard_normal((2000, 6)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ds = Dataset(tmp_path / "u")
    uids = write_embeddings(ds, "m", x, rows_per_shard=500)
    k, threshold = 16, 0.98
    run_cluster(ds, "m", k)
    xx = x.astype(np.float16).astype(np.float32)
    xx = xx / np.linalg.norm(xx, axis=1, keepdims=True)  # the stored vectors, normalised in float32
    a, b, _ = similar_pairs(xx, threshold)
    exact_pairs = {tuple(sorted((uids[i], uids[j]))) for i, j in zip(a, b)}
    assert len(exact_pairs) > 50
    recalls = []
    for nprobe in (1, 2, 4, k):
        found = _pairs(ds, threshold, nprobe, near_duplicates, dim=6)
        assert found <= exact_pairs  # never a pair the exact search lacks
        recalls.append(len(found) / len(exact_pairs))
    assert recalls == sorted(recalls) and recalls[0] < 1.0 and recalls[-1] == 1.0, recalls


def _pairs(ds, threshold, nprobe, near_duplicates, dim=24) -> set:
    import pyarrow.compute as pc

    from curate.embedding_space.near_partitions import PAIR_SCHEMA, partition_pairs, partition_rows, ROW_SCHEMA
    from curate.embedding_space.common import grouped_apply, shard_tasks
    from curate.embedding_space.near_partitions import write_quantiser

    q = write_quantiser(ds, "recall", "kmeans", "image", dim)
    tasks = shard_tasks(ds, "embeddings/m", embedding="image", uid_filter=None, centroids_npy=q, nprobe=nprobe)
    pairs = grouped_apply(LocalExecutor(), tasks, partition_rows, ROW_SCHEMA, "partition",
                          lambda g: partition_pairs(g, threshold, dim), PAIR_SCHEMA)
    a, b = pairs.column("uid_a").to_pylist(), pairs.column("uid_b").to_pylist()
    assert len(set(zip(a, b))) == len(a)  # each pair emitted by one partition only
    assert pc.all(pc.less(pairs.column("uid_a"), pairs.column("uid_b"))).as_py()
    return set(zip(a, b))


def test_sample_tasks_never_send_more_than_the_sample(tmp_path, data):
    """uids whose hashes bunch (here every uid hashes alike: hi = i * golden, lo = i cancel in
    the hash's first mix) make the threshold pass come back short and the retry take every row:
    each task still sends at most the sample size, its smallest (hash, uid)."""
    from curate.embedding_space.clusters import sample_task
    from curate.embedding_space.common import shard_tasks

    ds = Dataset(tmp_path / "d")
    uids = [f"{(i * 0x9E3779B97F4A7C15) & ((1 << 64) - 1):016x}{i:016x}" for i in range(len(data))]
    assert len(set(uid_hash(uids, 0).tolist())) == 1
    write_embeddings(ds, "m", data, uids=uids, rows_per_shard=600)
    r = run_cluster(ds, "m", K, max_points_per_centroid=20)
    assert r["counts"]["train_rows"] == K * 20
    for t in shard_tasks(ds, "embeddings/m", embedding="image", seed=0, threshold=2**63 - 1, limit=50):
        import pyarrow.parquet as pq

        got = [u for b in sample_task(t) for u in b.column("uid").to_pylist()]
        shard = pq.read_table(t["path"], columns=["uid"]).column("uid").to_pylist()
        assert len(got) == 50 and set(got) == set(sorted(shard)[:50])  # equal hashes: the smallest uids


def test_guard_sample_reads_only_picked_row_groups_and_equals_the_whole_read(tmp_path, data):
    import pyarrow.parquet as pq

    from curate.embedding_space import guards

    ds = Dataset(tmp_path / "ds")
    write_embeddings(ds, "m", data, rows_per_shard=700)
    # several row groups per shard, so the picks fall in some and not others
    for p in ds.shards("embeddings/m"):
        pq.write_table(pq.read_table(p), p, row_group_size=64)
    paths = ds.shards("embeddings/m")
    for embedding in ("image", "concat"):
        for limit in (256, 7):
            got = guards.embedding_sample(paths, embedding, limit)
            want = sample_on_the_driver(paths, embedding, limit)
            assert got.dtype == want.dtype and np.array_equal(got, want)


def test_clustering_records_the_table_health_later_jobs_report(tmp_path, spark, data):
    """`curate cluster` picks the guards' sample in its sample tasks (no second decode of the
    table); semdedup and prune report exactly what guards.table_health reads from the table."""
    import json

    from curate.embedding_space import guards
    from curate.embedding_space.jobs import run_prune, run_semdedup
    from curate.engine.spark import SparkExecutor

    for name, executor, rows in (("local", LocalExecutor(), 1800), ("spark", SparkExecutor(spark), 400)):
        ds = Dataset(tmp_path / name)
        write_embeddings(ds, "m", data, rows_per_shard=rows)
        run_cluster(ds, "m", K, executor=executor)
        want = guards.table_health(ds, "embeddings/m", "image")
        meta = json.loads((ds.root / "centroids" / "kmeans" / "_meta.json").read_text())
        assert meta["embeddings_health"]["health"] == json.loads(json.dumps(want[0]))
        sd = run_semdedup(ds, "kmeans", 0.01, executor=executor)
        dbp = run_prune(ds, "kmeans", 0.5, executor=executor)
        for res in (sd, dbp):
            assert res["guards"]["distributions"]["embeddings"] == want[0]
            assert list(res["guards"]["distributions"]["embeddings"]) == list(want[0])  # same key order
        # a clustering made before the health was recorded: the sample is drawn now, by this executor
        meta_path = ds.root / "centroids" / "kmeans" / "_meta.json"
        old = json.loads(meta_path.read_text())
        del old["embeddings_health"]
        meta_path.write_text(json.dumps(old))
        again = run_semdedup(ds, "kmeans", 0.01, executor=executor, run="semdedup_old")
        assert again["guards"]["distributions"]["embeddings"] == want[0]
