"""Evaluation-set decontamination: remove pool samples whose image embedding is within a
cosine threshold of any evaluation image, and report which evaluation images had near copies.

The evaluation side is small (thousands to tens of thousands of images), so it is one exact
FAISS inner-product index; each pool shard is searched against it (top-1) independently.
"""

from __future__ import annotations

import numpy as np

REASON = "eval_near_copy"


def build_eval_index(eval_x: np.ndarray):
    import faiss

    x = np.ascontiguousarray(eval_x, dtype=np.float32)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index


def nearest_eval(index, pool_x: np.ndarray, batch_size: int = 65536) -> tuple[np.ndarray, np.ndarray]:
    """Top-1 evaluation image of each pool row: (similarity float32, eval index int64)."""
    n = pool_x.shape[0]
    sims = np.empty(n, dtype=np.float32)
    ids = np.empty(n, dtype=np.int64)
    for s in range(0, n, batch_size):
        xb = np.ascontiguousarray(pool_x[s:s + batch_size], dtype=np.float32)
        D, I = index.search(xb, 1)
        sims[s:s + len(xb)] = D[:, 0]
        ids[s:s + len(xb)] = I[:, 0]
    return sims, ids
