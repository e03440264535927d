import numpy as np
import pytest

from curate.embedding_space.kmeans import assign, l2_normalize, train_kmeans


def _blobs(k=4, per=200, d=16, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((k, d)).astype(np.float32) * 10
    x = np.concatenate([c + rng.standard_normal((per, d)).astype(np.float32) for c in centers])
    labels = np.repeat(np.arange(k), per)
    return x, labels, centers


def test_kmeans_recovers_blobs_and_is_deterministic():
    x, labels, _ = _blobs()
    c1 = train_kmeans(x, 4, seed=3)
    c2 = train_kmeans(x, 4, seed=3)
    assert np.array_equal(c1, c2)
    ids, d2 = assign(x, c1, batch_size=97)
    # each true blob maps onto exactly one cluster, and clusters are distinct
    mapping = {int(lbl): set(ids[labels == lbl].tolist()) for lbl in range(4)}
    assert all(len(v) == 1 for v in mapping.values())
    assert len({next(iter(v)) for v in mapping.values()}) == 4
    brute = ((x[:, None, :] - c1[None]) ** 2).sum(-1)
    assert np.array_equal(ids, brute.argmin(1))
    np.testing.assert_allclose(d2, brute.min(1), rtol=1e-4, atol=1e-3)


def test_spherical_centroids_are_unit_and_ip_scores_are_cosines():
    x, _, _ = _blobs(seed=1)
    c = train_kmeans(x, 4, spherical=True)
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-5)
    xn = l2_normalize(x)
    ids, cos = assign(xn.astype(np.float16), c, metric="ip")
    np.testing.assert_allclose(cos, (xn.astype(np.float16).astype(np.float32) @ c.T).max(1), atol=1e-4)
    assert np.array_equal(ids, (xn.astype(np.float16).astype(np.float32) @ c.T).argmax(1))


def test_bad_inputs():
    with pytest.raises(ValueError, match="at least k"):
        train_kmeans(np.zeros((3, 4), np.float32), 5)
    with pytest.raises(ValueError, match="metric"):
        assign(np.zeros((3, 4), np.float32), np.zeros((2, 4), np.float32), metric="cos")
