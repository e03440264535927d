"""Build the static, self-contained HTML report of a curation run.

Everything is inline (CSS, PNG charts and JPEG thumbnails as data URIs), so the file can be
mailed, attached to an issue or opened offline. Sections appear when their data exists:
funnel (lineage of ``curate run`` plus ingest/download counts), distributions (CLIP score,
caption length, language, cluster sizes, metadata entry counts), galleries of kept and
removed samples per stage, and evaluation results side by side.

Three layers: ``collect`` gathers the numbers as plain data, the ``_*_view`` functions turn
them into table rows and charts, and ``templates/report.html.j2`` (jinja2, autoescaped) lays
them out.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.errors import DatasetError
from curate.manifest import code_version
from curate.report import plots
from curate.report.images import thumbnails
from curate.subset import list_subsets, read_subset, read_subset_manifest
from curate.tables import Dataset, atomic_write_bytes


# ------------------------------------------------------------------ collection
def _uids_in(t: pa.Table, uids: pa.Array) -> pa.Table:
    return t.filter(pc.is_in(t.column("uid"), value_set=uids))


def _stable_pick(uids: list[str], k: int, salt: str) -> list[str]:
    """k uids chosen by a salted hash: varied, but the same on every rebuild."""
    return sorted(uids, key=lambda u: hashlib.blake2b(f"{salt}{u}".encode(), digest_size=8).digest())[:k]


def _flatten(obj: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = float(obj)
    return out


def _find_tables_with(dataset: Dataset, columns: set[str], prefix: str | None = None) -> list[str]:
    found = []
    for t in dataset.tables():
        if prefix and not t.startswith(prefix):
            continue
        try:
            names = set(pq.read_schema(dataset.shards(t)[0]).names)
        except (OSError, pa.ArrowInvalid, IndexError):
            continue
        if columns <= names:
            found.append(t)
    return found


def default_subset(dataset: Dataset) -> str:
    """The output of the most recent ``curate run`` on this dataset, else its only subset."""
    subsets = list_subsets(dataset)
    runs = sorted(dataset.runs_dir().glob("recipe-*.json"), key=lambda p: p.stat().st_mtime)
    for p in reversed(runs):
        out = (json.loads(p.read_text()).get("lineage") or {}).get("output")
        if out and out in subsets:
            return out
    if len(subsets) == 1:
        return subsets[0]
    raise DatasetError(f"{dataset.root}: say which subset to report on (--subset); "
                       f"have: {', '.join(subsets) or 'none'}")


# how a subset was made, from its manifest's "stage" (recipes carry a lineage instead)
MADE_BY = {"select_sql": "curate select --sql", "import": "curate select --from-file (imported subset file)",
           "filter": "curate filter", "demo": "curate demo"}
# manifest keys that describe the run rather than configure it (left out of the lineage parameters)
_NOT_PARAMS = {"lineage", "evaluations", "trainings", "counts", "reasons", "stage", "seconds", "recipe_text",
               "count", "distinct", "name", "created", "code"}


def _subset_lineage(subset: str, man: dict, count: int) -> dict:
    """A one-step lineage for a subset made without a recipe (select, filter, import, stages)."""
    stage = man.get("stage") or "unknown"
    made_by = MADE_BY.get(stage, f"curate {stage}") if man.get("stage") else "unknown (its manifest names no stage)"
    params = {k: v for k, v in man.items() if k not in _NOT_PARAMS}
    reasons = man.get("reasons") or {}
    reasons = {k: v for k, v in reasons.items() if k != "kept" and isinstance(v, int)}
    counts = man.get("counts") or {}
    input_count = man.get("input_count", counts.get("input", counts.get("returned", counts.get("file_rows"))))
    return {"name": subset, "kind": stage, "made_by": made_by, "params": params,
            "reasons": reasons, "counts": counts, "input_count": input_count, "output_count": count,
            "seconds": man.get("seconds")}


def _decisions_table(dataset: Dataset, man: dict, lineage: dict) -> str | None:
    name = lineage.get("decisions") or man.get("decisions")
    run = man.get("run")
    if not name and isinstance(run, str) and "/" not in run:
        name = f"decisions/{run}"  # embedding-space stages name their run, not the table
    return name if name and dataset.has_table(name) else None


def collect(dataset: Dataset, subset: str, pool_subset: str | None = None, embedding_model: str | None = None,
            per_reason: int = 6) -> dict:
    """Everything the report shows, as plain data (tested apart from the HTML)."""
    if subset not in list_subsets(dataset):
        raise DatasetError(f"subset {subset!r} not found in {dataset.root / 'subsets'} "
                           f"(have: {', '.join(list_subsets(dataset)) or 'none'})")
    man = read_subset_manifest(dataset, subset)
    lineage = man.get("lineage") or {}
    model = embedding_model or lineage.get("embedding_model") or (man.get("params") or {}).get("embedding_model")
    if not model:  # a subset made without a recipe: the dataset's only embeddings table, if one
        emb = [t for t in dataset.tables() if t.startswith("embeddings/")]
        model = emb[0].split("/", 1)[1] if len(emb) == 1 else None
    final = pa.array(sorted(set(read_subset(dataset, subset))), pa.string())
    origin = None if lineage else _subset_lineage(subset, man, len(final))
    out: dict[str, Any] = {"dataset": str(dataset.root), "subset": subset, "lineage": lineage, "origin": origin,
                           "made_by": "curate run (recipe " + str(lineage.get("recipe")) + ")" if lineage else origin["made_by"],
                           "recipe_text": man.get("recipe_text"), "manifest": man, "model": model,
                           "evaluations": [e for e in man.get("evaluations", []) if isinstance(e, dict) and e.get("results")]}

    # funnel: pool -> download -> recipe stages (or the one step that made the subset)
    steps: list[dict] = []
    if dataset.has_table("samples"):
        steps.append({"name": "pool (ingested samples)", "count": dataset.count("samples"), "reasons": {}})
        if dataset.has_table("downloads"):
            d = dataset.read("downloads", columns=["status", "error_class"])
            ok = pc.sum(pc.equal(d.column("status"), "success")).as_py() or 0
            failed = d.filter(pc.not_equal(d.column("status"), "success")).column("error_class")
            reasons = {r["values"] or "unknown": r["counts"] for r in pc.value_counts(failed.combine_chunks()).to_pylist()} if len(failed) else {}
            steps.append({"name": "downloaded", "count": ok, "reasons": dict(sorted(reasons.items()))})
    for s in lineage.get("stages", []):
        if s.get("enabled") is False:
            continue
        removed = {k: v for k, v in s.get("reasons", {}).items() if k != "kept"}
        steps.append({"name": f"{s['name']} ({s['kind']})", "count": s["output_count"], "reasons": removed,
                      "cached": s.get("cached"), "seconds": s.get("seconds"), "input": s["input_count"]})
    if origin:
        steps.append({"name": f"subset {subset} ({origin['kind']})", "count": len(final), "reasons": origin["reasons"]})
    out["funnel"] = steps

    # the "before" population for distributions: --pool-subset, else every downloaded sample
    if pool_subset:
        before = pa.array(sorted(set(read_subset(dataset, pool_subset))), pa.string())
        out["before_label"] = f"subset {pool_subset}"
    elif dataset.has_table("downloads"):
        d = dataset.read("downloads", columns=["uid", "status"])
        before = d.filter(pc.equal(d.column("status"), "success")).column("uid").combine_chunks()
        out["before_label"] = "downloaded"
    elif dataset.has_table("samples"):
        before = dataset.read("samples", columns=["uid"]).column("uid").combine_chunks()
        out["before_label"] = "ingested"
    else:
        before = final
        out["before_label"] = subset
    out["before_count"], out["after_count"] = len(before), len(final)
    dists: dict[str, Any] = {}
    samples = dataset.read("samples", columns=["uid", "text"]) if dataset.has_table("samples") else None
    if samples is not None:
        wc = pc.list_value_length(pc.utf8_split_whitespace(samples.column("text")))
        st = pa.table({"uid": samples.column("uid"), "words": wc})
        dists["caption_words"] = {"pool": _uids_in(st, before).column("words").to_numpy(zero_copy_only=False),
                                  "curated": _uids_in(st, final).column("words").to_numpy(zero_copy_only=False)}
    if model and dataset.has_table(f"embeddings/{model}"):
        e = dataset.read(f"embeddings/{model}", columns=["uid", "clip_score"])
        dists["clip_score"] = {"pool": _uids_in(e, before).column("clip_score").to_numpy(zero_copy_only=False),
                               "curated": _uids_in(e, final).column("clip_score").to_numpy(zero_copy_only=False)}
    lang = _languages(dataset, samples, before, final)
    if lang:
        dists["language"] = lang
    clusters = _find_tables_with(dataset, {"uid", "cluster_id"}, prefix="clusters/")
    if clusters:
        # the clustering this run made, else the most recently written one
        own = [t for t in clusters if t == f"clusters/recipe-{lineage.get('recipe')}"]
        name = own[0] if own else max(clusters, key=lambda t: max(p.stat().st_mtime for p in dataset.shards(t)))
        clusters = [name]
        c = dataset.read(name, columns=["uid", "cluster_id"])
        sizes_before = pc.value_counts(_uids_in(c, before).column("cluster_id").combine_chunks()).field("counts")
        sizes_after = pc.value_counts(_uids_in(c, final).column("cluster_id").combine_chunks()).field("counts")
        dists["cluster_sizes"] = {"table": clusters[0], "pool": sizes_before.to_numpy(), "curated": sizes_after.to_numpy()}
    meta = _metadata_counts(dataset, before, final)
    if meta:
        dists["metadata_entries"] = meta
    out["distributions"] = dists

    # galleries: per stage, a few kept and a few per removal reason, with value/detail; a subset
    # without decisions (select, import) shows selected vs not-selected samples of the "before" set
    texts = dict(zip(samples.column("uid").to_pylist(), samples.column("text").to_pylist())) if samples is not None else {}
    dec_name = _decisions_table(dataset, man, lineage)
    if dec_name:
        dec = dataset.read(dec_name)
        if lineage:
            stages = [(s["name"], s["kind"]) for s in lineage.get("stages", []) if s.get("enabled") is not False]
        else:
            stages = [(n, origin["kind"]) for n in sorted(set(dec.column("stage").to_pylist()))]
        groups_by_stage = []
        for name, kind in stages:
            rows = dec.filter(pc.equal(dec.column("stage"), name))
            groups = []
            for reason in sorted(set(rows.column("reason").to_pylist()), key=lambda r: (r == "kept", r)):
                r = rows.filter(pc.equal(rows.column("reason"), reason))
                pick = set(_stable_pick(r.column("uid").to_pylist(), per_reason, name + reason))
                items = [{"uid": u, "value": v, "detail": dt, "text": texts.get(u, "")}
                         for u, v, dt in zip(r.column("uid").to_pylist(), r.column("value").to_pylist(),
                                             r.column("detail").to_pylist()) if u in pick]
                groups.append({"reason": reason, "count": r.num_rows, "items": items})
            groups_by_stage.append({"stage": name, "kind": kind, "groups": groups})
    else:
        not_chosen = before.filter(pc.invert(pc.is_in(before, value_set=final))).to_pylist()
        groups = [{"reason": f"not selected (of {out['before_label']})", "uids": not_chosen},
                  {"reason": "kept", "uids": final.to_pylist()}]
        groups_by_stage = [{"stage": subset, "kind": origin["kind"] if origin else "subset", "groups": [
            {"reason": g["reason"], "count": len(g["uids"]),
             "items": [{"uid": u, "value": None, "detail": None, "text": texts.get(u, "")}
                       for u in _stable_pick(g["uids"], per_reason, subset + g["reason"])]}
            for g in groups if g["uids"]]}] if len(final) else []
    galleries = [g for g in groups_by_stage if g["groups"]]
    thumbs = thumbnails(dataset, [it["uid"] for g in galleries for grp in g["groups"] for it in grp["items"]])
    for g in galleries:
        for grp in g["groups"]:
            for it in grp["items"]:
                it["thumb"] = thumbs.get(it["uid"])
    out["galleries"] = galleries
    from curate.report.perceptual import perceptual_groups

    out["perceptual_groups"] = perceptual_groups(dataset, dec_name, texts)
    from curate.metaclip.report import language_section

    out["metaclip_languages"] = language_section(dataset, subset, lineage)  # worldwide MetaCLIP only
    return out


def _languages(dataset: Dataset, samples, before: pa.Array, final: pa.Array, limit: int = 5000) -> dict | None:
    """Language label shares before/after: from text_stats when present, else fastText on a sample."""
    if dataset.has_table("text_stats"):
        t = dataset.read("text_stats", columns=["uid", "language"])
    elif samples is not None:
        try:
            from curate.filters.langid import load_model, predict_languages
        except ImportError:
            return None
        pool_uids = _stable_pick(before.to_pylist(), limit, "lang")
        both = pa.array(sorted(set(pool_uids) | set(_stable_pick(final.to_pylist(), limit, "lang"))), pa.string())
        s = _uids_in(samples, both)
        try:
            labels, _ = predict_languages(s.column("text"), load_model())
        except Exception:  # no language model here: the section is left out, not the report
            return None
        t = pa.table({"uid": s.column("uid"), "language": labels})
    else:
        return None
    def shares(uids):
        col = _uids_in(t, uids).column("language").fill_null("none").combine_chunks()
        vc = {r["values"]: r["counts"] for r in pc.value_counts(col).to_pylist()}
        n = max(1, sum(vc.values()))
        return {k: v / n for k, v in vc.items()}, sum(vc.values())
    b, nb = shares(before)
    a, na = shares(final)
    top = sorted(set(b) | set(a), key=lambda k: -(b.get(k, 0) + a.get(k, 0)))[:12]
    return {"labels": top, "pool": [b.get(k, 0) for k in top], "curated": [a.get(k, 0) for k in top],
            "n_pool": nb, "n_curated": na}


def _metadata_counts(dataset: Dataset, before: pa.Array, final: pa.Array) -> dict | None:
    """Matches per metadata entry before/after, from MetaCLIP's metadata_matches (uid, entry_ids)."""
    if not dataset.has_table("metadata_matches"):
        return None
    t = dataset.read("metadata_matches", columns=["uid", "entry_ids"])

    def per_entry(uids):
        ids = pc.list_flatten(_uids_in(t, uids).column("entry_ids").combine_chunks())
        return pc.value_counts(ids).field("counts").to_numpy() if len(ids) else np.array([], np.int64)

    b, a = per_entry(before), per_entry(final)
    if not len(b):
        return None
    return {"table": "metadata_matches", "pool": b, "curated": a}


