"""End-to-end jobs on written embeddings tables: Spark vs in-process, partition counts,
reference semantics, counts that add up, outputs queryable."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

from curate.embedding_space.clusters import run_cluster
from curate.embedding_space.jobs import run_exact_dedup, run_near_dedup, run_prune, run_semdedup
from curate.embedding_space.semdedup import semdedup_reference
from curate.engine import LocalExecutor
from curate.errors import DatasetError
from curate.subset import read_subset
from curate.tables import Dataset

from .helpers import clustered_embeddings, uid, write_embeddings

K = 6


def _pipeline(ds: Dataset, executor):
    run_cluster(ds, "m", K, executor=executor)
    sd = run_semdedup(ds, "kmeans", 0.01, executor=executor)
    dbp = run_prune(ds, "kmeans", 0.5, input_uids=pa.array(read_subset(ds, "semdedup")), executor=executor)
    return sd, dbp


def _decisions(ds, run):
    return ds.read(f"decisions/{run}").sort_by("uid")


@pytest.fixture(scope="module")
def data():
    return clustered_embeddings(n=1500, d=24, centers=5, seed=3)


def test_spark_equals_local_across_partition_counts(tmp_path, spark, data):
    from curate.engine.spark import SparkExecutor

    a = Dataset(tmp_path / "a")
    write_embeddings(a, "m", data, rows_per_shard=1500)  # one shard
    _pipeline(a, LocalExecutor())
    b = Dataset(tmp_path / "b")
    write_embeddings(b, "m", data, rows_per_shard=230)  # seven shards
    old = spark.conf.get("spark.sql.shuffle.partitions")
    spark.conf.set("spark.sql.shuffle.partitions", "3")
    try:
        _pipeline(b, SparkExecutor(spark))
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", old)
    # same centroids, same assignment, same decisions, same subsets
    np.testing.assert_array_equal(a.read("centroids/kmeans").column("centroid").to_pylist(),
                                  b.read("centroids/kmeans").column("centroid").to_pylist())
    ca = a.read("clusters/kmeans").sort_by("uid")
    cb = b.read("clusters/kmeans").sort_by("uid")
    assert ca.column("cluster_id").equals(cb.column("cluster_id"))
    for run in ("semdedup", "dbp"):
        assert _decisions(a, run).equals(_decisions(b, run)), run
        assert read_subset(a, run) == read_subset(b, run)
    assert a.read("cluster_stats/dbp").equals(b.read("cluster_stats/dbp"))


def test_semdedup_job_matches_reference_and_counts_add_up(tmp_path, data):
    ds = Dataset(tmp_path / "d")
    uids = write_embeddings(ds, "m", data, rows_per_shard=400)
    sd, dbp = _pipeline(ds, LocalExecutor())
    # reference semantics straight from the tables: cluster members ordered by distance
    cl = ds.read("clusters/kmeans")
    pos = {u: i for i, u in enumerate(uids)}
    x16 = data.astype(np.float16).astype(np.float32)
    x16 /= np.linalg.norm(x16, axis=1, keepdims=True)
    dec = {r["uid"]: r for r in ds.read("decisions/semdedup").to_pylist()}
    removed = 0
    for k in range(K):
        sel = [i for i, c in enumerate(cl.column("cluster_id").to_pylist()) if c == k]
        u = np.array([cl.column("uid")[i].as_py() for i in sel], dtype=object)
        dist = cl.column("distance").to_numpy()[sel]
        ref = semdedup_reference(x16[[pos[v] for v in u]], u, dist, 0.01)
        assert [dec[v]["kept"] for v in u] == ref.tolist()
        removed += int((~ref).sum())
    assert removed > 100
    c = sd["counts"]
    assert c["input"] == len(uids) and c["kept"] + c["removed"] == c["input"]
    assert c["reasons"]["semantic_duplicate"] == removed
    # a removed row points at a member of the same cluster that came earlier
    cid = dict(zip(cl.column("uid").to_pylist(), cl.column("cluster_id").to_pylist()))
    for r in dec.values():
        if not r["kept"]:
            assert r["reason"] == "semantic_duplicate" and r["value"] > 0.99
            assert cid[r["detail"]] == cid[r["uid"]]
            # the cosine of the stored vectors normalised once in float32, as the reference
            a, b = x16[pos[r["uid"]]].astype(np.float64), x16[pos[r["detail"]]].astype(np.float64)
            assert r["value"] == float(np.float32(a @ b))  # decisions hold values as float32
    st = ds.read("cluster_stats/semdedup").to_pylist()
    assert sum(s["size"] for s in st) == len(uids) and sum(s["kept"] for s in st) == c["kept"]
    assert all(s["d_intra"] > 0 and s["d_inter"] > 0 for s in st if s["size"])
    # DBP ran on the semdedup subset: totals are exact, quotas within bounds
    stats = ds.read("cluster_stats/dbp").to_pylist()
    n_in = c["kept"]
    n_keep = int(n_in * 0.5)
    assert dbp["counts"]["input"] == n_in and dbp["counts"]["kept"] == n_keep
    assert sum(s["quota"] for s in stats) == n_keep == sum(s["kept"] for s in stats)
    m = int(n_keep / K * 0.5)
    for s in stats:
        assert min(m, s["size"] - 1) <= s["quota"] <= s["size"]
    manifest = json.loads((ds.root / "_runs" / "dbp.json").read_text())
    assert manifest["counts"]["kept"] == n_keep and manifest["params"]["temperature"] == 0.5
    # hardest kept: within each cluster every kept distance >= every pruned distance
    d = ds.read("decisions/dbp").to_pylist()
    for k in range(K):
        kept = [r["value"] for r in d if r["detail"] == f"cluster={k}" and r["kept"]]
        gone = [r["value"] for r in d if r["detail"] == f"cluster={k}" and not r["kept"]]
        if kept and gone:
            assert min(kept) >= max(gone)


def test_subset_uids_without_embeddings_are_reported(tmp_path, data):
    ds = Dataset(tmp_path / "d")
    uids = write_embeddings(ds, "m", data[:300], rows_per_shard=300)
    run_cluster(ds, "m", 3)
    ghost = [uid(10_000 + i) for i in range(4)]
    r = run_semdedup(ds, "kmeans", 0.01, input_uids=pa.array(uids[:100] + ghost))
    assert r["counts"]["input"] == 104
    assert r["counts"]["reasons"]["no_embedding"] == 4
    assert set(read_subset(ds, "semdedup")) <= set(uids[:100])


def test_near_and_exact_duplicates(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    base = rng.standard_normal((40, 16)).astype(np.float32)
    base /= np.linalg.norm(base, axis=1, keepdims=True)
    # rows 40..44 are near copies of row 0 and 1; rows 45.. a chain 5 -> 45 -> 46
    x = np.concatenate([base, base[[0, 0, 1]] + 0.001, base[[5]] * 0.9 + base[[6]] * 0.1])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ds = Dataset(tmp_path / "d")
    uids = write_embeddings(ds, "m", x, rows_per_shard=20)
    r = run_near_dedup(ds, "m", 0.99)
    dec = {d["uid"]: d for d in r["decisions"].to_pylist()}
    g0 = sorted([uids[0], uids[40], uids[41]])
    assert [dec[u]["kept"] for u in g0] == [True, False, False]
    assert all(dec[u]["detail"] == g0[0] for u in g0[1:])
    assert r["counts"]["removed"] == 3 + (0 if dec[uids[43]]["kept"] and dec[uids[5]]["kept"] else 1)
    # exact duplicates from the downloads table
    from curate.tables import load_schema

    n = 6
    dl = pa.table({
        "uid": [uid(i) for i in range(n)], "status": ["success"] * 5 + ["failed"],
        "error_class": [None] * 5 + ["timeout"], "error_message": [None] * 6,
        # the smallest uid of the "aa" rows (1, 2, 4) is row 2's, not the first row's
        "sha256": ["cc", "aa", "aa", "bb", "aa", None],
        "width": pa.array([1] * 6, pa.int32()), "height": pa.array([1] * 6, pa.int32()),
        "original_width": pa.array([1] * 6, pa.int32()), "original_height": pa.array([1] * 6, pa.int32()),
        "shard": [None] * 6, "key": [None] * 6, "attempts": pa.array([1] * 6, pa.int32())},
        schema=load_schema("downloads").arrow())
    ds.write_table("downloads", dl, schema="downloads")
    r = run_exact_dedup(ds)
    dec = {d["uid"]: d for d in r["decisions"].to_pylist()}
    aa = sorted([uid(1), uid(2), uid(4)])
    assert aa[0] == uid(2)  # so a row-order tie-break (row 1) would fail below
    assert [dec[u]["reason"] for u in aa] == ["kept", "exact_duplicate", "exact_duplicate"]
    assert dec[aa[1]]["detail"] == aa[0] and dec[aa[1]]["value"] == 3
    assert dec[uid(5)]["reason"] == "not_downloaded"
    assert r["counts"] == {"input": 6, "kept": 3, "removed": 3,
                           "reasons": {"exact_duplicate": 2, "kept": 3, "not_downloaded": 1}}
    # restricted: a uid without a downloads row is found by the anti-join; when every uid of a
    # restriction known to hold each once is found, the counts add up without it
    r = run_exact_dedup(ds, run="exact-ghost", input_uids=[uid(1), uid(2), uid(99)])
    assert {d["uid"]: d["reason"] for d in r["decisions"].to_pylist()} == {
        uid(1): "exact_duplicate", uid(2): "kept", uid(99): "not_downloaded"}
    r = run_exact_dedup(ds, run="exact-found", input_uids=[uid(1), uid(2), uid(5)])
    assert r["counts"] == {"input": 3, "kept": 1, "removed": 2,
                           "reasons": {"exact_duplicate": 1, "kept": 1, "not_downloaded": 1}}
    # the decisions do not depend on the hash prefix the rows group by (its length follows the
    # pool's size): a group per 8-digit prefix writes the bytes of the one-digit groups here
    from curate.embedding_space.jobs import exact_dedup

    monkeypatch.setattr(exact_dedup, "GROUP_ROWS", 0)
    run_exact_dedup(ds, run="exact-fine")
    for t in ("decisions", "subsets"):
        want, got = ds.root / t / "exact_dedup", ds.root / t / "exact-fine"
        files = sorted(p.relative_to(want) for p in want.rglob("*") if p.is_file() and not p.name.startswith("_"))
        assert files and all((want / f).read_bytes() == (got / f).read_bytes() for f in files), t


def test_near_duplicate_survivor_is_the_smallest_uid_not_the_first_row(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((40, 16)).astype(np.float32)
    # a near copy of row 1 at a later row whose uid sorts before row 1's
    j = next(i for i in range(2, 40) if uid(i) < uid(1))
    x[j] = x[1] + 0.001
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ds = Dataset(tmp_path / "d")
    uids = write_embeddings(ds, "m", x, rows_per_shard=16)
    dec = {d["uid"]: d for d in run_near_dedup(ds, "m", 0.99)["decisions"].to_pylist()}
    assert dec[uids[j]]["kept"] and not dec[uids[1]]["kept"]
    assert dec[uids[1]]["detail"] == uids[j]


def test_near_dedup_without_any_pair_keeps_every_row(tmp_path):
    x = np.random.default_rng(2).standard_normal((30, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ds = Dataset(tmp_path / "d")
    write_embeddings(ds, "m", x, rows_per_shard=16)
    r = run_near_dedup(ds, "m", 0.9999)
    assert r["counts"]["input"] == 30 and r["counts"]["removed"] == 0


def test_cluster_stats_queryable_with_duckdb(tmp_path, data):
    import duckdb

    ds = Dataset(tmp_path / "d")
    write_embeddings(ds, "m", data[:600], rows_per_shard=600)
    run_cluster(ds, "m", 4)
    run_prune(ds, "kmeans", 0.3)
    con = duckdb.connect()
    row = con.execute(f"SELECT sum(size), sum(quota), sum(kept), count(*) FROM "
                      f"read_parquet('{ds.root}/cluster_stats/dbp/*.parquet')").fetchone()
    assert row == (600, 180, 180, 4)
    s = con.execute(f"SELECT count(*) FROM read_parquet('{ds.root}/cluster_stats/kmeans/*.parquet') "
                    f"WHERE d_intra > 0 AND d_inter > 0 AND quota IS NULL").fetchone()
    assert s == (4,)


def test_near_dedup_ivf_with_all_lists_equals_exact_and_keep_by_score(tmp_path, data):
    ds = Dataset(tmp_path / "d")
    write_embeddings(ds, "m", data[:900], rows_per_shard=450)
    run_cluster(ds, "m", 4)
    exact = run_near_dedup(ds, "m", 0.98, run="exact")["decisions"]
    ivf = run_near_dedup(ds, "m", 0.98, clusters="kmeans", nprobe=4, run="ivf")["decisions"]
    assert exact.equals(ivf)
    assert exact.filter(pa.compute.invert(exact.column("kept"))).num_rows > 20
    # keep the highest CLIP score of each group instead of the smallest uid
    by_score = run_near_dedup(ds, "m", 0.98, keep_by="clip_score", run="score")["decisions"].to_pylist()
    emb = ds.read("embeddings/m", columns=["uid", "clip_score"]).to_pylist()
    score = {r["uid"]: r["clip_score"] for r in emb}
    for r in by_score:
        if not r["kept"]:
            assert score[r["detail"]] >= score[r["uid"]]
    # another model's clustering of the same dim partitions another space: refused, not used
    write_embeddings(ds, "m2", data[::-1][:900].copy(), rows_per_shard=450)
    with pytest.raises(DatasetError, match="clustering 'kmeans' was made from embeddings/m; near dedup searches "
                                           "embeddings/m2"):
        run_near_dedup(ds, "m2", 0.98, clusters="kmeans", nprobe=1, run="other")


def test_near_dedup_similarities_are_cosines_of_the_stored_vectors(tmp_path):
    """Pairs are judged by the cosine of the stored (float16) vectors, each normalised in
    float32 as the reference normalises them: no similarity past 1, and the pairs are the
    float64 all-pairs cosines above the threshold (it sits in a gap of theirs)."""
    rng = np.random.default_rng(5)
    base = rng.standard_normal((60, 32)).astype(np.float32)
    x = np.concatenate([base, base[:40] + rng.standard_normal((40, 32)).astype(np.float32) * 0.03,
                        base[:10]])  # near copies around cosine 0.999, and exact ones
    ds = Dataset(tmp_path / "d")
    uids = write_embeddings(ds, "m", x, rows_per_shard=33)
    v = ds.read("embeddings/m").column("image_embedding").combine_chunks().values.to_numpy(zero_copy_only=False)
    v = v.astype(np.float64).reshape(len(x), -1)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    sims = np.triu(v @ v.T, 1)
    near = np.sort(sims[sims > 0.99])
    gap = int(np.argmax(np.diff(near[: len(near) // 2 + 1])))
    threshold = float((near[gap] + near[gap + 1]) / 2)
    r = run_near_dedup(ds, "m", threshold)
    dec = {d["uid"]: d for d in r["decisions"].to_pylist()}
    assert max(d["value"] for d in dec.values() if not d["kept"]) <= 1 + 1e-6
    parent = list(range(len(x)))  # the reference's components, smallest uid kept

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in zip(*np.nonzero(sims > threshold)):
        parent[find(i)] = find(j)
    groups: dict[int, list[str]] = {}
    for i in range(len(x)):
        groups.setdefault(find(i), []).append(uids[i])
    removed = {u for g in groups.values() for u in sorted(g)[1:]}
    assert {u for u, d in dec.items() if not d["kept"]} == removed and len(removed) > 10


def test_concat_embedding_clustering(tmp_path, data):
    ds = Dataset(tmp_path / "d")
    write_embeddings(ds, "m", data[:400], rows_per_shard=400)
    r = run_cluster(ds, "m", 3, embedding="concat", name="both")
    assert r["meta"]["dim"] == 2 * data.shape[1] and r["counts"]["rows"] == 400
    sd = run_semdedup(ds, "both", 0.02)
    assert sd["counts"]["input"] == 400


def _vector_encodings(path) -> dict:
    import pyarrow.parquet as pq

    md = pq.ParquetFile(path).metadata
    rg = md.row_group(0)
    return {rg.column(i).path_in_schema.split(".")[0]: set(rg.column(i).encodings) for i in range(rg.num_columns)}


def test_tables_written_dictionary_encoded_give_the_same_outputs(tmp_path, data):
    """Embeddings tables written before the vector columns went PLAIN (every column
    dictionary-encoded) are still read, and every output of cluster + dedup semantic + prune
    dbp is byte-identical to the same rows in today's layout."""
    import hashlib

    from curate.embedding_space.vectors import list_to_matrix

    new, old = Dataset(tmp_path / "new"), Dataset(tmp_path / "old")
    write_embeddings(new, "m", data, rows_per_shard=400)
    write_embeddings(old, "m", data, rows_per_shard=400, dictionary_encoded=True)
    for p in new.shards("embeddings/m"):
        enc = _vector_encodings(p)
        assert "RLE_DICTIONARY" not in enc["image_embedding"] | enc["text_embedding"], enc
        assert "RLE_DICTIONARY" in enc["uid"]
    for p in old.shards("embeddings/m"):
        assert "RLE_DICTIONARY" in _vector_encodings(p)["image_embedding"]
    a, b = new.read("embeddings/m", schema="embeddings"), old.read("embeddings/m", schema="embeddings")
    assert a.schema.equals(b.schema, check_metadata=True) and a.equals(b)
    assert np.array_equal(list_to_matrix(a.column("image_embedding")).view(np.uint16),
                          data.astype(np.float16).view(np.uint16))
    _pipeline(new, LocalExecutor())
    _pipeline(old, LocalExecutor())

    def digests(ds):
        return {str(p.relative_to(ds.root)): hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(ds.root.rglob("*.parquet"))
                if not p.relative_to(ds.root).parts[0].startswith(("embeddings", "_", "."))}

    da, db = digests(new), digests(old)
    assert {k.split("/")[0] for k in da} >= {"centroids", "clusters", "cluster_stats", "decisions"}
    assert da == db


