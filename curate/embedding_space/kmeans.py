"""FAISS k-means training and nearest-centroid assignment.

Training runs on one machine (the driver) over a sample; ``faiss.Kmeans`` uses the GPU when
the installed faiss has one (faiss-gpu), else the CPU build. Assignment is an exact search of
every point against the (small) centroid matrix, done in batches so memory stays bounded.
"""

from __future__ import annotations

import numpy as np


def _as_f32(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 2:
        raise ValueError(f"expected a 2-D array of vectors, got shape {x.shape}")
    return np.ascontiguousarray(x, dtype=np.float32)


def faiss_num_gpus() -> int:
    import faiss

    get = getattr(faiss, "get_num_gpus", None)
    try:
        return int(get()) if get else 0
    except Exception:  # CPU builds may expose the symbol but fail at call time
        return 0


def _use_gpu(gpu) -> bool:
    if gpu == "auto":
        return faiss_num_gpus() > 0
    if gpu and faiss_num_gpus() == 0:
        raise RuntimeError("gpu=True but the installed faiss has no GPU support (install faiss-gpu)")
    return bool(gpu)


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    x = _as_f32(x)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(n, eps)


def train_kmeans(x: np.ndarray, k: int, niter: int = 20, seed: int = 0, spherical: bool = False,
                 max_points_per_centroid: int = 256, gpu="auto", verbose: bool = False) -> np.ndarray:
    """Train k-means with FAISS; returns the (k, d) float32 centroids.

    ``spherical`` normalizes the inputs and the centroids after each iteration (cosine
    k-means, as SemDeDup uses). FAISS subsamples to ``k * max_points_per_centroid`` points
    with ``seed``, so the result depends only on ``x``, ``k``, ``niter`` and ``seed``.
    """
    import faiss

    x = _as_f32(x)
    n, d = x.shape
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if n < k:
        raise ValueError(f"k-means needs at least k={k} points, got {n}")
    if spherical:
        x = l2_normalize(x)
    km = faiss.Kmeans(d, int(k), niter=int(niter), seed=int(seed), spherical=bool(spherical),
                      max_points_per_centroid=int(max_points_per_centroid), gpu=_use_gpu(gpu),
                      verbose=verbose)
    # FAISS warns (to stderr) when n < 39 * k; that is fine for small tests.
    km.cp.min_points_per_centroid = 1
    km.train(x)
    c = np.ascontiguousarray(km.centroids, dtype=np.float32).reshape(k, d)
    if spherical:
        c = l2_normalize(c)
    return c


def assign(x: np.ndarray, centroids: np.ndarray, metric: str = "l2", batch_size: int = 65536,
           gpu=False) -> tuple[np.ndarray, np.ndarray]:
    """Nearest centroid of every row of ``x``: ``(ids int64, scores float32)``.

    ``gpu``: search on GPU 0 with faiss-gpu (``True``, or ``"auto"`` when faiss sees a GPU). Off
    by default: the jobs keep the CPU search, whose ties and rounding every engine shares.

    ``metric="l2"``: scores are squared L2 distances (smaller is nearer).
    ``metric="ip"``: scores are inner products (larger is nearer); with normalized inputs and
    centroids these are cosine similarities.
    """
    import faiss

    c = _as_f32(centroids)
    k, d = c.shape
    if metric == "l2":
        index = faiss.IndexFlatL2(d)
    elif metric == "ip":
        index = faiss.IndexFlatIP(d)
    else:
        raise ValueError(f"metric must be 'l2' or 'ip', got {metric!r}")
    index.add(c)
    if _use_gpu(gpu):
        index = faiss.index_cpu_to_gpu(faiss.StandardGpuResources(), 0, index)
    x = np.asarray(x)
    n = x.shape[0]
    ids = np.empty(n, dtype=np.int64)
    scores = np.empty(n, dtype=np.float32)
    for s in range(0, n, batch_size):
        xb = _as_f32(x[s:s + batch_size])
        if xb.shape[1] != d:
            raise ValueError(f"vectors have dim {xb.shape[1]}, centroids have dim {d}")
        D, I = index.search(xb, 1)
        ids[s:s + len(xb)] = I[:, 0]
        scores[s:s + len(xb)] = D[:, 0]
    return ids, scores