def load_evals(evals: dict[str, Path], comparison: Path | None) -> dict:
    """Eval JSON files (label -> path) flattened to numbers, and the multi-seed comparison."""
    runs = {}
    for label, p in evals.items():
        try:
            runs[label] = _flatten(json.loads(Path(p).read_text()))
        except (OSError, ValueError) as e:
            raise DatasetError(f"{p}: cannot read evaluation results ({e})") from e
    comp = None
    if comparison is not None:
        try:
            comp = json.loads(Path(comparison).read_text())
        except (OSError, ValueError) as e:
            raise DatasetError(f"{comparison}: cannot read comparison ({e})") from e
    return {"runs": runs, "comparison": comp}


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
        stds[a["name"]] = [float(np.std(vals[m])) if len(vals[m]) > 1 else 0.0 for m in metrics]
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
        rows.append({"name": s["name"], "count": s["count"],
                     "removed": None if prev is None else prev - s["count"],
                     "reasons": sorted(s["reasons"].items(), key=lambda kv: -kv[1]), "run": run})
        prev = s["count"]
    return {"rows": rows, "chart": plots.funnel([s["name"] for s in steps], [s["count"] for s in steps])}


def _dist_view(d: dict) -> list[tuple[str, str]]:
    imgs = []
    if "clip_score" in d:
        imgs.append(("CLIP score", plots.histogram(d["clip_score"], "CLIP score (image-text cosine)", "clip_score")))
    if "caption_words" in d:
        cw = {k: np.minimum(v, 60) for k, v in d["caption_words"].items()}
        imgs.append(("caption length", plots.histogram(cw, "Caption length (words, capped at 60)", "words", bins=30)))
    if "language" in d:
        lg = d["language"]
        imgs.append(("language", plots.grouped_bars(lg["labels"], {"pool": lg["pool"], "curated": lg["curated"]},
                                                    f"Caption language (fastText; n={lg['n_pool']:,} / {lg['n_curated']:,})",
                                                    "share of samples")))
    if "cluster_sizes" in d:
        cs = d["cluster_sizes"]
        imgs.append(("cluster sizes", plots.histogram({"pool": cs["pool"], "curated": cs["curated"]},
                                                       f"Samples per cluster ({cs['table']})", "cluster size",
                                                       bins=30, share=False)))
    if "metadata_entries" in d:
        me = d["metadata_entries"]
        imgs.append(("metadata entries", plots.histogram({"before balancing": np.log10(me["pool"]),
                                                          "after": np.log10(me["curated"])},
                                                         f"Matches per metadata entry ({me['table']})",
                                                         "log10(matches)", bins=30, share=False, log=True)))
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
        title=title, css=CSS, data=data, cards=cards, code=cv, warnings=guard_warnings(data.get("manifest") or {}),
        stamp=_dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        funnel=_funnel_view(data["funnel"]), evaluation=_eval_view(evals or {}),
        distributions=_dist_view(data["distributions"]), galleries=data["galleries"],
        lineage=_lineage_view(data), recipe_text=data.get("recipe_text"), coverage=coverage)


