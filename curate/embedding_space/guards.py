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


def embedding_sample(paths, embedding: str = "image", limit: int = PAIR_SAMPLE, seed: int = 0,
                     executor=None) -> np.ndarray:
    """Up to ``limit`` rows of an embeddings table with the smallest uid hash (ties: earlier
    shard, then earlier row), normalised. The workers read the uid columns and the picked rows
    (``curate.embedding_space.guard_sample``); the driver gets at most ``8 x limit`` small
    (hash, shard, row) triples and the ``limit`` vectors, whatever the pool."""
    from curate.embedding_space.guard_sample import embedding_sample as sample
    from curate.engine import LocalExecutor

    return sample(executor or LocalExecutor(), paths, embedding, limit, seed)


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


def table_health(dataset, table: str, embedding: str = "image", executor=None) -> tuple[dict, list[str]]:
    return embedding_health(pairwise_histogram(embedding_sample(dataset.shards(table), embedding,
                                                                executor=executor)))


# what to check when a stage removed most of its input: the options that set how much it removes
_REMOVAL_ADVICE = {"perceptual_dedup": "check --radius and --hash", "exact_dedup": "check the downloads' hashes",
                   "dbp": "check --keep-fraction", "ssp": "check --keep-fraction",
                   "metaclip_balance": "check --t and --t-reference-pool"}


def removal_warning(stage: str, n_input: int, n_removed: int) -> list[str]:
    if n_input and n_removed > MAX_REMOVED_FRACTION * n_input:
        advice = _REMOVAL_ADVICE.get(stage, "check the threshold and the embeddings")
        return [f"{stage} removed {n_removed} of {n_input} samples ({n_removed / n_input:.0%}, more than "
                f"{MAX_REMOVED_FRACTION:.0%}); {advice}"]
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
