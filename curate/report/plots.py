"""Small matplotlib charts rendered to PNG data URIs (the report embeds everything)."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from curate.report.images import data_uri

PALETTE = ["#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b3", "#937860"]


# Captions and labels may be Chinese, Japanese or Korean: after DejaVu Sans (Latin, Greek,
# Cyrillic) matplotlib falls back glyph by glyph to the first installed CJK family
# (scripts/setup.sh installs Debian's fonts-noto-cjk). Families that are not installed are
# left out of the list, so matplotlib does not warn about them.
FONT_FAMILIES = ["DejaVu Sans", "Noto Sans CJK JP", "Noto Sans CJK SC", "Noto Sans CJK KR", "Noto Sans CJK TC",
                 "Source Han Sans", "WenQuanYi Zen Hei", "IPAGothic", "Droid Sans Fallback"]


_FAMILIES: list[str] | None = None


def font_families() -> list[str]:
    """The FONT_FAMILIES installed here, in order (CJK coverage depends on one of them)."""
    global _FAMILIES
    if _FAMILIES is None:
        from matplotlib import font_manager

        fm = font_manager.fontManager
        if not any("CJK" in f.name for f in fm.ttflist):
            # installed after matplotlib cached its font list (it does not rescan by itself)
            for path in font_manager.findSystemFonts():
                if "CJK" in Path(path).name:
                    try:
                        fm.addfont(path)
                    except (OSError, RuntimeError, ValueError):
                        continue
        have = {f.name for f in fm.ttflist}
        _FAMILIES = [f for f in FONT_FAMILIES if f in have] or ["sans-serif"]
    return _FAMILIES


def _fig(w=6.0, h=3.0):
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    matplotlib.rcParams["font.family"] = font_families()
    # labels are the data's names (metrics, arms, reasons, captions' words): "$x$" is text, not
    # a formula for mathtext to parse (an unknown symbol stopped the report)
    matplotlib.rcParams["text.parse_math"] = False
    fig, ax = plt.subplots(figsize=(w, h), dpi=100)
    return plt, fig, ax


def _png(plt, fig) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return data_uri(buf.getvalue(), "image/png")


def bin_heights(series: dict[str, np.ndarray], bins: int = 40, share: bool = True
                ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Shared bin edges and each series' bar heights for arrays in memory (the report's own
    histograms are binned by the engine with the same rule: ``curate.report.frames``)."""
    from curate.report.frames import bin_edges

    vals = [np.asarray(v, dtype=float) for v in series.values() if len(v)]
    if not vals:
        return np.array([0.0, 1.0]), {}
    allv = np.concatenate(vals)
    edges = bin_edges(float(np.nanmin(allv)), float(np.nanmax(allv)), bins, bool(np.all(np.mod(allv, 1) == 0)))
    counts = {name: np.histogram(np.asarray(v, float), bins=edges)[0] for name, v in series.items() if len(v)}
    return edges, bar_heights(counts, share)


def bar_heights(counts: dict[str, np.ndarray], share: bool = True) -> dict[str, np.ndarray]:
    """Bar heights from rows per bin: with ``share`` the fraction of that series' rows in each
    bin (its bars sum to 1, so groups of different sizes compare; not a density, which exceeds
    1 on narrow bins), else raw counts."""
    return {name: (c / max(1, c.sum())) if share else c.astype(float) for name, c in counts.items()}


def histogram(hist: dict, title: str, xlabel: str, log: bool = False, share: bool = True,
              names: dict[str, str] | None = None) -> str:
    """Overlaid histograms (e.g. pool vs curated) on shared bins: ``hist`` is
    ``{"edges", "counts": {series: rows per bin}, "n": {series: rows}}``
    (``curate.report.frames.value_histogram``)."""
    plt, fig, ax = _fig()
    edges = np.asarray(hist["edges"], float)
    heights = bar_heights(hist["counts"], share)
    for i, (name, h) in enumerate(heights.items()):
        ax.hist(edges[:-1], bins=edges, weights=h, alpha=0.55,
                label=f"{(names or {}).get(name, name)} (n={hist['n'].get(name, int(hist['counts'][name].sum())):,})",
                color=PALETTE[i % len(PALETTE)])
    if heights:
        ax.legend(fontsize=8)
    if log:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel, fontsize=9)
    ax.set_ylabel("share of samples" if share else "count", fontsize=9)
    return _png(plt, fig)


def grouped_bars(categories: list[str], series: dict[str, list[float]], title: str, ylabel: str,
                 errors: dict[str, list[float]] | None = None, horizontal: bool = False) -> str:
    plt, fig, ax = _fig(6.5, max(3.0, 0.28 * len(categories)) if horizontal else 3.2)
    n = max(1, len(series))
    width = 0.8 / n
    x = np.arange(len(categories))
    for i, (name, vals) in enumerate(series.items()):
        err = (errors or {}).get(name)
        pos = x + (i - (n - 1) / 2) * width
        if horizontal:
            ax.barh(pos, vals, height=width, xerr=err, label=name, color=PALETTE[i % len(PALETTE)], capsize=2)
        else:
            ax.bar(pos, vals, width=width, yerr=err, label=name, color=PALETTE[i % len(PALETTE)], capsize=2)
    if horizontal:
        ax.set_yticks(x, categories, fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel(ylabel, fontsize=9)
    else:
        ax.set_xticks(x, categories, fontsize=8, rotation=30 if len(categories) > 5 else 0, ha="right" if len(categories) > 5 else "center")
        ax.set_ylabel(ylabel, fontsize=9)
    if n > 1:
        ax.legend(fontsize=8)
    ax.set_title(title, fontsize=10)
    return _png(plt, fig)


def funnel(labels: list[str], counts: list[int], title: str = "Samples after each step") -> str:
    plt, fig, ax = _fig(6.5, max(2.5, 0.38 * len(labels) + 0.8))
    y = np.arange(len(labels))
    ax.barh(y, counts, color=PALETTE[0])
    for yi, c in zip(y, counts):
        ax.text(c, yi, f" {c:,}", va="center", fontsize=8)
    ax.set_yticks(y, labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(counts + [1]) * 1.18)
    ax.set_title(title, fontsize=10)
    return _png(plt, fig)
