"""Balancing: p_e, deterministic draws, kept counts near min(count, t), P(keep) for several entries."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from curate.metaclip.balance import (REASON_BALANCED_OUT, REASON_KEPT, REASON_NO_MATCH, balance_matches,
                                     decision_reasons, entry_probabilities, scaled_t, uid_words, uniform_draws)
from curate.uid import derive_uid


def uids(n, tag="u"):
    return pa.array([derive_uid(f"http://x/{tag}/{i}", "t") for i in range(n)])


def test_entry_probabilities():
    p = entry_probabilities(np.array([0, 1, 19_999, 20_000, 40_000, 10**9]), 20_000)
    assert p.tolist() == [1.0, 1.0, 1.0, 1.0, 0.5, 20_000 / 10**9]
    with pytest.raises(ValueError):
        entry_probabilities(np.array([1]), 0)
    assert scaled_t(20_000, 1_000_000, None) == 20_000
    assert scaled_t(20_000, 1_000_000, 400_000_000) == 50


def test_uid_words_match_datacomp_split():
    u = ["0123456789abcdef" + "fedcba9876543210", "f" * 32]
    hi, lo = uid_words(u)
    assert hi.tolist() == [0x0123456789ABCDEF, 2**64 - 1] and lo.tolist() == [0xFEDCBA9876543210, 2**64 - 1]


def test_draws_are_a_function_of_seed_uid_entry_and_uniform():
    hi, lo = uid_words(uids(50_000))
    e = np.arange(50_000) % 7
    a = uniform_draws(3, hi, lo, e)
    assert np.array_equal(a, uniform_draws(3, hi, lo, e))
    # Order and batch boundaries do not matter: each draw depends only on its own triple.
    perm = np.random.default_rng(0).permutation(50_000)
    assert np.array_equal(a[perm], uniform_draws(3, hi[perm], lo[perm], e[perm]))
    assert np.array_equal(a[10:20], uniform_draws(3, hi[10:20], lo[10:20], e[10:20]))
    # Seed and entry id change the draws.
    assert (a != uniform_draws(4, hi, lo, e)).mean() > 0.999
    assert (a != uniform_draws(3, hi, lo, e + 1)).mean() > 0.999
    assert 0.0 <= a.min() and a.max() < 1.0
    # Uniform: 20 equal bins, chi-square with 19 dof far below its 0.9999 quantile (~50).
    observed = np.bincount((a * 20).astype(int), minlength=20)
    chi2 = ((observed - 2500) ** 2 / 2500).sum()
    assert chi2 < 50
    # Draws of the same uid for different entries are uncorrelated.
    b = uniform_draws(3, hi, lo, e + 100)
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.03


def test_each_entry_keeps_about_min_count_t():
    t = 300
    counts = [50, 300, 301, 1_000, 5_000, 20_000]
    rows = [[k] for k, c in enumerate(counts) for _ in range(c)]  # each text matches one entry
    ids = pa.array(rows, pa.list_(pa.int32()))
    probs = entry_probabilities(np.array(counts), t)
    r = balance_matches(uids(len(rows)), ids, probs, seed=0)
    for k, c in enumerate(counts):
        p = probs[k]
        kept = r.kept_entry_counts[k]
        assert kept == r.kept[[row[0] == k for row in rows]].sum()
        if c < t:
            assert kept == c  # the tail keeps everything
        else:
            sd = math.sqrt(c * p * (1 - p))  # binomial(c, t/c): mean t
            assert abs(kept - min(c, t)) <= 5 * sd + 1e-9, (c, kept, sd)
    assert set(decision_reasons(r)) <= {REASON_KEPT, REASON_BALANCED_OUT}


def test_keep_probability_with_several_entries():
    # Texts matching two head entries: P(keep) = 1 - (1 - p1)(1 - p2).
    n = 40_000
    counts = np.array([100_000, 400_000, 10])
    probs = entry_probabilities(counts, 20_000)  # 0.2, 0.05, 1
    ids = pa.array([[0, 1]] * n + [[1]] * n + [[1, 2]] * 5 + [[]] * 3, pa.list_(pa.int32()))
    r = balance_matches(uids(len(ids)), ids, probs, seed=7)
    expect = 1 - (1 - 0.2) * (1 - 0.05)
    assert np.allclose(r.p_keep[:n], expect) and np.allclose(r.p_keep[n:2 * n], 0.05)
    for block, p in ((slice(0, n), expect), (slice(n, 2 * n), 0.05)):
        sd = math.sqrt(n * p * (1 - p))
        assert abs(r.kept[block].sum() - n * p) <= 5 * sd
    assert r.kept[2 * n:2 * n + 5].all()  # a tail entry keeps its texts whatever else they match
    assert (r.first_entry[2 * n:2 * n + 5] >= 1).all()
    assert not r.kept[-3:].any() and r.p_keep[-3:].tolist() == [0.0] * 3
    reasons = decision_reasons(r)
    assert reasons[-3:].tolist() == [REASON_NO_MATCH] * 3
    assert set(reasons[:2 * n]) == {REASON_KEPT, REASON_BALANCED_OUT}
    # The kept entry named in the decision is one whose draw passed.
    kept_rows = np.flatnonzero(r.kept[:n])
    assert set(r.first_entry[kept_rows].tolist()) == {0, 1}


def test_same_rows_same_result_in_any_batching():
    ids = pa.array([[i % 5, 5 + i % 3] for i in range(9_000)], pa.list_(pa.int32()))
    u = uids(9_000)
    probs = entry_probabilities(np.array([9000, 5000, 3000, 10, 1, 3000, 3000, 3000]), 1_000)
    whole = balance_matches(u, ids, probs, seed=1).kept
    parts = np.concatenate([balance_matches(u.slice(a, 1000), ids.slice(a, 1000), probs, seed=1).kept
                            for a in range(0, 9_000, 1000)])
    assert np.array_equal(whole, parts)
    other = balance_matches(u, ids, probs, seed=2).kept
    assert not np.array_equal(whole, other)


def test_entry_id_outside_metadata_is_an_error():
    with pytest.raises(ValueError, match="outside the metadata"):
        balance_matches(uids(1), pa.array([[3]], pa.list_(pa.int32())), np.ones(2), seed=0)
