"""Build the static, self-contained HTML report of a curation run.

Everything is inline (CSS, PNG charts and JPEG thumbnails as data URIs), so the file can be
mailed, attached to an issue or opened offline. Sections appear when their data exists:
funnel (lineage of ``curate run`` plus ingest/download counts), distributions (CLIP score,
caption length, language, cluster sizes, metadata entry counts), galleries of kept and
removed samples per stage, and evaluation results side by side.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import html
import json
from pathlib import Path
from typing import Any

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

E = html.escape


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


def collect(dataset: Dataset, subset: str, pool_subset: str | None = None, embedding_model: str | None = None,
            per_reason: int = 6) -> dict:
    """Everything the report shows, as plain data (tested apart from the HTML)."""
    if subset not in list_subsets(dataset):
        raise DatasetError(f"subset {subset!r} not found in {dataset.root / 'subsets'} "
                           f"(have: {', '.join(list_subsets(dataset)) or 'none'})")
    man = read_subset_manifest(dataset, subset)
    lineage = man.get("lineage") or {}
    model = embedding_model or lineage.get("embedding_model")
    final = pa.array(sorted(set(read_subset(dataset, subset))), pa.string())
    out: dict[str, Any] = {"dataset": str(dataset.root), "subset": subset, "lineage": lineage,
                           "recipe_text": man.get("recipe_text"), "manifest": man, "model": model}

    # funnel: pool -> download -> recipe stages
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
    if not lineage:
        steps.append({"name": f"subset {subset}", "count": len(final), "reasons": {}})
    out["funnel"] = steps

    # the "before" population for distributions: the recipe's input (else every downloaded sample)
    if pool_subset:
        before = pa.array(sorted(set(read_subset(dataset, pool_subset))), pa.string())
    elif dataset.has_table("downloads"):
        d = dataset.read("downloads", columns=["uid", "status"])
        before = d.filter(pc.equal(d.column("status"), "success")).column("uid").combine_chunks()
    elif dataset.has_table("samples"):
        before = dataset.read("samples", columns=["uid"]).column("uid").combine_chunks()
    else:
        before = final
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

    # galleries: per stage, a few kept and a few per removal reason, with value/detail
    galleries = []
    dec_name = lineage.get("decisions")
    if dec_name and dataset.has_table(dec_name):
        dec = dataset.read(dec_name)
        texts = dict(zip(samples.column("uid").to_pylist(), samples.column("text").to_pylist())) if samples is not None else {}
        wanted: list[str] = []
        for s in lineage.get("stages", []):
            if s.get("enabled") is False:
                continue
            rows = dec.filter(pc.equal(dec.column("stage"), s["name"]))
            groups = []
            for reason in sorted(set(rows.column("reason").to_pylist()), key=lambda r: (r == "kept", r)):
                r = rows.filter(pc.equal(rows.column("reason"), reason))
                pick = set(_stable_pick(r.column("uid").to_pylist(), per_reason, s["name"] + reason))
                items = [{"uid": u, "value": v, "detail": dt, "text": texts.get(u, "")}
                         for u, v, dt in zip(r.column("uid").to_pylist(), r.column("value").to_pylist(),
                                             r.column("detail").to_pylist()) if u in pick]
                wanted += [i["uid"] for i in items]
                groups.append({"reason": reason, "count": r.num_rows, "items": items})
            galleries.append({"stage": s["name"], "kind": s["kind"], "groups": groups})
        thumbs = thumbnails(dataset, wanted)
        for g in galleries:
            for grp in g["groups"]:
                for it in grp["items"]:
                    it["thumb"] = thumbs.get(it["uid"])
    out["galleries"] = galleries
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


# ------------------------------------------------------------------ rendering
CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
main{max-width:1100px;margin:0 auto;padding:24px}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;margin:32px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:18px 0 6px}.muted{color:#777}
table{border-collapse:collapse;margin:8px 0;background:#fff}td,th{border:1px solid #ddd;padding:4px 8px;text-align:right}
th{background:#f0f0f0}td.l,th.l{text-align:left}
.cards{display:flex;gap:12px;flex-wrap:wrap}.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:10px 14px}
.card b{display:block;font-size:20px}
.charts{display:flex;flex-wrap:wrap;gap:10px}.charts img{max-width:100%;border:1px solid #eee;background:#fff}
.gallery{display:flex;flex-wrap:wrap;gap:8px;margin-bottom:6px}
.item{width:150px;background:#fff;border:1px solid #ddd;border-radius:4px;padding:4px;font-size:11px;overflow:hidden}
.item img{width:142px;height:112px;object-fit:contain;background:#eee;display:block}
.noimg{width:142px;height:112px;background:#eee;display:flex;align-items:center;justify-content:center;color:#999}
.reason{font-weight:600}.kept{color:#2a7a2a}.removed{color:#b03030}
pre{background:#fff;border:1px solid #ddd;padding:10px;overflow:auto;font-size:12px}
.win{background:#e8f5e9}
"""


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, int):
        return f"{v:,}"
    return E(str(v))


