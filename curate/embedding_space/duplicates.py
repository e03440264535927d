"""Exact duplicates (same image bytes: sha256 from the downloads table) and near duplicates
(image-embedding cosine similarity above a threshold, found with a FAISS search).

Both keep exactly one sample per duplicate group, chosen deterministically (by default the
smallest uid; for near duplicates optionally the highest CLIP score, ties by uid), and point
every removed sample at the uid that was kept.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.decisions import decisions_table

EXACT_REASON = "exact_duplicate"
NEAR_REASON = "near_duplicate"


def exact_duplicate_decisions(uids, sha256, stage: str = "exact_dedup") -> pa.Table:
    """One decision per uid: within each sha256 group the smallest uid is kept.

    ``value`` is the group size; ``detail`` the kept uid (for kept rows too, so a group is
    one SQL ``GROUP BY detail`` away).
    """
    t = pa.table({"uid": pa.array(uids, pa.string()) if not isinstance(uids, (pa.Array, pa.ChunkedArray)) else uids,
                  "sha256": pa.array(sha256, pa.string()) if not isinstance(sha256, (pa.Array, pa.ChunkedArray)) else sha256})
    if t.num_rows == 0:
        return decisions_table([], stage, [], [])
    t = t.sort_by([("sha256", "ascending"), ("uid", "ascending")])
    h = np.asarray(t.column("sha256").to_pylist(), dtype=object)
    u = np.asarray(t.column("uid").to_pylist(), dtype=object)
    starts = np.ones(len(h), dtype=bool)
    starts[1:] = h[1:] != h[:-1]
    gid = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    sizes = np.diff(np.append(first, len(h)))
    kept = starts
    keeper = u[first][gid]
    reason = np.where(kept, "kept", EXACT_REASON)
    return decisions_table(u.tolist(), stage, kept.tolist(), reason.tolist(),
                           sizes[gid].astype(np.float64).tolist(), keeper.tolist())


class _UnionFind:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find_all(self) -> np.ndarray:
        p = self.parent
        while True:
            q = p[p]
            if np.array_equal(q, p):
                return p
            p = q

    def union_pairs(self, a: np.ndarray, b: np.ndarray) -> None:
        # Vectorised min-label propagation: repeat hooking roots to the smaller root.
        while len(a):
            ra, rb = self.find_roots(a), self.find_roots(b)
            diff = ra != rb
            if not diff.any():
                return
            ra, rb = ra[diff], rb[diff]
            lo, hi = np.minimum(ra, rb), np.maximum(ra, rb)
            # several hi may claim different lo; take the smallest, loop resolves the rest
            order = np.lexsort((lo, hi))
            hi_s, lo_s = hi[order], lo[order]
            firsts = np.ones(len(hi_s), dtype=bool)
            firsts[1:] = hi_s[1:] != hi_s[:-1]
            self.parent[hi_s[firsts]] = lo_s[firsts]
            a, b = a[diff], b[diff]

    def find_roots(self, idx: np.ndarray) -> np.ndarray:
        r = self.parent[idx]
        while True:
            nr = self.parent[r]
            if np.array_equal(nr, r):
                return r
            r = nr


def connected_components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Component label (its smallest member index) of each of ``n`` nodes given edges a-b."""
    uf = _UnionFind(n)
    uf.union_pairs(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
    return uf.find_all()


def similar_pairs(x: np.ndarray, threshold: float, batch_size: int = 16384, index=None,
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs (i < j) of normalised rows with cosine similarity >= ``threshold``.

    Uses FAISS range search over an inner-product index of ``x`` (exact IndexFlatIP unless
    an ``index`` over the same rows is passed, e.g. an IVF index for very large inputs).
    """
    import faiss

    x = np.ascontiguousarray(x, dtype=np.float32)
    n, d = x.shape
    if index is None:
        index = faiss.IndexFlatIP(d)
        index.add(x)
    A, B, S = [], [], []
    for s in range(0, n, batch_size):
        lims, D, I = index.range_search(x[s:s + batch_size], float(threshold))
        rows = np.repeat(np.arange(s, min(n, s + batch_size)), np.diff(lims).astype(np.int64))
        keep = I > rows  # each pair once, never a row with itself
        A.append(rows[keep]); B.append(I[keep]); S.append(D[keep])
    if not A:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(A), np.concatenate(B).astype(np.int64), np.concatenate(S)


def near_duplicate_decisions(uids, x: np.ndarray, threshold: float, scores=None,
                             stage: str = "near_dedup", index=None) -> tuple[pa.Table, dict]:
    """Groups of rows linked by cosine >= ``threshold`` (connected components); one kept per
    group: highest ``scores`` when given (e.g. CLIP score), ties and default by smallest uid.

    ``value`` is the removed row's highest similarity to any group member; ``detail`` the
    kept uid. Returns (decisions, stats).
    """
    uids = np.asarray(uids, dtype=object)
    n = len(uids)
    a, b, s = similar_pairs(x, threshold, index=index)
    labels = connected_components(n, a, b)
    best_sim = np.full(n, np.nan)
    if len(s):
        both = np.concatenate([a, b]); sims = np.concatenate([s, s]).astype(np.float64)
        tmp = np.full(n, -np.inf)
        np.maximum.at(tmp, both, sims)
        best_sim = np.where(np.isfinite(tmp), tmp, np.nan)
    # choose the keeper of each component: sort by (label, -score, uid), first per label
    uid_str = uids.astype(str)
    sc = np.zeros(n) if scores is None else -np.asarray(scores, dtype=np.float64)
    order = np.lexsort((uid_str, sc, labels))
    lab_sorted = labels[order]
    first = np.ones(n, dtype=bool)
    first[1:] = lab_sorted[1:] != lab_sorted[:-1]
    keeper_of_label = {}
    for i in order[first]:
        keeper_of_label[labels[i]] = i
    keeper = np.array([keeper_of_label[l] for l in labels], dtype=np.int64) if n else np.zeros(0, np.int64)
    kept = keeper == np.arange(n)
    group_sizes = np.bincount(labels, minlength=n)[labels] if n else np.zeros(0, np.int64)
    reason = np.where(kept, "kept", NEAR_REASON)
    detail = [None if (k and group_sizes[i] == 1) else uids[keeper[i]] for i, k in enumerate(kept)]
    value = [None if np.isnan(v) else float(v) for v in best_sim]
    t = decisions_table(uids.tolist(), stage, kept.tolist(), reason.tolist(), value, detail)
    stats = {"pairs": int(len(a)), "groups_with_duplicates": int(len(np.unique(labels[group_sizes > 1]))),
             "removed": int((~kept).sum())}
    return t, stats
