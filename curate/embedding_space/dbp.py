"""Density-based pruning (Abbas et al. 2024, "Effective pruning of web-scale datasets based on
complexity of concept clusters") and self-supervised-prototype pruning (Sorscher et al. 2022).

DBP gives each cluster a quota proportional to its complexity: d_intra (mean cosine distance
of members to their centroid) times d_inter (mean cosine distance of the centroid to its 20
nearest other centroids), turned into a distribution by softmax(C / T). The quotas solve

    min 0.5 ||x||^2 - (p N')^T x   s.t.  sum x = N',  lb_j <= x_j <= n_j,
    lb_j = min(m, n_j - 1),  m = int(N' / k * balance_ratio),

whose exact solution is x_j = clip(p_j N' - lambda, lb_j, n_j) with lambda found by
bisection; the x_j are then rounded (largest remainders) so they sum to exactly N'.
"""

from __future__ import annotations

import numpy as np

from curate.embedding_space.semdedup import cluster_order


def centroid_d_inter(centroids: np.ndarray, n_neighbors: int = 20) -> np.ndarray:
    """Mean cosine distance of each centroid to its ``n_neighbors`` nearest other centroids.

    With fewer than ``n_neighbors`` other centroids all of them are used; a lone centroid
    gets NaN (replaced later by the mean, as the reference does).
    """
    c = np.asarray(centroids, dtype=np.float64)
    c = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    k = c.shape[0]
    out = np.full(k, np.nan)
    if k < 2:
        return out
    nn = min(n_neighbors, k - 1)
    step = max(1, (1 << 20) // k)  # blocks of ~1M distances (8 MB): the driver's peak stays small at any k
    for s in range(0, k, step):
        d = 1.0 - c[s:s + step] @ c.T
        d[np.arange(d.shape[0]), np.arange(s, s + d.shape[0])] = np.inf  # not itself
        part = np.partition(d, nn - 1, axis=1)[:, :nn]
        out[s:s + step] = part.mean(axis=1)
    return out


def softmax(z: np.ndarray) -> np.ndarray:
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max())
    return e / e.sum()


def solve_quotas(p: np.ndarray, sizes: np.ndarray, n_keep: int, k: int | None = None,
                 balance_ratio: float = 0.5, tol: float = 1e-9) -> tuple[np.ndarray, np.ndarray]:
    """Exact QP solution and its integer rounding: ``(x_continuous, quotas int64)``.

    ``k`` is the number of clusters in ``m = int(N'/k * balance_ratio)`` (default: len(p)).
    Clusters of size 0 get 0.
    """
    p = np.asarray(p, dtype=np.float64)
    n = np.asarray(sizes, dtype=np.int64)
    k = len(p) if k is None else k
    total = int(n.sum())
    if not 0 <= n_keep <= total:
        raise ValueError(f"cannot keep {n_keep} of {total} samples")
    if not 0.0 <= balance_ratio <= 1.0:
        raise ValueError(f"balance_ratio must be in [0, 1], got {balance_ratio}")
    m = int(n_keep / max(k, 1) * balance_ratio)
    lb = np.where(n > 0, np.minimum(m, n - 1), 0).astype(np.float64)
    ub = n.astype(np.float64)
    if lb.sum() > n_keep:  # only when balance_ratio forces more than N' (tiny N'); relax bounds
        lb = np.zeros_like(lb)
    target = p * n_keep

    def total_at(lam):
        return np.clip(target - lam, lb, ub).sum()

    # sum(clip(target - lam)) decreases in lam; bracket the root then bisect.
    lo, hi = float(target.min() - ub.max() - 1.0), float(target.max() + 1.0)
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if total_at(mid) > n_keep:
            lo = mid
        else:
            hi = mid
        if hi - lo <= tol * max(1.0, abs(mid)):
            break
    x = np.clip(target - 0.5 * (lo + hi), lb, ub)
    return x, round_to_total(x, lb, ub, n_keep)