def _funnel_html(steps: list[dict]) -> str:
    if not steps:
        return ""
    rows = []
    prev = None
    for s in steps:
        removed = (prev - s["count"]) if prev is not None else None
        reasons = ", ".join(f"{E(k)}: {v:,}" for k, v in sorted(s["reasons"].items(), key=lambda kv: -kv[1]))
        extra = ""
        if s.get("cached") is not None:
            extra = "cached" if s["cached"] else f"{s.get('seconds', 0):.2f}s"
        rows.append(f"<tr><td class=l>{E(s['name'])}</td><td>{s['count']:,}</td>"
                    f"<td>{'' if removed is None else f'{removed:,}'}</td><td class=l>{reasons}</td>"
                    f"<td class=l>{E(extra)}</td></tr>")
        prev = s["count"]
    chart = plots.funnel([s["name"] for s in steps], [s["count"] for s in steps])
    return ("<h2 id=funnel>Funnel</h2><table><tr><th class=l>step</th><th>samples after</th><th>removed</th>"
            "<th class=l>removal reasons</th><th class=l>run</th></tr>" + "".join(rows) + "</table>"
            f"<div class=charts><img alt='funnel chart' src='{chart}'></div>")


def _dist_html(d: dict) -> str:
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
                                                    "share")))
    if "cluster_sizes" in d:
        cs = d["cluster_sizes"]
        imgs.append(("cluster sizes", plots.histogram({"pool": cs["pool"], "curated": cs["curated"]},
                                                       f"Samples per cluster ({cs['table']})", "cluster size",
                                                       bins=30, density=False)))
    if "metadata_entries" in d:
        me = d["metadata_entries"]
        imgs.append(("metadata entries", plots.histogram({"before balancing": np.log10(me["pool"]),
                                                          "after": np.log10(me["curated"])},
                                                         f"Matches per metadata entry ({me['table']})",
                                                         "log10(matches)", bins=30, density=False, log=True)))
    if not imgs:
        return ""
    return "<h2 id=distributions>Distributions</h2><div class=charts>" + "".join(
        f"<img alt='{E(a)} histogram' src='{src}'>" for a, src in imgs) + "</div>"


def _gallery_html(galleries: list[dict]) -> str:
    if not galleries:
        return ""
    parts = ["<h2 id=galleries>Kept and removed samples per stage</h2>"]
    for g in galleries:
        parts.append(f"<h3>{E(g['stage'])} <span class=muted>({E(g['kind'])})</span></h3>")
        for grp in g["groups"]:
            cls = "kept" if grp["reason"] == "kept" else "removed"
            parts.append(f"<div><span class='reason {cls}'>{E(grp['reason'])}</span> "
                         f"<span class=muted>{grp['count']:,} samples, {len(grp['items'])} shown</span></div><div class=gallery>")
            for it in grp["items"]:
                img = (f"<img alt='sample {E(it['uid'][:8])}' src='{it['thumb']}'>" if it.get("thumb")
                       else "<div class=noimg>no image</div>")
                val = [] if it["value"] is None else [f"value {it['value']:.4g}"]
                if it["detail"]:
                    val.append(E(str(it["detail"])[:60]))
                text = it["text"] if len(it["text"]) <= 120 else it["text"][:117] + "..."
                parts.append(f"<div class=item>{img}<div>{E(text)}</div><div class=muted>{' · '.join(val)}</div></div>")
            parts.append("</div>")
    return "".join(parts)


def _eval_html(ev: dict) -> str:
    parts = []
    comp = ev.get("comparison")
    if comp:
        parts.append(_comparison_html(comp))
    runs = ev.get("runs") or {}
    if runs:
        metrics = sorted({m for r in runs.values() for m in r})
        labels = list(runs)
        head = "".join(f"<th>{E(l)}</th>" for l in labels)
        rows = []
        for m in metrics:
            vals = [runs[l].get(m) for l in labels]
            best = max((v for v in vals if v is not None), default=None)
            cells = "".join(f"<td{' class=win' if v is not None and v == best and len(labels) > 1 else ''}>"
                            f"{'' if v is None else _fmt(v)}</td>" for v in vals)
            rows.append(f"<tr><td class=l>{E(m)}</td>{cells}</tr>")
        parts.append(f"<h3>Evaluation runs</h3><table><tr><th class=l>metric</th>{head}</tr>{''.join(rows)}</table>")
    if not parts:
        return ""
    return "<h2 id=evaluation>Evaluation</h2>" + "".join(parts)


