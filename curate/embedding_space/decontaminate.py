"""Evaluation-set decontamination: remove pool samples whose image embedding is within a
cosine threshold of any evaluation image, and report which evaluation images had near copies.

The evaluation side is small (thousands to tens of thousands of images), so it is one exact
FAISS inner-product index; each pool shard is searched against it (top-1) independently.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.decisions import decisions_table

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


def decontaminate_shard(uids, pool_x: np.ndarray, index, eval_ids: list[str], threshold: float,
                        stage: str = "decontaminate") -> tuple[pa.Table, dict]:
    """Decisions for one pool shard plus per-eval-image hits ``{eval_id: [count, max_sim, uid]}``.

    A pool row is removed when its best similarity to an evaluation image is >= ``threshold``;
    ``value`` is that similarity (for every row, so a threshold can be re-tuned in SQL) and
    ``detail`` the evaluation image id.
    """
    sims, ids = nearest_eval(index, pool_x)
    removed = sims >= threshold
    reason = np.where(removed, REASON, "kept")
    detail = [eval_ids[i] if (r and i >= 0) else None for i, r in zip(ids, removed)]
    t = decisions_table(list(uids), stage, (~removed).tolist(), reason.tolist(),
                        sims.astype(np.float64).tolist(), detail)
    hits: dict[str, list] = {}
    uids = list(uids)
    for j in np.flatnonzero(removed):
        e = eval_ids[ids[j]]
        h = hits.setdefault(e, [0, -1.0, None])
        h[0] += 1
        if sims[j] > h[1] or (sims[j] == h[1] and uids[j] < h[2]):
            h[1], h[2] = float(sims[j]), uids[j]
    return t, hits


def merge_hits(parts: list[dict]) -> dict:
    out: dict[str, list] = {}
    for part in parts:
        for e, (c, m, u) in part.items():
            h = out.setdefault(e, [0, -1.0, None])
            h[0] += c
            if m > h[1] or (m == h[1] and (h[2] is None or u < h[2])):
                h[1], h[2] = m, u
    return out