def test_clustering_a_subset_with_fewer_embedded_uids_than_k_is_one_line(tmp_path, data):
    ds = Dataset(tmp_path / "d")
    uids = write_embeddings(ds, "m", data[:300], rows_per_shard=150)
    ghosts = [uid(10_000 + i) for i in range(6)]
    with pytest.raises(DatasetError, match=r"at least k=4 rows with embeddings: 2 of the input subset's 8 uids have "
                                           r"a row in embeddings/m"):
        run_cluster(ds, "m", 4, input_uids=pa.array(uids[:2] + ghosts))
    assert not (ds.root / "_tmp" / "cluster-kmeans").exists()
    with pytest.raises(DatasetError, match="at least k=4 rows, the input subset holds 0 uids"):
        run_cluster(ds, "m", 4, input_uids=pa.array([], pa.string()))


def test_a_clustering_of_vectors_since_rewritten_under_the_same_uids_is_refused(tmp_path, data):
    """semdedup and prune use the clustering's assignments with the vectors: after a re-embed
    (new vectors, same uids and shards) they are refused in one line, not mixed."""
    ds = Dataset(tmp_path / "d")
    uids = write_embeddings(ds, "m", data[:300], rows_per_shard=150)
    run_cluster(ds, "m", 3)
    write_embeddings(ds, "m", data[:300], uids=uids, rows_per_shard=150)  # the same bytes: still current
    run_semdedup(ds, "kmeans", 0.05)
    write_embeddings(ds, "m", data[300:600].copy(), uids=uids, rows_per_shard=150)
    for job in (lambda: run_semdedup(ds, "kmeans", 0.05, run="s2"), lambda: run_prune(ds, "kmeans", 0.5)):
        with pytest.raises(DatasetError, match=r"clustering 'kmeans' was made from embeddings/m as it was before it "
                                               r"changed \(2 shard\(s\) differ, first part-00000.parquet\)"):
            job()
    run_cluster(ds, "m", 3)  # a new clustering of the new vectors
    assert run_semdedup(ds, "kmeans", 0.05, run="s3")["counts"]["input"] == 300


def test_near_dedup_refuses_a_table_with_repeated_uids_rather_than_folding_them(tmp_path, data):
    ds = Dataset(tmp_path / "d")
    uids = [uid(i) for i in range(300)]
    write_embeddings(ds, "m", data[:320], uids=uids + uids[:20], rows_per_shard=160)  # 20 uids twice
    with pytest.raises(DatasetError, match="embeddings/m has 320 rows, near_dedup made 3"):
        run_near_dedup(ds, "m", 0.98)


def test_semdedup_refuses_eps_zero_whose_rule_is_float_rounding(tmp_path, data):
    ds = Dataset(tmp_path / "d")
    write_embeddings(ds, "m", data[:200], rows_per_shard=200)
    run_cluster(ds, "m", 2)
    with pytest.raises(DatasetError, match=r"--eps must be in \(0, 1\], got 0.0 \(at 0 the rule 'cosine > 1' is "
                                           r"decided by float rounding"):
        run_semdedup(ds, "kmeans", 0.0)
