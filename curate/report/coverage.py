"""The report's concept-coverage section: data from a ``coverage/<name>`` table (curate coverage).

Shown when the dataset holds a coverage table: the one that counted the reported subset
(the most recently written if several did), else the most recent one (pool only).
"""

from __future__ import annotations

import json

import pyarrow.compute as pc

from curate import storage
from curate.report.images import data_uri
from curate.tables import Dataset


def _pick_table(dataset: Dataset, subset: str) -> tuple[str, bool] | None:
    tables = [t for t in dataset.tables() if t.startswith("coverage/") and dataset.shards(t)]
    if not tables:
        return None
    newest = sorted(tables, key=lambda t: (max(storage.fingerprint(p)[1] for p in dataset.shards(t)), t), reverse=True)
    for t in newest:
        subs = dataset.read(t, columns=["subset"]).column("subset")
        if pc.any(pc.equal(subs, subset)).as_py():
            return t, True
    return newest[0], False


def coverage_section(dataset: Dataset, subset: str, k: int = 10) -> dict | None:
    """Plain data + charts for the template partial ``coverage.html.j2``; None without a table."""
    from curate.coverage import plots
    from curate.coverage.job import DEFAULT_MIN_POOL_COUNT, starved

    picked = _pick_table(dataset, subset)
    if picked is None:
        return None
    name, has_subset = picked
    table = dataset.read(name)
    p = storage.join(dataset.table_dir(name), "_summary.json")
    summary = json.loads(storage.read_bytes(p)) if storage.exists(p) else {}
    min_pool = summary.get("min_pool_count", DEFAULT_MIN_POOL_COUNT)
    sources = []
    for source in sorted(set(table.column("source").to_pylist())):
        s = (summary.get("sources") or {}).get(source, {})
        sub = (s.get("subsets") or {}).get(subset) if has_subset else None
        acc = (sub or {}).get("accuracy")
        sources.append({
            "source": source, "pool_size": s.get("pool_size"), "concepts_seen": s.get("concepts_seen"),
            "subset_size": (sub or {}).get("size"), "subset_seen": (sub or {}).get("concepts_seen"),
            "lost": (sub or {}).get("concepts_lost"),
            "starved": starved(table, source, subset, min_pool, k) if has_subset else [],
            "rho": acc.get("spearman_count") if acc else None, "acc_classes": acc.get("classes") if acc else None,
        })
    has_acc = has_subset and pc.any(pc.is_valid(table["accuracy"])).as_py()
    concepts = summary.get("concepts") or {}
    return {"table": name, "view": name.replace("/", "_"), "subset": subset if has_subset else None,
            "other_subsets": sorted({s for s in table.column("subset").to_pylist() if s and s != subset}),
            "concepts": concepts.get("concepts", len(set(table.column("concept_id").to_pylist()))),
            "concept_kind": concepts.get("kind"), "concept_source": concepts.get("source"),
            "pool": summary.get("pool"), "threshold": summary.get("threshold"),
            "embeddings": summary.get("embeddings"), "min_pool_count": min_pool, "sources": sources,
            "long_tail": data_uri(plots.long_tail_png(table), "image/png"),
            "accuracy_chart": data_uri(plots.accuracy_png(table, summary), "image/png") if has_acc and summary else None}
