"""SemDeDup and DBP on hand-made embeddings with known answers, and against direct NumPy
implementations of the reference semantics."""

import numpy as np
import pytest

from curate.embedding_space.dbp import (centroid_d_inter, dbp_plan, round_to_total, select_in_cluster,
                                        solve_quotas, ssp_quotas)
from curate.embedding_space.kmeans import assign, train_kmeans
from curate.embedding_space.semdedup import (cluster_order, max_earlier_similarity, semdedup_cluster,
                                             semdedup_reference)
from curate.embedding_space.vectors import normalize_rows


def _u(i):
    return f"{i:032x}"


def _vec(*angles_deg, d=4):
    """Unit vectors in the plane of the first two axes at the given angles."""
    out = np.zeros((len(angles_deg), d), np.float32)
    for r, a in enumerate(angles_deg):
        out[r, 0], out[r, 1] = np.cos(np.radians(a)), np.sin(np.radians(a))
    return out


def test_semdedup_hand_example():
    # a and b are 5 degrees apart (cos 0.996), c and d too; a/b vs c/d are 60 degrees apart.
    x = _vec(0, 5, 60, 65)
    uids = [_u(1), _u(2), _u(3), _u(4)]
    dist = np.array([0.5, 0.4, 0.3, 0.2])  # processing order a, b, c, d
    r = semdedup_cluster(x, uids, dist, eps=0.05)
    assert r["kept"].tolist() == [True, False, True, False]
    assert r["nearest"].tolist() == [None, _u(1), _u(2), _u(3)]  # c is 55 deg from b, 60 from a
    assert np.isnan(r["max_sim"][0])
    np.testing.assert_allclose(r["max_sim"][1], np.cos(np.radians(5)), atol=1e-6)
    # with a tiny eps nothing is close enough
    assert semdedup_cluster(x, uids, dist, eps=1e-4)["kept"].all()


def test_semdedup_compares_with_earlier_items_even_removed_ones():
    # x1 is 10 deg from x0, x2 is 10 deg from x1 but 20 deg from x0.
    x = _vec(0, 10, 20)
    uids = [_u(1), _u(2), _u(3)]
    eps = 1 - np.cos(np.radians(15))  # threshold between cos(10) and cos(20)
    r = semdedup_cluster(x, uids, [0.3, 0.2, 0.1], eps=eps)
    # x2 is removed because of x1, although x1 itself was removed (reference semantics)
    assert r["kept"].tolist() == [True, False, False]
    assert r["nearest"].tolist() == [None, _u(1), _u(2)]


def test_semdedup_ties_go_by_uid_and_first_is_kept():
    x = _vec(0, 0, 0)
    uids = [_u(9), _u(3), _u(5)]
    r = semdedup_cluster(x, uids, [0.1, 0.1, 0.1], eps=0.01)
    assert r["kept"].tolist() == [False, True, False]  # smallest uid first
    assert r["nearest"].tolist() == [_u(3), None, _u(3)]
    assert semdedup_cluster(x[:1], uids[:1], [0.1], eps=0.5)["kept"].tolist() == [True]


def test_cluster_order_modes():
    uids = [_u(i) for i in range(6)]
    d = [0.1, 0.5, 0.3, 0.5, 0.2, 0.0]
    assert cluster_order(uids, d, "hard").tolist() == [1, 3, 2, 4, 0, 5]
    assert cluster_order(uids, d, "easy").tolist() == [5, 0, 4, 2, 1, 3]
    r1 = cluster_order(uids, d, "random", seed=1, cluster_id=7)
    # seeded: same seed and cluster give the same permutation whatever the input order
    perm = [3, 0, 5, 1, 4, 2]
    r2 = cluster_order([uids[i] for i in perm], [d[i] for i in perm], "random", seed=1, cluster_id=7)
    assert [uids[i] for i in r1] == [uids[perm[i]] for i in r2]
    assert sorted(r1.tolist()) == list(range(6))


def test_blocked_max_matches_full_matrix():
    rng = np.random.default_rng(0)
    x = normalize_rows(rng.standard_normal((300, 16)))
    full = x @ x.T
    full[np.tril_indices(300)] = -np.inf
    ref_max = full.max(axis=0)
    m, a = max_earlier_similarity(x, block_cells=300 * 7)  # blocks of 7 rows
    np.testing.assert_allclose(m[1:], ref_max[1:], atol=1e-6)
    assert np.isneginf(m[0]) and a[0] == -1
    assert np.array_equal(a[1:], full.argmax(axis=0)[1:])


def test_torch_path_matches_numpy_path():
    # the GPU code path (torch) run on the CPU: same maxima, same argmax, same decisions
    rng = np.random.default_rng(2)
    x = normalize_rows(rng.standard_normal((257, 12)))
    x[100] = x[7]
    m1, a1 = max_earlier_similarity(x, block_cells=257 * 20, device="cpu")
    m2, a2 = max_earlier_similarity(x, block_cells=257 * 20, device="torch:cpu")
    np.testing.assert_allclose(m1, m2, atol=1e-12)
    assert np.array_equal(a1, a2) and a2[100] == 7


