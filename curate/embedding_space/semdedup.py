"""SemDeDup (Abbas et al. 2023): remove semantic near-duplicates inside each k-means cluster.

Semantics (as in facebookresearch/SemDeDup): within a cluster, members are ordered by their
cosine distance to the centroid, farthest first ("keep hard"), ties by uid; item j is
removed when its largest cosine similarity to any earlier item (kept or not) exceeds
``1 - eps``; the first item is always kept. The pairwise similarities are computed as
blocked matrix products (torch on GPU when there is one, else NumPy/BLAS), never as Python
loops over pairs, so a cluster of any size fits in bounded memory.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pyarrow as pa

KEEP_CHOICES = ("hard", "easy", "random")
REASON = "semantic_duplicate"


def cluster_order(uids: np.ndarray | list | pa.Array, distances: np.ndarray, keep: str = "hard", seed: int = 0,
                  cluster_id: int = 0) -> np.ndarray:
    """Processing order of a cluster's members (indices into the inputs).

    hard: farthest from the centroid first; easy: nearest first; random: a permutation
    seeded by (seed, cluster_id). Ties (and the random permutation's base order) go by uid,
    so the order never depends on how rows were partitioned. ``uids`` as an Arrow string
    array is sorted by Arrow (no Python string per row); the order is the same (UTF-8 byte
    order is code point order, both sorts are stable).
    """
    d = np.asarray(distances, dtype=np.float64)
    if keep not in KEEP_CHOICES:
        raise ValueError(f"keep must be one of {KEEP_CHOICES}, got {keep!r}")
    if isinstance(uids, (pa.Array, pa.ChunkedArray)):
        import pyarrow.compute as pc

        if keep == "random":
            base = pc.sort_indices(uids).to_numpy()
        else:
            t = pa.table({"d": pa.array(d), "u": uids})
            return pc.sort_indices(t, [("d", "descending" if keep == "hard" else "ascending"),
                                       ("u", "ascending")]).to_numpy().astype(np.int64)
    else:
        uids = np.asarray(uids, dtype=object).astype(str)
        if keep == "hard":
            return np.lexsort((uids, -d))
        if keep == "easy":
            return np.lexsort((uids, d))
        base = np.argsort(uids, kind="stable")
    rng = np.random.default_rng([int(seed), int(cluster_id)])
    return base[rng.permutation(len(base))]


# rows per block: small enough that the blocks skip most of the upper triangle (about 40% of
# the products and of the masking for clusters of ~1,500; bench/semdedup_kernel.py), large
# enough for BLAS to run at full speed
BLOCK_ROWS = 256


def _block_rows(n: int, max_cells: int) -> int:
    return max(1, min(n, BLOCK_ROWS, max_cells // max(n, 1)))


def max_earlier_similarity(x: np.ndarray, block_cells: int = 1 << 24, device: str = "auto",
                           ) -> tuple[np.ndarray, np.ndarray]:
    """For each row j of ``x`` (ordered, normalised): the max similarity to rows i < j and its i.

    Row 0 gets (-inf, -1). The maximum is located with float32 matrix products and its value
    recomputed in float64. Rows go in blocks of B (at most ``BLOCK_ROWS``, and a B x j block
    under ``block_cells`` entries); block [s, e) is multiplied with rows [0, e) only, so the
    upper triangle beyond the block is never computed, and only its own B x B diagonal part is
    masked.
    """
    n = x.shape[0]
    best = np.full(n, -np.inf, dtype=np.float64)
    arg = np.full(n, -1, dtype=np.int64)
    if n < 2:
        return best, arg
    use_torch = _torch_device(device)
    B = _block_rows(n, block_cells)
    # the diagonal block's cells on or after the diagonal: only earlier items count
    upper = np.arange(B)[None, :] >= np.arange(B)[:, None]
    if use_torch is not None:
        import torch

        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(use_torch)
        upper_t = torch.from_numpy(upper).to(use_torch)
    for s in range(0, n, B):
        e = min(n, s + B)
        if e == 1:
            continue
        if use_torch is not None:
            sims = xt[s:e] @ xt[:e].T
            sims[:, s:e].masked_fill_(upper_t[:e - s, :e - s], float("-inf"))
            m, a = sims.max(dim=1)
            m, a = m.cpu().numpy(), a.cpu().numpy()
        else:
            sims = x[s:e] @ x[:e].T
            sims[:, s:e][upper[:e - s, :e - s]] = -np.inf
            a = sims.argmax(axis=1)
            m = sims[np.arange(e - s), a]
        best[s:e] = m
        arg[s:e] = np.where(np.isfinite(m), a, -1)
    # BLAS float32 results can differ in the last bit with thread count or memory alignment
    # (Spark worker vs driver); recompute the chosen pairs exactly so decisions and values
    # never depend on where the cluster was processed.
    has = arg >= 0
    x64 = np.asarray(x, dtype=np.float64)
    best[has] = np.einsum("ij,ij->i", x64[has], x64[arg[has]])
    return best, arg


def _torch_device(device: str):
    """torch device for the products, or None for NumPy. ``auto``: CUDA when available, else
    NumPy; ``cpu``/``numpy``: NumPy; ``torch:<dev>`` or a torch device name: torch there."""
    if device == "cpu" or device == "numpy":
        return None
    if device.startswith("torch:"):
        device = device[len("torch:"):]
    if device == "auto" and "torch" not in sys.modules and not os.path.exists("/dev/nvidiactl"):
        return None  # no GPU driver: skip importing torch (seconds) just to learn that
    try:
        import torch
    except ImportError:
        return None
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else None
    return device


def semdedup_cluster(x: np.ndarray, uids, distances, eps: float, keep: str = "hard", seed: int = 0,
                     cluster_id: int = 0, block_cells: int = 1 << 24, device: str = "auto") -> dict:
    """SemDeDup of one cluster. ``x``: (n, d) normalised float32 rows aligned with ``uids``.

    Returns arrays aligned with the inputs: ``kept`` (bool), ``max_sim`` (float32, NaN for
    the first item), ``nearest`` (uid of the most similar earlier item, None for the first;
    an Arrow array when ``uids`` is one)
    and ``rank`` (position in the processing order).
    """
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be in [0, 1], got {eps}")
    arrow = isinstance(uids, (pa.Array, pa.ChunkedArray))
    if not arrow:
        uids = np.asarray(uids, dtype=object)
    n = len(uids)
    order = cluster_order(uids, distances, keep=keep, seed=seed, cluster_id=cluster_id)
    xs = np.ascontiguousarray(x[order], dtype=np.float32)
    best, arg = max_earlier_similarity(xs, block_cells=block_cells, device=device)
    removed_sorted = best > (1.0 - eps)
    kept = np.empty(n, dtype=bool)
    kept[order] = ~removed_sorted
    max_sim = np.full(n, np.nan, dtype=np.float32)
    max_sim[order] = np.where(np.isfinite(best), best, np.nan)
    if arrow:  # an Arrow array of uids gives an Arrow array back (nulls for none)
        near = np.full(n, -1, dtype=np.int64)
        near[order] = np.where(arg >= 0, order[np.maximum(arg, 0)], -1)
        nearest = uids.take(pa.array(near, mask=near < 0))
    else:
        nearest = np.empty(n, dtype=object)
        sorted_uids = uids[order]
        nearest[order] = [sorted_uids[a] if a >= 0 else None for a in arg]
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return {"kept": kept, "max_sim": max_sim, "nearest": nearest, "rank": rank}


def semdedup_reference(x: np.ndarray, uids, distances, eps: float) -> np.ndarray:
    """Direct transcription of the reference (full similarity matrix, upper triangle, max
    over earlier rows), for tests and the benchmark. Returns ``kept`` aligned with inputs."""
    uids = np.asarray(uids, dtype=object).astype(str)
    order = np.lexsort((uids, -np.asarray(distances, dtype=np.float64)))
    xs = np.asarray(x, dtype=np.float32)[order]
    sim = xs @ xs.T
    np.fill_diagonal(sim, 0.0)
    m = np.triu(sim, k=1).max(axis=0) if len(xs) > 1 else np.zeros(len(xs), np.float32)
    kept = np.empty(len(xs), dtype=bool)
    kept[order] = ~(m > 1 - eps)
    return kept


def semdedup_group_table(group: pa.Table, eps: float, dim: int, keep: str = "hard", seed: int = 0,
                         stage: str = "semdedup", block_cells: int = 1 << 24, device: str = "auto",
                         ) -> pa.Table:
    """Decisions for one cluster given as an Arrow table with columns
    ``cluster_id, uid, distance, embedding`` (binary float16 rows)."""
    from curate.decisions import decisions_table
    from curate.embedding_space.vectors import binary_to_matrix, normalize_rows

    if group.num_rows == 0:
        return decisions_table([], stage, [], [])
    import pyarrow.compute as pc

    cid = int(group.column("cluster_id")[0].as_py())
    uids = group.column("uid").combine_chunks()
    dist = group.column("distance").to_numpy()
    x = normalize_rows(binary_to_matrix(group.column("embedding"), dim))
    r = semdedup_cluster(x, uids, dist, eps, keep=keep, seed=seed, cluster_id=cid,
                         block_cells=block_cells, device=device)
    kept = pa.array(r["kept"])
    value = pa.array(r["max_sim"].astype(np.float64), mask=np.isnan(r["max_sim"]))
    return decisions_table(uids, stage, kept, pc.if_else(kept, "kept", REASON), value, r["nearest"])
