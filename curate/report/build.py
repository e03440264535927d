"""Build the static, self-contained HTML report of a curation run.

Everything is inline (CSS, PNG charts and JPEG thumbnails as data URIs), so the file can be
mailed, attached to an issue or opened offline. Sections appear when their data exists:
funnel (lineage of ``curate run`` plus ingest/download counts), distributions (CLIP score,
caption length, language, cluster sizes, metadata entry counts), galleries of kept and
removed samples per stage, and evaluation results side by side.

Three layers: ``collect`` (``curate.report.collect``) gathers the numbers as plain data, the ``_*_view`` functions turn
them into table rows and charts, and ``templates/report.html.j2`` (jinja2, autoescaped) lays
them out.
"""

from __future__ import annotations

import datetime as _dt
import json
import re
from pathlib import Path
from typing import Any

import jinja2
import numpy as np

from curate import storage
from curate.manifest import code_version
from curate.report import plots
from curate.report.collect import collect, default_subset, load_evals  # noqa: F401 - re-exported
from curate.tables import Dataset, atomic_write_bytes


# ------------------------------------------------------------------ view model
CSS = (Path(__file__).parent / "templates" / "report.css").read_text()

# A row is highlighted as "best" only when it is a score where higher is better (recall,
# top-k, accuracy, R@k, precision, AUC, mAP, F1), at least two runs report it, the best value
# is above zero and no other run shows the same value at the displayed precision: a tie, an
# all-zero row or a count (n_images, wall_s, chance) is never highlighted.
SCORE_RE = re.compile(r"(?i)top-?\d|recall|accuracy|(^|[^a-z])acc([^a-z]|$)|r@\d|precision|auc|(^|[^a-z])map([^a-z]|$)|f1")
# a per-item table (per-class recall...) is shown apart from the summary metrics, as its
# top/bottom LONG_K rows with the rest collapsed: a parent key named per_* with more than
# LONG_GROUP children, or any parent with more than HUGE_GROUP (a summary of 40 tasks stays)
LONG_GROUP = 12
HUGE_GROUP = 100
LONG_K = 10


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def best_index(values: list[float | None], metric: str, fmt=_fmt) -> int | None:
    """Index of the value to highlight in a row of runs, or None (see the rule above)."""
    present = [(i, v) for i, v in enumerate(values) if v is not None and not np.isnan(v)]
    if len(present) < 2 or not SCORE_RE.search(metric):
        return None
    i_best, v_best = max(present, key=lambda iv: iv[1])
    if v_best <= 0:
        return None
    shown = fmt(v_best)
    if any(fmt(v) == shown for i, v in present if i != i_best):
        return None
    return i_best


def _row(name: str, values: list[float | None], metric: str) -> dict:
    win = best_index(values, metric)
    return {"name": name, "cells": [{"text": "" if v is None else _fmt(v), "win": i == win}
                                    for i, v in enumerate(values)]}


def split_metrics(runs: dict[str, dict[str, float]]) -> tuple[list[str], dict[str, list[str]]]:
    """Flattened metric names -> (summary metrics, {parent: per-item metrics}) by LONG_GROUP."""
    names = sorted({m for r in runs.values() for m in r})
    children: dict[str, list[str]] = {}
    for m in names:
        children.setdefault(m.rpartition(".")[0], []).append(m)
    long = {p: ms for p, ms in children.items()
            if p and (len(ms) > HUGE_GROUP or (len(ms) > LONG_GROUP and p.rpartition(".")[2].startswith("per_")))}
    in_long = {m for ms in long.values() for m in ms}
    return [m for m in names if m not in in_long], long


def _eval_view(ev: dict) -> dict | None:
    runs = ev.get("runs") or {}
    comp = _comparison_view(ev["comparison"]) if ev.get("comparison") else None
    if not runs and not comp and not ev.get("missing"):
        return None
    labels = list(runs)
    summary, long = split_metrics(runs)
    rows = [_row(m, [runs[l].get(m) for l in labels], m) for m in summary]
    per_item = []
    for parent, ms in sorted(long.items()):
        items = [(m.rpartition(".")[2], [runs[l].get(m) for l in labels], m) for m in ms]
        mean = lambda it: float(np.mean([v for v in it[1] if v is not None] or [np.nan]))  # noqa: E731
        by_mean = sorted(items, key=lambda it: (-np.nan_to_num(mean(it), nan=-np.inf), it[0]))
        k = LONG_K if len(items) > 2 * LONG_K else len(items)
        per_item.append({"name": parent, "n": len(items), "k": k,
                         "top": [_row(n, v, m) for n, v, m in by_mean[:k]],
                         "bottom": [_row(n, v, m) for n, v, m in by_mean[-k:][::-1]] if len(items) > 2 * LONG_K else [],
                         "all": [_row(n, v, m) for n, v, m in sorted(items)]})
    return {"labels": labels, "summary": rows, "per_item": per_item, "comparison": comp,
            "missing": ev.get("missing", [])}