def _clustered(n=3000, d=32, k=12, dup_frac=0.3, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)) * 3
    lab = rng.integers(0, k, n)
    x = centers[lab] + rng.standard_normal((n, d))
    ndup = int(n * dup_frac)
    src = rng.integers(0, n, ndup)
    x[rng.choice(n, ndup, replace=False)] = x[src] + rng.standard_normal((ndup, d)) * 0.05
    return normalize_rows(x)


@pytest.mark.parametrize("eps", [0.002, 0.01, 0.05])
def test_semdedup_equals_numpy_reference_on_clustered_vectors(eps):
    x = _clustered()
    uids = np.array([_u(i * 7919 % 100003) for i in range(len(x))], dtype=object)
    c = train_kmeans(x, 12, spherical=True, seed=0)
    cid, cos = assign(x, c, metric="ip")
    dist = (1.0 - cos).astype(np.float32)
    removed = 0
    for k in range(12):
        m = cid == k
        if not m.any():
            continue
        ours = semdedup_cluster(x[m], uids[m], dist[m], eps=eps, block_cells=5000)["kept"]
        ref = semdedup_reference(x[m], uids[m], dist[m], eps=eps)
        assert np.array_equal(ours, ref), f"cluster {k}"
        removed += int((~ours).sum())
    assert removed > 0


# ---------------------------------------------------------------- DBP
def test_dbp_quotas_by_hand():
    # target p*N' = [54, 3, 3]; m = int(60/3*0.5) = 10 -> lb = [1, 10, 10]; ub = [2, 100, 100]
    x, q = solve_quotas(np.array([0.9, 0.05, 0.05]), np.array([2, 100, 100]), 60)
    np.testing.assert_allclose(x, [2, 29, 29], atol=1e-6)
    assert q.tolist() == [2, 29, 29]
    x, q = solve_quotas(np.array([0.9, 0.05, 0.05]), np.array([2, 100, 100]), 59)
    np.testing.assert_allclose(x, [2, 28.5, 28.5], atol=1e-6)
    assert q.tolist() == [2, 29, 28]  # remainder tie goes to the lower cluster id
    # uniform probabilities share evenly
    assert solve_quotas(np.full(3, 1 / 3), np.array([10, 10, 10]), 15)[1].tolist() == [5, 5, 5]


def test_dbp_quotas_properties_random():
    rng = np.random.default_rng(1)
    for trial in range(200):
        k = int(rng.integers(1, 40))
        sizes = rng.integers(1, 200, k)
        if trial % 5 == 0:
            sizes[rng.integers(0, k)] = 1
        n_keep = int(rng.integers(0, sizes.sum() + 1))
        p = rng.dirichlet(np.ones(k) * 0.3)
        br = float(rng.choice([0.0, 0.5, 1.0]))
        x, q = solve_quotas(p, sizes, n_keep, balance_ratio=br)
        m = int(n_keep / k * br)
        lb = np.minimum(m, sizes - 1)
        if lb.sum() <= n_keep:
            assert (q >= lb).all()
        assert q.sum() == n_keep and (q <= sizes).all() and (q >= 0).all()
        assert np.abs(q - x).max() < 1.0 + 1e-6
        np.testing.assert_allclose(x.sum(), n_keep, atol=1e-5)
        # KKT: interior coordinates share one shift lambda
        inner = (x > lb + 1e-6) & (x < sizes - 1e-6)
        if inner.sum() > 1:
            lam = p[inner] * n_keep - x[inner]
            np.testing.assert_allclose(lam, lam[0], atol=1e-5)


def test_dbp_plan_prefers_complex_clusters_and_d_inter():
    c = _vec(0, 10, 90, 180)
    d_inter = centroid_d_inter(c, n_neighbors=2)
    # centroid 0: nearest others at 10 and 90 deg -> mean(1-cos10, 1-cos90)
    np.testing.assert_allclose(d_inter[0], np.mean([1 - np.cos(np.radians(10)), 1.0]), atol=1e-9)
    sizes = np.array([100, 100, 100, 100])
    plan = dbp_plan(sizes, np.array([0.1, 0.1, 0.4, 0.4]), d_inter, n_keep=200)
    assert plan["quota"].sum() == 200
    assert plan["quota"][2] > plan["quota"][0]
    np.testing.assert_allclose(plan["probability"].sum(), 1.0)
    # one lone centroid: d_inter NaN, everything goes to that cluster
    one = dbp_plan(np.array([10]), np.array([0.2]), centroid_d_inter(c[:1]), n_keep=4)
    assert one["quota"].tolist() == [4]


def test_select_in_cluster_and_ssp():
    uids = [_u(i) for i in range(5)]
    d = [0.1, 0.4, 0.3, 0.2, 0.4]
    assert np.flatnonzero(select_in_cluster(uids, d, 2, "hard")).tolist() == [1, 4]
    assert np.flatnonzero(select_in_cluster(uids, d, 2, "easy")).tolist() == [0, 3]
    r = select_in_cluster(uids, d, 3, "random", seed=5, cluster_id=2)
    assert r.sum() == 3 and np.array_equal(r, select_in_cluster(uids, d, 3, "random", seed=5, cluster_id=2))
    q = ssp_quotas(np.array([10, 20, 5]), 17)
    assert q.sum() == 17 and q.tolist() == [5, 10, 2]
    assert round_to_total(np.array([0.5, 0.5]), np.zeros(2), np.ones(2), 1).tolist() == [1, 0]