def subset_evaluations(data: dict, explicit: dict[str, Path]) -> tuple[dict[str, Path], list[str]]:
    """The evaluations the subset's manifest lists (curate eval links them), beside --eval ones.

    Returns label -> results path, and the listed files that are gone (shown, not fatal)."""
    seen = {Path(p).resolve() for p in explicit.values()}
    found: dict[str, Path] = {}
    missing: list[str] = []
    for i, e in enumerate(data.get("evaluations") or []):
        p = Path(e["results"])
        if p.resolve() in seen:
            continue
        if not p.is_file():
            missing.append(str(p))
            continue
        label = f"{data['subset']} seed {e['seed']}" if e.get("seed") is not None else f"{data['subset']} #{i + 1}"
        while label in explicit or label in found:
            label += "'"
        found[label] = p
        seen.add(p.resolve())
    return found, missing


def build_report(dataset: Dataset, subset: str, out: Path | None = None, evals: dict[str, Path] | None = None,
                 comparison: Path | None = None, pool_subset: str | None = None,
                 embedding_model: str | None = None, title: str | None = None) -> Path:
    """Write the report (default ``DATASET/reports/<subset>.html``); returns its path."""
    data = collect(dataset, subset, pool_subset=pool_subset, embedding_model=embedding_model)
    listed, missing = subset_evaluations(data, evals or {})
    ev = load_evals({**(evals or {}), **listed}, comparison)
    ev["missing"] = missing
    from curate.report.coverage import coverage_section

    page = render(data, ev, title, coverage=coverage_section(dataset, subset))
    out = Path(out) if out else dataset.root / "reports" / f"{subset}.html"
    atomic_write_bytes(out, page.encode("utf-8"))
    return out