def _comparison_html(comp: dict) -> str:
    """Metrics as rows, training sets as columns (mean ± std over seeds), then the margins."""
    arms = comp.get("arms", [])
    metrics = comp.get("metrics") or sorted({m for a in arms for r in a.get("runs", []) for m in r.get("metrics", {})})
    out = [f"<h3>{E(comp.get('title', 'Trained baselines'))}</h3>"]
    if comp.get("note"):
        out.append(f"<p>{E(comp['note'])}</p>")
    means, stds, per = {}, {}, {}
    for a in arms:
        vals = {m: [r["metrics"][m] for r in a.get("runs", []) if m in r.get("metrics", {})] for m in metrics}
        means[a["name"]] = [float(np.mean(vals[m])) if vals[m] else float("nan") for m in metrics]
        stds[a["name"]] = [float(np.std(vals[m])) if len(vals[m]) > 1 else 0.0 for m in metrics]
        per[a["name"]] = [", ".join(f"{v:.3f}" for v in vals[m]) for m in metrics]
    margins = comp.get("margins") or {}
    def arm_head(a: dict) -> str:
        size = "" if a.get("size") is None else f"{a['size']:,} samples, "
        return f"<th>{E(a['name'])}<br><span class=muted>{size}{len(a.get('runs', []))} seeds</span></th>"

    head = "".join(arm_head(a) for a in arms)
    head += "".join(f"<th>curated − {E(k)}</th>" for k in margins)
    rows = []
    for i, m in enumerate(metrics):
        best = max((means[a["name"]][i] for a in arms), default=None)
        cells = "".join(
            f"<td{' class=win' if means[a['name']][i] == best and len(arms) > 1 else ''} title='seeds: {E(per[a['name']][i])}'>"
            f"{means[a['name']][i]:.3f} ± {stds[a['name']][i]:.3f}</td>" for a in arms)
        cells += "".join(f"<td>{mg.get(m, float('nan')):+.3f}</td>" for mg in margins.values())
        rows.append(f"<tr><td class=l>{E(m)}</td>{cells}</tr>")
    out.append(f"<table><tr><th class=l>metric</th>{head}</tr>{''.join(rows)}</table>")
    if arms and metrics:
        chart = plots.grouped_bars(metrics, {a["name"]: means[a["name"]] for a in arms}, "Mean over seeds (± std)",
                                   "score", errors={a["name"]: stds[a["name"]] for a in arms})
        out.append(f"<div class=charts><img alt='evaluation chart' src='{chart}'></div>")
    if comp.get("samples_seen"):
        out.append(f"<p class=muted>Every model saw {comp['samples_seen']:,} training samples (equal compute).</p>")
    return "".join(out)


def render(data: dict, evals: dict | None = None, title: str | None = None) -> str:
    lin = data.get("lineage") or {}
    title = title or f"curate report: {data['subset']}"
    cards = [("pool", data["funnel"][0]["count"] if data["funnel"] else data["before_count"]),
             ("recipe input", lin.get("input_count", data["before_count"])), ("curated", data["after_count"])]
    cards_html = "".join(f"<div class=card><span class=muted>{E(k)}</span><b>{v:,}</b></div>" for k, v in cards)
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    cv = code_version()
    lineage_rows = "".join(
        f"<tr><td class=l>{E(s['name'])}</td><td class=l>{E(s['kind'])}</td><td>{s.get('line', '')}</td>"
        f"<td class=l><code>{E(s.get('cache_key', '')[:12])}</code></td><td class=l>{'yes' if s.get('cached') else 'no'}</td>"
        f"<td>{s.get('seconds', 0):.2f}</td><td class=l><code>{E(json.dumps(s.get('params', {}), sort_keys=True))[:200]}</code></td></tr>"
        for s in lin.get("stages", []) if s.get("enabled") is not False)
    lineage_html = (f"<h2 id=lineage>Lineage</h2><table><tr><th class=l>stage</th><th class=l>kind</th><th>line</th>"
                    f"<th class=l>cache key</th><th class=l>cached</th><th>seconds</th><th class=l>params</th></tr>"
                    f"{lineage_rows}</table>") if lineage_rows else ""
    recipe = f"<h3>Recipe</h3><pre>{E(data['recipe_text'])}</pre>" if data.get("recipe_text") else ""
    body = "".join([
        f"<h1>{E(title)}</h1><p class=muted>dataset {E(data['dataset'])} · subset <b>{E(data['subset'])}</b>"
        f"{' · embedding model ' + E(data['model']) if data.get('model') else ''} · {E(stamp)} · curate {E(cv.get('curate', ''))}"
        f"{' @ ' + E(cv['git_commit'][:10]) if cv.get('git_commit') else ''}</p>",
        f"<div class=cards>{cards_html}</div>",
        _eval_html(evals or {}),
        _funnel_html(data["funnel"]),
        _dist_html(data["distributions"]),
        _gallery_html(data["galleries"]),
        lineage_html, recipe,
    ])
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{E(title)}</title>"
            f"<meta name=viewport content='width=device-width,initial-scale=1'><style>{CSS}</style></head>"
            f"<body><main>{body}</main></body></html>\n")


def build_report(dataset: Dataset, subset: str, out: Path | None = None, evals: dict[str, Path] | None = None,
                 comparison: Path | None = None, pool_subset: str | None = None,
                 embedding_model: str | None = None, title: str | None = None) -> Path:
    """Write the report (default ``DATASET/reports/<subset>.html``); returns its path."""
    data = collect(dataset, subset, pool_subset=pool_subset, embedding_model=embedding_model)
    ev = load_evals(evals or {}, comparison)
    page = render(data, ev, title)
    out = Path(out) if out else dataset.root / "reports" / f"{subset}.html"
    atomic_write_bytes(out, page.encode("utf-8"))
    return out
