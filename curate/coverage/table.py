"""The coverage table from the summed counts (ranks, kept fractions, relative drops), the
starved concepts of a subset, and per-class accuracy joined from evaluation results."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.coverage.concepts import ConceptList
from curate.coverage.counting import POOL, STARVED_K, TABLE
from curate import storage
from curate.errors import InputFileError
from curate.tables import Dataset, load_schema


def ordinal_rank(counts: np.ndarray) -> np.ndarray:
    """1-based ranks by count, descending; ties by position (concept id)."""
    order = np.lexsort((np.arange(len(counts)), -counts))
    rank = np.empty(len(counts), np.int32)
    rank[order] = np.arange(1, len(counts) + 1, dtype=np.int32)
    return rank


def relative_drop(count: np.ndarray, subset_size: int, pool_count: np.ndarray, pool_size: int) -> np.ndarray:
    """1 - subset share / pool share per concept; NaN where undefined."""
    with np.errstate(divide="ignore", invalid="ignore"):
        pool_share = pool_count / pool_size if pool_size else np.full(len(pool_count), np.nan)
        sub_share = count / subset_size if subset_size else np.full(len(count), np.nan)
        out = 1.0 - sub_share / pool_share
    out[(pool_count == 0) | (subset_size == 0)] = np.nan
    return out


def build_table(concepts: ConceptList, counts: dict[tuple[str, str], np.ndarray],
                sizes: dict[tuple[str, str], int], sources: list[str], subsets: list[str],
                accuracy: dict[str, dict[int, float]]) -> pa.Table:
    """The coverage table from the summed counts (see schemas/coverage.yaml)."""
    n = len(concepts.names)
    ids = np.arange(n, dtype=np.int32)
    parts = []
    for source in sources:
        pool_count = counts[(source, POOL)]
        pool_size = sizes[(source, POOL)]
        base = {"concept_id": pa.array(ids), "concept": pa.array(concepts.names, pa.string()),
                "source": pa.array([source] * n, pa.string()), "pool_count": pa.array(pool_count),
                "pool_size": pa.array(np.full(n, pool_size, np.int64)), "pool_rank": pa.array(ordinal_rank(pool_count))}
        for sub in (subsets or [None]):
            if sub is None:
                cols = {"subset": pa.nulls(n, pa.string()), "count": pa.nulls(n, pa.int64()),
                        "subset_size": pa.nulls(n, pa.int64()), "rank": pa.nulls(n, pa.int32()),
                        "kept_fraction": pa.nulls(n, pa.float64()), "relative_drop": pa.nulls(n, pa.float64()),
                        "accuracy": pa.nulls(n, pa.float64())}
            else:
                c = counts[(source, sub)]
                size = sizes[(source, sub)]
                with np.errstate(divide="ignore", invalid="ignore"):
                    kept = np.where(pool_count > 0, c / np.maximum(pool_count, 1), np.nan)
                acc = accuracy.get(sub, {})
                cols = {"subset": pa.array([sub] * n, pa.string()), "count": pa.array(c),
                        "subset_size": pa.array(np.full(n, size, np.int64)), "rank": pa.array(ordinal_rank(c)),
                        "kept_fraction": pa.array(kept, from_pandas=True),
                        "relative_drop": pa.array(relative_drop(c, size, pool_count, pool_size), from_pandas=True),
                        "accuracy": pa.array([acc.get(i) for i in range(n)], pa.float64())}
            parts.append(pa.table({**base, **cols}))
    return load_schema(TABLE).conform(pa.concat_tables(parts))


def starved(table: pa.Table, source: str, subset: str, min_pool_count: int, k: int = STARVED_K) -> list[dict]:
    """The k concepts whose share fell most in ``subset`` (relative drop above 0, descending;
    ties by concept id), among those with at least ``min_pool_count`` pool samples."""
    t = table.filter(pc.and_(pc.equal(table["source"], source), pc.equal(table["subset"], subset)))
    t = t.filter(pc.and_(pc.greater_equal(t["pool_count"], min_pool_count), pc.is_valid(t["relative_drop"])))
    rows = t.select(["concept_id", "concept", "pool_count", "count", "kept_fraction", "relative_drop"]).to_pylist()
    rows.sort(key=lambda r: (-r["relative_drop"], r["concept_id"]))
    return [r for r in rows if r["relative_drop"] > 0][:k]


# ---------------------------------------------------------------- evaluations
def evaluation_files(dataset: Dataset, subset: str) -> list[str]:
    """Results files of the evaluations a subset's manifest lists (``curate eval`` links them)."""
    from curate.subset import read_subset_manifest

    man = read_subset_manifest(dataset, subset)
    return [e["results"] for e in man.get("evaluations", []) if isinstance(e, dict) and e.get("results")
            and storage.is_file(e["results"])]


def per_class_accuracy(concepts: ConceptList, files: list[str]) -> tuple[dict[int, float], dict]:
    """Mean per-class recall over evaluation files, by concept id, from each file's zero-shot
    set whose class names are the concepts (the eval folder's own set when the concepts came
    from one, else the set sharing the most class names)."""
    index = {name: i for i, name in enumerate(concepts.names)}
    sums: dict[int, list[float]] = {}
    used = []
    for f in files:
        try:
            res = json.loads(storage.read_bytes(f))
        except (OSError, ValueError) as e:
            raise InputFileError(str(f), f"cannot read evaluation results ({e})") from None
        sets = {k: v.get("per_class_recall") or {} for k, v in (res.get("zeroshot") or {}).items()
                if isinstance(v, dict)}
        if not sets:
            continue
        want = Path(concepts.source).name if concepts.kind == "eval" else None
        name = want if want in sets else max(sets, key=lambda k: (sum(c in index for c in sets[k]), k))
        hits = {index[c]: float(v) for c, v in sets[name].items() if c in index}
        if not hits:
            continue
        used.append({"results": str(f), "set": name, "classes": len(hits)})
        for i, v in hits.items():
            sums.setdefault(i, []).append(v)
    return {i: float(np.mean(v)) for i, v in sums.items()}, {"files": used}


def rank_correlation(x: list[float], y: list[float]) -> float | None:
    """Spearman's rho (average ranks for ties); None with fewer than 3 points or no spread."""
    if len(x) < 3 or len(set(x)) < 2 or len(set(y)) < 2:
        return None
    from scipy.stats import spearmanr

    rho = spearmanr(x, y).statistic
    return None if rho is None or np.isnan(rho) else float(rho)