def _comparison_view(comp: dict) -> dict:
    """Metrics as rows, training sets as columns (mean ± std over seeds), then the margins."""
    arms = comp.get("arms", [])
    metrics = comp.get("metrics") or sorted({m for a in arms for r in a.get("runs", []) for m in r.get("metrics", {})})
    means, stds, per = {}, {}, {}
    for a in arms:
        vals = {m: [r["metrics"][m] for r in a.get("runs", []) if m in r.get("metrics", {})] for m in metrics}
        means[a["name"]] = [float(np.mean(vals[m])) if vals[m] else float("nan") for m in metrics]
        stds[a["name"]] = [float(np.std(vals[m], ddof=1)) if len(vals[m]) > 1 else 0.0 for m in metrics]
        per[a["name"]] = [", ".join(f"{v:.3f}" for v in vals[m]) for m in metrics]
    margins = comp.get("margins") or {}
    rows = []
    for i, m in enumerate(metrics):
        win = best_index([means[a["name"]][i] for a in arms], m, fmt=lambda v: f"{v:.3f}")
        rows.append({"name": m, "cells": [{"text": f"{means[a['name']][i]:.3f} ± {stds[a['name']][i]:.3f}",
                                           "win": j == win, "title": f"seeds: {per[a['name']][i]}"}
                                          for j, a in enumerate(arms)],
                     "margins": [f"{mg.get(m, float('nan')):+.3f}" for mg in margins.values()]})
    chart = None
    if arms and metrics:
        chart = plots.grouped_bars(metrics, {a["name"]: means[a["name"]] for a in arms}, "Mean over seeds (± std)",
                                   "score", errors={a["name"]: stds[a["name"]] for a in arms})
    return {"title": comp.get("title", "Trained baselines"), "note": comp.get("note"),
            "arms": [{"name": a["name"], "size": a.get("size"), "seeds": len(a.get("runs", []))} for a in arms],
            "margins": list(margins), "rows": rows, "chart": chart, "samples_seen": comp.get("samples_seen")}


def _funnel_view(steps: list[dict]) -> dict | None:
    if not steps:
        return None
    rows, prev = [], None
    for s in steps:
        run = ""
        if s.get("cached") is not None:
            run = "cached" if s["cached"] else f"{s.get('seconds', 0):.2f}s"
        base = s["input"] if s.get("input") is not None else prev  # a step's own input, when it has one
        # a count above the step before (a subset with repeats, or with uids never downloaded)
        # removed nothing from it: no removal is shown rather than a negative one
        removed = None if base is None or base < s["count"] else base - s["count"]
        rows.append({"name": s["name"], "count": s["count"], "removed": removed,
                     "reasons": sorted(s["reasons"].items(), key=lambda kv: -kv[1]), "run": run})
        prev = s["count"]
    return {"rows": rows, "chart": plots.funnel([s["name"] for s in steps], [s["count"] for s in steps])}


def _dist_view(d: dict) -> list[tuple[str, str]]:
    imgs = []
    if "clip_score" in d:
        imgs.append(("CLIP score", plots.histogram(d["clip_score"], "CLIP score (image-text cosine)", "clip_score")))
    if "caption_words" in d:
        imgs.append(("caption length", plots.histogram(d["caption_words"], "Caption length (words, capped at 60)",
                                                       "words")))
    if "language" in d:
        lg = d["language"]
        imgs.append(("language", plots.grouped_bars(lg["labels"], {"pool": lg["pool"], "curated": lg["curated"]},
                                                    f"Caption language (fastText; n={lg['n_pool']:,} / {lg['n_curated']:,})",
                                                    "share of samples")))
    if "cluster_sizes" in d:
        cs = d["cluster_sizes"]
        imgs.append(("cluster sizes", plots.histogram(cs, f"Samples per cluster ({cs['table']})", "cluster size",
                                                       share=False)))
    if "metadata_entries" in d:
        me = d["metadata_entries"]
        imgs.append(("metadata entries", plots.histogram(me, f"Matches per metadata entry ({me['table']})",
                                                         "log10(matches)", share=False, log=True,
                                                         names={"pool": "before balancing", "curated": "after"})))
    return imgs


def _param_text(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v, sort_keys=True, default=str)


