"""The entry distribution before and after balancing: numbers and a plot."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from curate import storage


def _side(counts: np.ndarray, t: float) -> dict:
    c = np.asarray(counts, dtype=np.int64)
    nz = c[c > 0]
    q = np.quantile(nz, [0.5, 0.9, 0.99]).tolist() if len(nz) else [0, 0, 0]
    return {
        "pairs": int(c.sum()),
        "entries_matched": int(len(nz)),
        "entries_over_t": int((c > t).sum()),
        "head_share": round(float(c[c >= t].sum() / c.sum()), 6) if c.sum() else 0.0,
        "max": int(c.max()) if len(c) else 0,
        "median_matched": float(q[0]), "p90_matched": float(q[1]), "p99_matched": float(q[2]),
        "entries_by_count": {"1": int((c == 1).sum()), "2-9": int(((c >= 2) & (c < 10)).sum()),
                             "10-99": int(((c >= 10) & (c < 100)).sum()),
                             "100-999": int(((c >= 100) & (c < 1000)).sum()),
                             ">=1000": int((c >= 1000).sum())},
    }


def distribution_summary(entries: Sequence[str], before: np.ndarray, after: np.ndarray, t: float,
                         head: int = 20, tail: int = 20) -> dict:
    """Head (most matched) and tail (least matched, still matched) entries with their counts
    before and after, plus aggregate shape numbers for both sides."""
    before = np.asarray(before, dtype=np.int64)
    after = np.asarray(after, dtype=np.int64)
    order = np.lexsort((np.arange(len(before)), -before))  # count desc, then id
    matched = order[before[order] > 0]

    def rows(ids):
        return [{"entry_id": int(i), "entry": entries[i], "before": int(before[i]), "after": int(after[i]),
                 "expected_after_cap": round(float(min(before[i], t)), 3)} for i in ids]

    return {
        "t": t,
        "entries": int(len(before)),
        "before": _side(before, t),
        "after": _side(after, t),
        "head": rows(matched[:head]),
        "tail": rows(matched[::-1][:tail]),
    }


def plot_distribution(before: np.ndarray, after: np.ndarray, t: float, path) -> str:
    """Rank/count plot (log-log) of matched entries before and after balancing, with t marked;
    written whole to ``path`` (a local path or a URI). Returns the file's name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from curate.tables.atomic import atomic_path

    fig, ax = plt.subplots(figsize=(7, 4.5), dpi=110)
    for counts, label in ((before, "before"), (after, "after")):
        c = np.sort(np.asarray(counts))[::-1]
        c = c[c > 0]
        if len(c):
            ax.loglog(np.arange(1, len(c) + 1), c, label=f"{label} ({int(c.sum()):,} matches, {len(c):,} entries)")
    ax.axhline(t, color="grey", linestyle="--", linewidth=1, label=f"t = {t:,.0f}")
    ax.set_xlabel("entry rank")
    ax.set_ylabel("texts matching the entry")
    ax.set_title("MetaCLIP metadata entry distribution")
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path, shard=False) as tmp:
        fig.savefig(tmp, format="png", metadata={"Software": None})
    plt.close(fig)
    return storage.basename(path)


def language_section(dataset, subset: str, lineage: dict | None = None) -> dict | None:
    """The worldwide (MetaCLIP 2) balance behind ``subset``, one row per metadata language,
    from ``language_balance/<run>``: the subset's own run, or a recipe's metaclip_balance stage."""
    tables = [t for t in dataset.tables() if t.startswith("language_balance/")]
    names = [f"language_balance/{subset}"]
    for st in (lineage or {}).get("stages", []):
        if st.get("kind") == "metaclip_balance":
            names += [t for t in tables if t.endswith(f"-{st.get('name')}")]
    table = next((n for n in names if n in tables), None)
    if table is None:
        return None
    rows = sorted(dataset.read(table).to_pylist(), key=lambda r: (-r["samples"], r["lang"]))
    return {"table": table, "rows": rows}
