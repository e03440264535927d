"""Guards for the embedding-space stages: the similarity distribution a stage acted on, and
warnings when the embeddings look meaningless or a stage removes most of its input.

Distributions are fixed-bin histograms over cosine similarity in [-1, 1] (``BINS`` bins), so
tasks can return them and the driver sums them: no per-row data needs to reach the driver.
Quantiles are read off the summed histogram (bin centres, precision 2 / BINS = 0.001).

Degenerate embeddings (a random-init model, a collapsed one) show as near-constant cosine
similarity between unrelated samples: the median pairwise cosine among a bounded random
sample (``PAIR_SAMPLE`` rows, picked by uid hash so the pick does not depend on order) is
above ``DEGENERATE_MEDIAN``, or the spread between its 10th and 90th percentiles is below
``MIN_SPREAD``. Real CLIP image embeddings of a web pool have a median pairwise cosine of
about 0.3-0.5 with a spread of 0.2 or more; a random-init open_clip model gives 0.95+ with
a spread near 0.01.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

BINS = 2000
DEGENERATE_MEDIAN = 0.9
MIN_SPREAD = 0.02
PAIR_SAMPLE = 256
MAX_REMOVED_FRACTION = 0.5
MIN_POINTS_PER_CLUSTER = 20
QUANTILES = (0.01, 0.1, 0.5, 0.9, 0.99)


def histogram(values) -> np.ndarray:
    """Counts of cosine similarities per bin (NaN skipped; values clipped into [-1, 1])."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = np.clip(v[~np.isnan(v)], -1.0, 1.0)
    idx = np.minimum(((v + 1.0) * (BINS / 2.0)).astype(np.int64), BINS - 1)
    return np.bincount(idx, minlength=BINS).astype(np.int64)


def quantiles(hist, qs=QUANTILES) -> dict[str, float]:
    """Quantiles (bin centres) of a summed histogram; empty dict when it is empty."""
    h = np.asarray(hist, dtype=np.int64)
    n = int(h.sum())
    if n == 0:
        return {}
    cum = np.cumsum(h)
    centres = -1.0 + (np.arange(BINS) + 0.5) * (2.0 / BINS)
    return {f"p{int(round(q * 100))}": round(float(centres[np.searchsorted(cum, max(q * n, 1), side="left")]), 4)
            for q in qs}


def distribution(hist, what: str) -> dict:
    h = np.asarray(hist, dtype=np.int64)
    return {"what": what, "n": int(h.sum()), "quantiles": quantiles(h)}


def pairwise_histogram(x: np.ndarray) -> np.ndarray:
    """Histogram of the cosine similarities of every pair of rows of ``x`` (rows normalised here)."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return np.zeros(BINS, np.int64)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    s = x @ x.T
    return histogram(s[np.triu_indices(len(x), 1)])


def embedding_sample(paths, embedding: str = "image", limit: int = PAIR_SAMPLE, seed: int = 0) -> np.ndarray:
    """Up to ``limit`` rows of an embeddings table with the smallest uid hash (ties: earlier
    shard, then earlier row), read on the driver: the uid columns first, then only the row
    groups that hold a picked row (decoding the embeddings is the costly part of a read; at
    most ``limit`` row groups are decoded whatever the pool, one at a time)."""
    from curate.embedding_space.sampling import uid_hash_array
    from curate.embedding_space.vectors import embedding_columns, embedding_matrix
    from curate.storage import parquet_file, read_parquet

    paths = list(paths)
    best_h = np.zeros(0, np.int64)
    best_at = np.zeros((0, 2), np.int64)  # (shard, row) of each pick
    for i, p in enumerate(paths):
        u = read_parquet(p, columns=["uid"]).column("uid")
        if len(u) == 0:
            continue
        h = uid_hash_array(u, seed)
        sel = np.argsort(h, kind="stable")[:limit]
        hs = np.concatenate([best_h, h[sel]])
        at = np.concatenate([best_at, np.stack([np.full(len(sel), i), sel], axis=1)])
        keep = np.argsort(hs, kind="stable")[:limit]
        best_h, best_at = hs[keep], at[keep]
    if len(best_h) == 0:
        return np.zeros((0, 1), np.float32)
    out = None
    for i in np.unique(best_at[:, 0]):
        pos = np.flatnonzero(best_at[:, 0] == i)
        rows = best_at[pos, 1]
        f = parquet_file(paths[i])
        starts = np.cumsum([0] + [f.metadata.row_group(g).num_rows for g in range(f.num_row_groups)])
        for g in np.unique(np.searchsorted(starts, rows, side="right") - 1):
            in_g = (rows >= starts[g]) & (rows < starts[g + 1])
            t = f.read_row_group(int(g), columns=["uid", *embedding_columns(embedding)])
            x = embedding_matrix(t.take(pa.array(rows[in_g] - starts[g])), embedding, where=f"{paths[i]}: ")
            if out is None:
                out = np.zeros((len(best_h), x.shape[1]), x.dtype)
            out[pos[in_g]] = x
    return out


def embedding_health(pair_hist) -> tuple[dict, list[str]]:
    """The pairwise-cosine distribution of a random sample and a warning if it looks degenerate."""
    d = distribution(pair_hist, "pairwise cosine among a random sample of the embeddings")
    q = d["quantiles"]
    if not q:
        return d, []
    med, spread = q["p50"], q["p90"] - q["p10"]
    d["median"], d["spread_p10_p90"] = med, round(spread, 4)
    if med > DEGENERATE_MEDIAN or spread < MIN_SPREAD:
        return d, [f"embeddings look degenerate (median pairwise cosine {med:.3f}, p10-p90 spread {spread:.3f}; "
                   f"expected median <= {DEGENERATE_MEDIAN} and spread >= {MIN_SPREAD}): a random-init or collapsed "
                   f"model? Similarity thresholds are meaningless on such embeddings"]
    return d, []


def table_health(dataset, table: str, embedding: str = "image") -> tuple[dict, list[str]]:
    return embedding_health(pairwise_histogram(embedding_sample(dataset.shards(table), embedding)))


def removal_warning(stage: str, n_input: int, n_removed: int) -> list[str]:
    if n_input and n_removed > MAX_REMOVED_FRACTION * n_input:
        return [f"{stage} removed {n_removed} of {n_input} samples ({n_removed / n_input:.0%}, more than "
                f"{MAX_REMOVED_FRACTION:.0%}); check the threshold and the embeddings"]
    return []


def cluster_warnings(rows: int, k: int, empty: int) -> list[str]:
    out = []
    if k and rows < MIN_POINTS_PER_CLUSTER * k:
        out.append(f"k={k} is too large for {rows} samples ({rows / k:.1f} per cluster, fewer than "
                   f"{MIN_POINTS_PER_CLUSTER}); choose k <= {max(1, rows // MIN_POINTS_PER_CLUSTER)}")
    if empty:
        out.append(f"{empty} of {k} clusters are empty")
    return out


def guards_record(distributions: dict[str, dict], warnings: list[str]) -> dict:
    """What goes into the run manifest (``guards``) and the kept subset's manifest."""
    return {"distributions": distributions, "warnings": list(warnings)}


def summary_lines(guards: dict | None) -> list[str]:
    """Lines for the command summary: one per distribution, one per warning."""
    if not guards:
        return []
    out = []
    for d in guards.get("distributions", {}).values():
        q = d.get("quantiles") or {}
        if q:
            out.append(f"  {d['what']} (n={d['n']}): " + " ".join(f"{k}={v:.3f}" for k, v in q.items()))
    out += [f"warning: {w}" for w in guards.get("warnings", [])]
    return out