def round_to_total(x: np.ndarray, lb: np.ndarray, ub: np.ndarray, total: int) -> np.ndarray:
    """Integers within [lb, ub] closest to ``x`` that sum to ``total`` (largest remainders,
    ties by index)."""
    base = np.clip(np.floor(x + 1e-9), lb, ub).astype(np.int64)
    frac = x - base
    short = int(total - base.sum())
    idx = np.arange(len(x))
    if short > 0:
        room = base < ub
        cand = idx[room][np.lexsort((idx[room], -frac[room]))]
        base[cand[:short]] += 1
        short -= len(cand[:short])
    elif short < 0:
        room = base > lb
        cand = idx[room][np.lexsort((idx[room], frac[room]))]
        base[cand[:-short]] -= 1
        short += len(cand[:-short])
    if short != 0:
        raise ValueError(f"cannot round quotas to total {total} within bounds")
    return base


def dbp_plan(sizes: np.ndarray, d_intra: np.ndarray, d_inter: np.ndarray, n_keep: int,
             temperature: float = 0.5, balance_ratio: float = 0.5) -> dict:
    """Per-cluster complexity, probability and integer quota (sums to ``n_keep``)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    c = np.asarray(d_intra, dtype=np.float64) * np.asarray(d_inter, dtype=np.float64)
    nonempty = sizes > 0
    valid = nonempty & np.isfinite(c)
    fill = float(np.mean(c[valid])) if valid.any() else 1.0
    c = np.where(np.isfinite(c), c, fill)
    p = np.zeros(len(sizes))
    if nonempty.any():
        p[nonempty] = softmax(c[nonempty] / temperature)
    x, q = solve_quotas(p, sizes, n_keep, k=len(sizes), balance_ratio=balance_ratio)
    return {"complexity": c, "probability": p, "quota_exact": x, "quota": q}


def ssp_quotas(sizes: np.ndarray, n_keep: int) -> np.ndarray:
    """Self-supervised-prototype pruning: the same fraction of every cluster, rounded by
    largest remainders so the total is exactly ``n_keep``."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    x = sizes * (n_keep / total) if total else sizes.astype(np.float64)
    return round_to_total(x, np.zeros(len(sizes)), sizes.astype(np.float64), n_keep)


def select_in_cluster(uids, distances, quota: int, keep: str = "hard", seed: int = 0,
                      cluster_id: int = 0) -> np.ndarray:
    """Boolean mask (aligned with inputs) of the ``quota`` members to keep: the farthest from
    the centroid (hard), the nearest (easy), or a seeded random choice."""
    order = cluster_order(uids, distances, keep=keep, seed=seed, cluster_id=cluster_id)
    mask = np.zeros(len(order), dtype=bool)
    mask[order[:int(quota)]] = True
    return mask


def prune_group_decisions(group, quota: int, stage: str, reason: str, keep: str = "hard", seed: int = 0):
    """Decisions of one cluster (an Arrow table with ``cluster_id, uid, distance``): its ``quota``
    members chosen by ``select_in_cluster`` kept, the others removed with ``reason``; value =
    the distance, detail = ``cluster=<id>``. Arrow columns throughout (no Python object per row)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from curate.decisions import decisions_table

    cid = int(group.column("cluster_id")[0].as_py())
    uids = group.column("uid").combine_chunks()
    dist = group.column("distance").to_numpy()
    mask = pa.array(select_in_cluster(uids, dist, quota, keep=keep, seed=seed, cluster_id=cid))
    return decisions_table(uids, stage, mask, pc.if_else(mask, "kept", reason), pa.array(dist.astype(np.float64)),
                           pa.array([f"cluster={cid}"] * len(uids), pa.string()))


def n_keep_from_fraction(total: int, keep_fraction: float) -> int:
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep fraction must be in [0, 1], got {keep_fraction}")
    return int(total * keep_fraction)
