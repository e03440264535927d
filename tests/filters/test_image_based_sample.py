"""image_based's k-means input: the whole caption-filtered pool, uid-sorted (DataComp's input)
up to ``max_kmeans_points``; above it, the rows with the smallest (uid hash, uid), drawn by the
workers, the same on both engines, the driver receiving at most the bound's vectors."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from curate.embedding_space.common import uid_hash
from curate.embedding_space.kmeans import train_kmeans
from curate.engine import LocalExecutor
from curate.filters.image_based import _caption_filtered_pool, kmeans_input
from curate.filters.job import run_filters
from curate.filters.stages import FilterSpecError, parse_filter

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from filters.conftest import ENGLISH, OTHER, write_embeddings, write_samples  # noqa: E402

N, K, SEED = 400, 4, 7


@pytest.fixture
def big_pool(tmp_dataset):
    """400 samples in 5 shards (English and other captions), embeddings for 350 in 4 shards."""
    rng = np.random.default_rng(5)
    texts = [(ENGLISH + OTHER)[i % 11] for i in range(N)]
    uids = write_samples(tmp_dataset, texts, [640] * N, [480] * N, rows_per_shard=80)
    write_embeddings(tmp_dataset, "tiny", uids[:350], rng.uniform(0.1, 0.4, 350), dim=8, rows_per_shard=90)
    np.save(tmp_dataset.root / "target.npy", rng.normal(size=(3, 8)).astype(np.float32))
    return tmp_dataset


def _spec(ds, **extra) -> str:
    more = "".join(f",{k}={v}" for k, v in extra.items())
    return f"image_based:k={K},seed={SEED},target={ds.root / 'target.npy'}{more}"


def _caption_filtered(ds) -> pa.Table:
    """(uid, float32 embedding) of every pool row with an embedding that passes DataComp's
    caption filter, read straight from the tables the job wrote and read."""
    import pyarrow.compute as pc

    stats = ds.read("text_stats", columns=["uid", "language", "token_count", "char_count"])
    ok = [lang == "en" and tok >= 2 and ch >= 6 for lang, tok, ch in
          zip(stats.column("language").to_pylist(), stats.column("token_count").to_pylist(),
              stats.column("char_count").to_pylist())]
    passing = stats.filter(pa.array(ok)).column("uid")
    emb = ds.read("embeddings/tiny", columns=["uid", "image_embedding"])
    return emb.filter(pc.is_in(emb.column("uid"), value_set=passing.combine_chunks()))


def _matrix(t: pa.Table) -> np.ndarray:
    col = t.column("image_embedding").combine_chunks()
    return col.flatten().to_numpy(zero_copy_only=False).reshape(len(col), -1).astype(np.float32)


def _centroids(ds, run) -> np.ndarray:
    return np.load(ds.root / "decisions" / run / "_image_based_centroids.npy")


def test_below_the_bound_the_kmeans_input_is_the_whole_pool(big_pool):
    r = run_filters(big_pool, [parse_filter(_spec(big_pool))], LocalExecutor(), name="default")
    pool = _caption_filtered(big_pool).sort_by("uid")
    n = pool.num_rows
    assert 100 < n < 350  # some captions fail the filter, some rows have no embedding
    info = r["resolved"]["image_based"]
    assert (info["kmeans_points"], info["caption_filtered_rows"], info["kmeans_sampled"]) == (n, n, False)
    assert info["kmeans_bound"] == (2 << 30) // (4 * 8)  # the cluster job's 2 GiB float32 cap at 8 dims
    # DataComp's input: all of it, uid-sorted, FAISS not subsampling
    want = train_kmeans(_matrix(pool), K, niter=20, seed=SEED, max_points_per_centroid=10_000_000)
    assert np.array_equal(_centroids(big_pool, "default"), want)
    # a bound the pool just fits in changes nothing: same centroids, same decision bytes
    r = run_filters(big_pool, [parse_filter(_spec(big_pool, max_kmeans_points=n))], LocalExecutor(), name="at")
    assert r["resolved"]["image_based"]["kmeans_sampled"] is False
    assert np.array_equal(_centroids(big_pool, "at"), want)
    assert [Path(p).read_bytes() for p in big_pool.shards("decisions/default")] == \
        [Path(p).read_bytes() for p in big_pool.shards("decisions/at")]


def test_above_the_bound_a_hash_sample_the_same_on_local_and_spark(big_pool, spark):
    from curate.engine.spark import SparkExecutor

    bound = 50
    spec = [parse_filter(_spec(big_pool, max_kmeans_points=bound))]
    r_local = run_filters(big_pool, spec, LocalExecutor(), name="local")
    r_spark = run_filters(big_pool, spec, SparkExecutor(spark), name="spark")
    pool = _caption_filtered(big_pool)
    for r in (r_local, r_spark):
        info = r["resolved"]["image_based"]
        assert (info["kmeans_points"], info["kmeans_bound"], info["kmeans_sampled"]) == (bound, bound, True)
        assert info["caption_filtered_rows"] == pool.num_rows
    # the sample: the bound smallest (seed-SEED uid hash, uid) of the caption-filtered pool, uid-sorted
    h = uid_hash(pool.column("uid").to_pylist(), SEED)
    order = np.lexsort((np.array(pool.column("uid").to_pylist()), h))[:bound]
    sample = pool.take(pa.array(order)).sort_by("uid")
    want = train_kmeans(_matrix(sample), K, niter=20, seed=SEED, max_points_per_centroid=10_000_000)
    assert np.array_equal(_centroids(big_pool, "local"), want)
    assert np.array_equal(_centroids(big_pool, "spark"), want)
    local, sparked = big_pool.shards("decisions/local"), big_pool.shards("decisions/spark")
    assert [Path(p).read_bytes() for p in local] == [Path(p).read_bytes() for p in sparked]
    # the guards' acted-on head is drawn from the sample
    assert r_local["guards"]["distributions"]["acted_on"]["n"] == bound
    assert r_local["guards"] == r_spark["guards"]


@pytest.mark.parametrize("engine", ["local", "spark"])
def test_the_driver_gets_counts_and_the_bounds_vectors(big_pool, engine, request):
    run_filters(big_pool, [parse_filter(_spec(big_pool, max_kmeans_points=K))], LocalExecutor(), name="stats")
    if engine == "spark":
        from curate.engine.spark import SparkExecutor

        ex = SparkExecutor(request.getfixturevalue("spark"))
    else:
        ex = LocalExecutor()
    p = parse_filter(_spec(big_pool)).params
    shards = [str(s) for s in big_pool.shards("samples")]
    bound = 30
    rows, n = kmeans_input(_caption_filtered_pool(big_pool, ex, p, "embeddings/tiny", 0, shards), bound, "e0")
    assert n == _caption_filtered(big_pool).num_rows > bound and rows.num_rows == bound
    assert rows.column("uid").to_pylist() == sorted(rows.column("uid").to_pylist())
    calls = ex.driver_counter.by_call
    # the pool's count, one count per threshold pass (one with uniform hashes), then the vectors
    assert calls["collect_small"] == bound and calls["count"] <= 3, calls


def test_a_bound_below_k_is_refused():
    with pytest.raises(FilterSpecError, match="max_kmeans_points=3 is below k=4"):
        parse_filter("image_based:k=4,max_kmeans_points=3,target=t.npy")


def test_the_jobs_driver_rows_do_not_grow_with_the_pool(tmp_path):
    """The whole filter job at two pool sizes (4x): the driver's rows grow by per-shard records
    only, the k-means input staying at the bound."""
    from curate.embedding_space.guards import PAIR_SAMPLE
    from curate.tables import Dataset

    bound, got = 40, []
    for n in (600, 2400):
        ds = Dataset(tmp_path / str(n))
        ds.root.mkdir()
        uids = write_samples(ds, [ENGLISH[i % len(ENGLISH)] for i in range(n)], [640] * n, [480] * n,
                             rows_per_shard=200)
        write_embeddings(ds, "tiny", uids, np.full(n, 0.3), rows_per_shard=200)
        np.save(ds.root / "target.npy", np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32))
        ex = LocalExecutor()
        r = run_filters(ds, [parse_filter(_spec(ds, max_kmeans_points=bound))], ex, name="ib")
        assert r["resolved"]["image_based"]["kmeans_points"] == bound
        shards = len(ds.shards("samples"))
        rows = ex.driver_counter.driver_rows
        # k-means input, the guards' sample, counts, per-(filter, reason) rows, shard records
        assert rows <= bound + PAIR_SAMPLE + 2 * shards + 40, ex.driver_counter.by_call
        got.append((rows, shards))
        assert ex.driver_counter.by_call["collect_small"] <= bound + PAIR_SAMPLE + 40
    (small, s_small), (large, s_large) = got
    assert large - small <= 2 * (s_large - s_small)
