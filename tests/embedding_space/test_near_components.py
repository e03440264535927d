"""Near-duplicate groups found by the engine (min-label propagation over the pairs frame) are
the components the in-memory union-find finds, on chains that need many rounds; restricted
near dedup (a DataComp .npy subset, joined by the engine) decides as the all-pairs reference
over the subset's rows, locally and on Spark, byte for byte."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate.embedding_space.common import subset_uids
from curate.embedding_space.components import EDGES, component_labels
from curate.embedding_space.duplicates import connected_components, near_duplicate_decisions
from curate.embedding_space.jobs import run_near_dedup
from curate.engine import LocalExecutor
from curate.tables import Dataset
from curate.uid import uids_to_datacomp

from .helpers import uid, write_embeddings


def _graph(n_chain: int = 70, n_random: int = 120, seed: int = 0):
    """A long path whose uid order zig-zags (labels must travel both ways), a star, and random
    edges among other nodes; (node uids, edges a, edges b) as node indices."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(n_chain)  # path visits nodes in an order unrelated to uid order
    a = list(order[:-1])
    b = list(order[1:])
    star = n_chain + np.arange(10)
    a += [star[0]] * 9
    b += list(star[1:])
    base = n_chain + 10
    ra = rng.integers(base, base + n_random, 60)
    rb = rng.integers(base, base + n_random, 60)
    keep = ra != rb
    a += list(ra[keep])
    b += list(rb[keep])
    return [uid(i) for i in range(base + n_random)], np.asarray(a), np.asarray(b)


def _labels(executor, nodes, a, b) -> tuple[dict, int]:
    ua = [nodes[i] for i in a]
    ub = [nodes[i] for i in b]
    edges = executor.frame_from_table(pa.table([pa.array(ua + ub), pa.array(ub + ua)], schema=EDGES))
    labels, rounds = component_labels(edges)
    t = labels.collect_small(len(nodes))
    return dict(zip(t.column("uid").to_pylist(), t.column("label").to_pylist())), rounds


def _reference(nodes, a, b) -> dict:
    used = sorted(set(a.tolist()) | set(b.tolist()), key=lambda i: nodes[i])  # uid order
    index = {n: k for k, n in enumerate(used)}
    lab = connected_components(len(used), np.array([index[i] for i in a]), np.array([index[i] for i in b]))
    return {nodes[used[k]]: nodes[used[lab[k]]] for k in range(len(used))}


def test_component_labels_equal_union_find():
    nodes, a, b = _graph()
    got, rounds = _labels(LocalExecutor(), nodes, a, b)
    assert got == _reference(nodes, a, b)
    # pointer jumping: a 70-node path settles in far fewer rounds than its length
    assert 2 <= rounds < 20, rounds


def _chain_pool(tmp_path):
    """Rows along arcs: neighbours on an arc are near duplicates, its ends are not (groups
    joined only through chains), plus unrelated rows."""
    rng = np.random.default_rng(5)
    d = 16
    arcs = []
    for _ in range(6):
        p, q = rng.standard_normal(d), rng.standard_normal(d)
        q -= p * (p @ q) / (p @ p)
        p, q = p / np.linalg.norm(p), q / np.linalg.norm(q)
        t = np.linspace(0, 0.9, 25)[:, None]
        arcs.append(np.cos(t) * p + np.sin(t) * q)
    x = np.concatenate(arcs + [rng.standard_normal((150, d))])
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    x = x[rng.permutation(len(x))]
    ds = Dataset(tmp_path)
    uids = write_embeddings(ds, "m", x, rows_per_shard=90)
    return ds, uids, x


def _npy_subset(tmp_path, uids):
    pick = sorted(u for i, u in enumerate(uids) if i % 5)  # 80% of the rows
    arr = uids_to_datacomp(pick)[::-1].copy()  # unsorted on purpose: membership needs no order
    path = tmp_path / "pick.npy"
    np.save(path, arr)
    return path, set(pick)


def _reference_decisions(ds, uids, x, pick, threshold):
    rows = [i for i, u in enumerate(uids) if u in pick]
    xx = x.astype(np.float16).astype(np.float32)
    xx = xx / np.linalg.norm(xx, axis=1, keepdims=True)  # the stored vectors, normalised in float32
    emb = ds.read("embeddings/m", columns=["uid", "clip_score"])
    score = dict(zip(emb.column("uid").to_pylist(), emb.column("clip_score").to_pylist()))
    sub = [uids[i] for i in rows]
    ref, stats = near_duplicate_decisions(sub, xx[rows], threshold, stage="near_dedup",
                                          scores=np.asarray([score[u] for u in sub], np.float32))
    return ref.sort_by("uid"), stats


def test_restricted_near_dedup_by_clip_score_equals_all_pairs(tmp_path):
    ds, uids, x = _chain_pool(tmp_path / "d")
    path, pick = _npy_subset(tmp_path, uids)
    threshold = 0.995
    ref, stats = _reference_decisions(ds, uids, x, pick, threshold)
    assert stats["groups_with_duplicates"] >= 6 and stats["removed"] > 60  # the arcs are chains
    r = run_near_dedup(ds, "m", threshold, run="nd", keep_by="clip_score", input_uids=subset_uids(ds, str(path)))
    assert ds.read("decisions/nd").sort_by("uid").equals(ref)
    assert r["counts"]["removed"] == stats["removed"] and r["counts"]["pairs"] == stats["pairs"]
    assert r["counts"]["component_rounds"] >= 2


@pytest.mark.slow
def test_spark_components_and_restricted_near_dedup_equal_local(tmp_path, spark):
    from curate.engine.spark import SparkExecutor

    nodes, a, b = _graph(seed=1)
    got, _ = _labels(SparkExecutor(spark), nodes, a, b)
    assert got == _reference(nodes, a, b)

    ds, uids, x = _chain_pool(tmp_path / "d")
    path, _ = _npy_subset(tmp_path, uids)
    run_near_dedup(ds, "m", 0.995, run="local", keep_by="clip_score", input_uids=subset_uids(ds, str(path)))
    old = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "3")
    try:
        run_near_dedup(ds, "m", 0.995, run="spark", keep_by="clip_score", input_uids=subset_uids(ds, str(path)),
                       executor=SparkExecutor(spark))
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", old)
    for table in ("decisions/{}", "subsets/{}"):
        pa_ = [p.read_bytes() for p in sorted(ds.table_dir(table.format("local")).glob("*.parquet"))]
        pb = [p.read_bytes() for p in sorted(ds.table_dir(table.format("spark")).glob("*.parquet"))]
        assert pa_ == pb and pa_
    assert (ds.root / "subsets/local/uids.npy").read_bytes() == (ds.root / "subsets/spark/uids.npy").read_bytes()
