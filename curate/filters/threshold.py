"""The exact score threshold that keeps a top fraction of the pool (DataComp's rule).

DataComp: ``threshold = -np.sort(-scores)[int(N * fraction)]``, then keep ``score >= threshold``
(so every tie of the cut value is kept). Here the same value is found without gathering the
scores on one machine: a radix select over the float32 bit patterns. Pass 1: every shard
counts its scores per 16-bit key prefix; the driver finds the prefix holding the cut.
Pass 2: every shard returns the distinct scores (with counts) under that prefix, at most
65,536 of them; the driver walks them to the exact value. Two reads of one float column.

NaN sorts after every number in DataComp's descending order (and never passes ``>=``);
-0.0 equals 0.0.
"""

from __future__ import annotations

import math

import numpy as np

from curate import storage

_NAN_KEY = 0  # below every number's key


def order_keys(scores: np.ndarray) -> np.ndarray:
    """uint32 keys whose ascending order is the scores' ascending order (NaN lowest)."""
    x = np.ascontiguousarray(scores, dtype=np.float32) + np.float32(0.0)  # -0.0 -> 0.0
    bits = x.view(np.uint32)
    keys = np.where(bits >> 31 == 1, ~bits, bits | np.uint32(0x80000000)).astype(np.uint32)
    keys[np.isnan(x)] = _NAN_KEY
    return keys


def _read_scores(task: dict) -> np.ndarray:
    col = storage.read_parquet(task["path"], columns=[task["column"]]).column(0)
    return col.to_numpy(zero_copy_only=False).astype(np.float32, copy=False)


def histogram_task(task: dict) -> dict:
    """Pass 1: rows per 16-bit key prefix (only non-empty prefixes)."""
    keys = order_keys(_read_scores(task))
    prefixes, counts = np.unique(keys >> 16, return_counts=True)
    return {"n": int(keys.size), "bins": {str(int(p)): int(c) for p, c in zip(prefixes, counts)}}


def values_task(task: dict) -> dict:
    """Pass 2: distinct scores (as float) and their counts under one key prefix."""
    scores = _read_scores(task)
    keys = order_keys(scores)
    sel = scores[(keys >> 16) == task["prefix"]] + np.float32(0.0)
    if task["prefix"] == _NAN_KEY >> 16:
        sel = sel[~np.isnan(sel)]  # NaNs share prefix 0 with no number; they are counted apart
        nan = int(np.isnan(scores).sum())
    else:
        nan = 0
    vals, counts = np.unique(sel, return_counts=True)
    return {"values": [[float(v), int(c)] for v, c in zip(vals, counts)], "nan": nan}


def top_fraction_threshold(shard_paths: list[str], column: str, fraction: float, executor) -> dict:
    """DataComp's fraction threshold over the whole table, exactly.

    Returns ``{"threshold", "n", "index"}``: ``index = int(n * fraction)`` is the 0-based
    position of the cut in descending order. When ``index >= n`` (fraction 1, or an empty
    pool; DataComp would raise) the threshold is -inf and every number passes.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    tasks = [{"path": str(p), "column": column} for p in shard_paths]
    hist = executor.map_tasks(tasks, histogram_task, description=f"{column} histogram")
    n = sum(h["n"] for h in hist)
    index = int(n * fraction)
    if index >= n:
        return {"threshold": -math.inf, "n": n, "index": index}
    bins: dict[int, int] = {}
    for h in hist:
        for p, c in h["bins"].items():
            bins[int(p)] = bins.get(int(p), 0) + c
    seen = 0  # rows in higher prefixes
    for prefix in sorted(bins, reverse=True):
        if seen + bins[prefix] > index:
            break
        seen += bins[prefix]
    vt = [dict(t, prefix=prefix) for t in tasks]
    parts = executor.map_tasks(vt, values_task, description=f"{column} cut")
    merged: dict[float, int] = {}
    nan = 0
    for part in parts:
        nan += part["nan"]
        for v, c in part["values"]:
            merged[v] = merged.get(v, 0) + c
    for v in sorted(merged, reverse=True):
        seen += merged[v]
        if seen > index:
            return {"threshold": float(np.float32(v)), "n": n, "index": index}
    # The cut falls among the NaNs (they sort last): nothing can pass.
    return {"threshold": math.nan, "n": n, "index": index}


def reference_threshold(scores: np.ndarray, fraction: float) -> float:
    """DataComp's expression, for tests and small inputs."""
    s = np.asarray(scores, dtype=np.float32)
    return float(-np.sort(-s)[int(len(s) * fraction)])
