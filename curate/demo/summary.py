"""The demo's results: the arms' comparison (means, margins, per-seed wins), the curation's
quality against the generator's truth, and the summary printed at the end."""

from __future__ import annotations

from pathlib import Path

from typing import TYPE_CHECKING

import numpy as np

from curate.progress import info

if TYPE_CHECKING:
    from curate.demo.config import DemoConfig

ARMS = ("raw", "random", "curated")


def compare_arms(cfg: DemoConfig, results: dict, sizes: dict, model_id: str) -> dict:
    metrics = sorted({m for runs in results.values() for r in runs for m in r["metrics"]})
    means = {arm: {m: float(np.mean([r["metrics"][m] for r in runs if m in r["metrics"]])) for m in metrics}
             for arm, runs in results.items()}
    margins = {other: {m: means["curated"][m] - means[other][m] for m in metrics} for other in ("raw", "random")}
    # per-seed wins: how often curated beats each baseline on the headline metric with the same seed
    head = "zeroshot_top1"
    wins = {other: sum(c["metrics"].get(head, 0) > o["metrics"].get(head, 0)
                       for c, o in zip(results["curated"], results[other])) for other in ("raw", "random")}
    return {
        "title": f"Tiny CLIP baselines: {cfg.samples_seen:,} samples seen each, {len(cfg.seeds)} seeds",
        "note": ("Same model, preset, batch size and samples seen for every arm; only the training subset "
                 "differs. raw = every downloaded sample; random = a uniform sample of raw as large as "
                 "curated; curated = the demo recipe (filters scored by a DFN trained on a clean seed set). "
                 "Evaluated on a separately generated clean set (zero-shot colour+shape classes, retrieval)."),
        "samples_seen": cfg.samples_seen, "metrics": metrics, "scorer": model_id,
        "arms": [{"name": arm, "size": sizes[arm], "runs": results[arm]} for arm in ARMS],
        "means": means, "margins": margins, "seed_wins_zeroshot_top1": wins,
    }


def curation_quality(ds, gen_dir: Path, subset: str) -> dict:
    """Share of each noise kind in raw vs the curated subset, from the generator's ground truth;
    with the truth's duplicate sources, the redundant copies left (members of a true duplicate
    group beyond the first) and the perceptual stage's precision and recall."""
    import pyarrow.parquet as pq

    from curate.subset import read_subset

    tt = pq.read_table(gen_dir / "truth.parquet")
    truth = tt.select([c for c in ("url", "noise", "source") if c in tt.column_names]).to_pylist()
    by_path = {t["url"].split("/img/", 1)[1]: t for t in truth}
    samples = ds.read("samples", columns=["uid", "url"])
    row_of = {u: by_path.get(url.split("/img/", 1)[-1], {}) for u, url in
              zip(samples.column("uid").to_pylist(), samples.column("url").to_pylist())}
    out: dict = {}
    for name in ("raw", subset):
        uids = read_subset(ds, name)
        counts: dict[str, int] = {}
        for u in uids:
            k = row_of.get(u, {}).get("noise", "?")
            counts[k] = counts.get(k, 0) + 1
        out[name] = {"n": len(uids), "share": {k: round(v / max(1, len(uids)), 4) for k, v in sorted(counts.items())}}
        if "source" in tt.column_names:
            sources = [row_of.get(u, {}).get("source") for u in uids]
            out[name]["redundant_copies"] = round((len(uids) - len(set(sources))) / max(1, len(uids)), 4)
            # the near-duplicate share: copies of a picture beyond one, in the groups that hold a
            # web-style copy (labelled near_duplicate); a group's one survivor is not a duplicate
            # in the subset, whichever member it is
            groups: dict = {}
            for u, src in zip(uids, sources):
                groups.setdefault(src, []).append(row_of.get(u, {}).get("noise"))
            extra = sum(len(g) - 1 for g in groups.values() if len(g) > 1 and "near_duplicate" in g)
            out[name]["near_duplicate_copies"] = round(extra / max(1, len(uids)), 4)
    if "source" in tt.column_names:
        out["perceptual"] = perceptual_quality(ds, {u: r.get("source") for u, r in row_of.items()})
    return out


