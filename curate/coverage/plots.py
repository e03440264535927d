"""Coverage charts (matplotlib, PNG bytes): the long tail and accuracy against frequency.

The report embeds the same PNGs as data URIs; the command writes them beside the table.
"""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.report.plots import PALETTE, _fig


def _bytes(plt, fig) -> bytes:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()


def _series(table: pa.Table, source: str) -> dict[str, np.ndarray]:
    """Counts of the pool and of each subset for one source, each sorted descending."""
    t = table.filter(pc.equal(table["source"], source))
    first = t.filter(pc.equal(t["concept_id"], pc.min(t["concept_id"])))
    subsets = [s for s in first.column("subset").to_pylist() if s is not None]
    pool_rows = t.filter(pc.equal(t["subset"], subsets[0])) if subsets else t
    out = {"pool": np.sort(pool_rows.column("pool_count").to_numpy())[::-1]}
    for s in subsets:
        out[s] = np.sort(t.filter(pc.equal(t["subset"], s)).column("count").to_numpy())[::-1]
    return out


def long_tail_png(table: pa.Table) -> bytes:
    """Samples per concept by rank (log scale), pool vs each subset, one panel per source.
    Concepts with no sample are left off the log axis (the legend counts them)."""
    sources = sorted(set(table.column("source").to_pylist()))
    plt, fig, ax = _fig(6.5, 3.0 * max(1, len(sources)))
    fig.clf()
    for k, source in enumerate(sources):
        ax = fig.add_subplot(len(sources), 1, k + 1)
        for i, (label, counts) in enumerate(_series(table, source).items()):
            nz = counts[counts > 0]
            ax.plot(np.arange(1, len(nz) + 1), nz, color=PALETTE[i % len(PALETTE)], lw=1.6,
                    label=f"{label} ({len(nz):,} of {len(counts):,} concepts seen)")
        ax.set_yscale("log")
        if len(table) and table.num_rows // max(1, len(sources)) > 50:
            ax.set_xscale("log")
        ax.set_title(f"Samples per concept by rank ({source})", fontsize=10)
        ax.set_xlabel("concept rank", fontsize=9)
        ax.set_ylabel("samples (log)", fontsize=9)
        ax.legend(fontsize=8)
    return _bytes(plt, fig)


def accuracy_points(table: pa.Table, source: str, subset: str) -> tuple[list[str], list[int], list[float]]:
    t = table.filter(pc.and_(pc.and_(pc.equal(table["source"], source), pc.equal(table["subset"], subset)),
                             pc.is_valid(table["accuracy"])))
    return (t.column("concept").to_pylist(), t.column("count").to_pylist(), t.column("accuracy").to_pylist())


def accuracy_png(table: pa.Table, summary: dict) -> bytes:
    """Per-class zero-shot accuracy against the class's samples in the training subset (log
    x axis, count + 1), one colour per evaluated subset, Spearman's rho in the legend."""
    source = "caption"
    plt, fig, ax = _fig(6.0, 3.6)
    subsets = summary["sources"][source]["subsets"]
    i = 0
    for sub, info in sorted(subsets.items()):
        if not info.get("accuracy"):
            continue
        names, counts, acc = accuracy_points(table, source, sub)
        rho = info["accuracy"].get("spearman_count")
        rho_s = "n/a" if rho is None else f"{rho:+.2f}"
        ax.scatter(np.asarray(counts) + 1, acc, s=18, color=PALETTE[i % len(PALETTE)],
                   label=f"{sub} (Spearman rho {rho_s}, {len(acc)} classes)")
        if len(names) <= 40:
            for n, x, y in zip(names, counts, acc):
                ax.annotate(n, (x + 1, y), fontsize=6, alpha=0.7, xytext=(2, 2), textcoords="offset points")
        i += 1
    ax.set_xscale("log")
    ax.set_xlabel("samples with the concept in the caption (+1, log)", fontsize=9)
    ax.set_ylabel("zero-shot accuracy (class recall)", fontsize=9)
    ax.set_title("Per-class accuracy vs concept frequency", fontsize=10)
    if i:
        ax.legend(fontsize=8)
    return _bytes(plt, fig)