def _lineage_view(data: dict) -> list[dict]:
    lin, origin = data.get("lineage") or {}, data.get("origin")
    rows = [{"name": s["name"], "kind": s["kind"], "line": s.get("line", ""), "cache_key": s.get("cache_key", "")[:12],
             "cached": "yes" if s.get("cached") else "no", "seconds": f"{s.get('seconds', 0):.2f}",
             "params": [(k, _param_text(v)) for k, v in sorted((s.get("params") or {}).items())]}
            for s in lin.get("stages", []) if s.get("enabled") is not False]
    if origin:
        params = sorted(origin["params"].items()) + [("counts", origin["counts"])] * bool(origin["counts"])
        rows.append({"name": origin["name"], "kind": origin["kind"], "line": "", "cache_key": "", "cached": "",
                     "seconds": "" if origin.get("seconds") is None else f"{origin['seconds']:.2f}",
                     "params": [(k, _param_text(v)) for k, v in params]})
    return rows


def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("curate.report", "templates"),
                             autoescape=True, trim_blocks=True, lstrip_blocks=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = lambda v: "" if v is None else f"{v:,}"
    env.filters["fmt"] = _fmt
    return env


def guard_warnings(man: dict) -> list[tuple[str, str]]:
    """(stage, warning) of the embedding-space guards recorded in a subset's manifest: its own
    stage's, a filter run's per filter, or each recipe stage's (curate.embedding_space.guards)."""
    found = [(man.get("stage") or "stage", (man.get("guards") or {}).get("warnings", []))]
    found += [(k, (v.get("guards") or {}).get("warnings", []))
              for k, v in (man.get("resolved") or {}).items() if isinstance(v, dict)]
    found += [(s.get("name", ""), (s.get("stats") or {}).get("warnings", []))
              for s in (man.get("lineage") or {}).get("stages", [])]
    return [(stage, w) for stage, ws in found for w in ws]


def render(data: dict, evals: dict | None = None, title: str | None = None, coverage: dict | None = None) -> str:
    lin = data.get("lineage") or {}
    title = title or f"curate report: {data['subset']}"
    if lin:
        middle = ("recipe input", lin.get("input_count", data["before_count"]))
    else:
        middle = (data.get("before_label", "before"), data["before_count"])
    cards = [("pool", data["funnel"][0]["count"] if data["funnel"] else data["before_count"]), middle,
             (f"subset {data['subset']}", data["after_count"])]
    cv = code_version()
    return _env().get_template("report.html.j2").render(
        title=title, css=CSS, data=data, cards=cards, code=cv,
        warnings=guard_warnings(data.get("manifest") or {}) + [("report", n) for n in data.get("notes", [])],
        stamp=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        funnel=_funnel_view(data["funnel"]), evaluation=_eval_view(evals or {}),
        distributions=_dist_view(data["distributions"]), galleries=data["galleries"],
        lineage=_lineage_view(data), recipe_text=data.get("recipe_text"), coverage=coverage)


def subset_evaluations(data: dict, explicit: dict[str, Path]) -> tuple[dict[str, Path], list[str]]:
    """The evaluations the subset's manifest lists (curate eval links them), beside --eval ones.

    Returns label -> results path, and the listed files that are gone (shown, not fatal)."""
    def key(p) -> str:
        return str(p) if storage.is_uri(p) else str(Path(p).resolve())

    seen = {key(p) for p in explicit.values()}
    found: dict[str, Path] = {}
    missing: list[str] = []
    for i, e in enumerate(data.get("evaluations") or []):
        p = e["results"] if storage.is_uri(e["results"]) else Path(e["results"])
        if key(p) in seen:
            continue
        if not storage.is_file(p):
            missing.append(str(p))
            continue
        label = f"{data['subset']} seed {e['seed']}" if e.get("seed") is not None else f"{data['subset']} #{i + 1}"
        while label in explicit or label in found:
            label += "'"
        found[label] = p
        seen.add(key(p))
    return found, missing


def build_report(dataset: Dataset, subset: str, out: Path | str | None = None, evals: dict[str, Path] | None = None,
                 comparison: Path | None = None, pool_subset: str | None = None,
                 embedding_model: str | None = None, title: str | None = None, executor=None) -> Path | str:
    """Write the report (default ``DATASET/reports/<subset>.html``); returns its path (``out``
    may be a URI: one whole object, ``curate.outputs``). ``executor`` reads the per-row tables
    (default in-process; ``curate.report.collect``)."""
    data = collect(dataset, subset, pool_subset=pool_subset, embedding_model=embedding_model, executor=executor)
    listed, missing = subset_evaluations(data, evals or {})
    ev = load_evals({**(evals or {}), **listed}, comparison)
    ev["missing"] = missing
    from curate.report.coverage import coverage_section

    page = render(data, ev, title, coverage=coverage_section(dataset, subset))
    from curate import outputs

    if out is not None and storage.is_uri(out):
        outputs.write_bytes(str(out), page.encode("utf-8"))
        return str(out)
    out = Path(out) if out else dataset.path(f"reports/{subset}.html")
    atomic_write_bytes(out, page.encode("utf-8"))
    return out