def perceptual_quality(ds, source: dict) -> dict | None:
    """Precision (removals whose survivor shows the same source picture), recall (redundant
    copies in the stage's input that it removed) and distinct pictures removed, of the recipe's
    perceptual_dedup stage, against the generator's truth."""
    runs = [t for t in ds.tables() if t.startswith("decisions/recipe-") and t.endswith("perceptual_dedup")]
    if not runs:
        return None
    dec = ds.read(runs[0], columns=["uid", "kept", "reason", "detail"]).to_pylist()
    removed = [d for d in dec if d["reason"] == "perceptual_duplicate"]
    good = sum(source.get(d["uid"]) == source.get(d["detail"]) for d in removed)
    inputs = [source.get(d["uid"]) for d in dec if d["reason"] in ("kept", "perceptual_duplicate")]
    redundant = len(inputs) - len(set(inputs))
    kept_sources = {source.get(d["uid"]) for d in dec if d["kept"]}
    lost = len(set(inputs) - kept_sources)
    return {"table": runs[0], "input": len(inputs), "removed": len(removed), "true_removals": good,
            "precision": round(good / len(removed), 4) if removed else None,
            "redundant_in_input": redundant, "recall": round(good / redundant, 4) if redundant else None,
            "distinct_pictures_lost": lost, "distinct_lost_share": round(lost / max(1, len(set(inputs))), 4)}


def _short(metric: str) -> str:
    return (metric.replace("retrieval_image_to_text_", "retrieval i->t ").replace("retrieval_text_to_image_", "retrieval t->i ")
            .replace("zeroshot_", "zero-shot ").replace("_", " "))


def _share(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def print_summary(comparison: dict, summary: dict) -> None:
    info("")
    info(comparison["title"])
    metrics = comparison["metrics"]
    arms = comparison["arms"]
    # One row a metric, one column an arm (mean ± std over seeds), then the margins: fits 100 columns.
    others = list(comparison["margins"])
    heads = [f"{a['name']} ({a['size']:,})" for a in arms]
    info(f"{'metric':<31}" + "".join(f"{h:>17}" for h in heads) + "".join(f"{'cur-' + o:>11}" for o in others))
    for m in metrics:
        cells = []
        for a in arms:
            v = [r["metrics"][m] for r in a["runs"] if m in r["metrics"]]
            cells.append(f"{np.mean(v):>9.3f} ± {np.std(v, ddof=1) if len(v) > 1 else 0.0:.3f}")  # sample std
        info(f"{_short(m):<31}" + "".join(f"{c:>17}" for c in cells)
             + "".join(f"{comparison['margins'][o].get(m, float('nan')):>+11.3f}" for o in others))
    n_seeds = len(arms[0]["runs"]) if arms else 0
    wins = comparison["seed_wins_zeroshot_top1"]
    info("seeds where curated beats (zero-shot top-1): "
         + ", ".join(f"{other} {n} of {n_seeds}" for other, n in wins.items()))
    q = summary["curation_quality"]
    info("noise share raw -> curated: " + ", ".join(
        f"{k} {q['raw']['share'].get(k, 0):.1%}->{q['curated']['share'].get(k, 0):.1%}"
        for k in sorted(q["raw"]["share"]) if k != "clean"))
    if "redundant_copies" in q["raw"]:
        info(f"redundant copies (true duplicate groups beyond one) raw -> curated: "
             f"{q['raw']['redundant_copies']:.1%} -> {q['curated']['redundant_copies']:.1%}, of them near-duplicate "
             f"copies {q['raw']['near_duplicate_copies']:.1%} -> {q['curated']['near_duplicate_copies']:.1%}")
    p = q.get("perceptual")
    if p:
        info(f"perceptual stage ({p['table']}): removed {p['removed']:,} of {p['input']:,}, "
             f"{p['true_removals']:,} true copies (precision {_share(p['precision'])}, recall "
             f"{_share(p['recall'])} of {p['redundant_in_input']:,} redundant), "
             f"{p['distinct_pictures_lost']:,} distinct pictures lost ({p['distinct_lost_share']:.1%})")
    info(f"report: {summary['report']}   total {summary['total_s']:.0f}s")
