"""What a report shows, gathered as plain data: the funnel, the "before" population, the
distributions (``curate.report.distributions``), the galleries of kept and removed samples,
the lineage of a subset made without a recipe, and evaluation results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.errors import DatasetError
from curate.report.distributions import distributions, stable_pick
from curate.report.images import thumbnails
from curate.subset import list_subsets, read_subset, read_subset_manifest
from curate.tables import Dataset


def _flatten(obj: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = float(obj)
    return out


def default_subset(dataset: Dataset) -> str:
    """The output of the most recent ``curate run`` on this dataset, else its only subset."""
    subsets = list_subsets(dataset)
    runs = [p for p in storage.list_files(dataset.runs_dir())
            if storage.basename(p).startswith("recipe-") and p.endswith(".json")]
    runs.sort(key=lambda p: storage.fingerprint(p)[1])
    for p in reversed(runs):
        out = (json.loads(storage.read_bytes(p)).get("lineage") or {}).get("output")
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
        raise DatasetError(f"subset {subset!r} not found in {dataset.path('subsets')} "
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
    out["funnel"] = _funnel(dataset, subset, lineage, origin, len(final))
    before, out["before_label"] = _before_population(dataset, subset, pool_subset, final)
    out["before_count"], out["after_count"] = len(before), len(final)
    samples = dataset.read("samples", columns=["uid", "text"]) if dataset.has_table("samples") else None
    out["distributions"] = distributions(dataset, model, lineage, samples, before, final)
    texts = dict(zip(samples.column("uid").to_pylist(), samples.column("text").to_pylist())) if samples is not None else {}
    dec_name = _decisions_table(dataset, man, lineage)
    out["galleries"] = _galleries(dataset, subset, dec_name, lineage, origin, texts, before, final,
                                  out["before_label"], per_reason)
    from curate.report.perceptual import perceptual_groups

    out["perceptual_groups"] = perceptual_groups(dataset, dec_name, texts)
    from curate.metaclip.report import language_section

    out["metaclip_languages"] = language_section(dataset, subset, lineage)  # worldwide MetaCLIP only
    return out


def _funnel(dataset: Dataset, subset: str, lineage: dict, origin: dict | None, final_count: int) -> list[dict]:
    """Pool -> download -> recipe stages (or the one step that made the subset)."""
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
        steps.append({"name": f"subset {subset} ({origin['kind']})", "count": final_count, "reasons": origin["reasons"]})
    return steps


def _before_population(dataset: Dataset, subset: str, pool_subset: str | None, final: pa.Array) -> tuple[pa.Array, str]:
    """The "before" population for distributions and its label: --pool-subset, else every
    downloaded sample, else every ingested one."""
    if pool_subset:
        return pa.array(sorted(set(read_subset(dataset, pool_subset))), pa.string()), f"subset {pool_subset}"
    if dataset.has_table("downloads"):
        d = dataset.read("downloads", columns=["uid", "status"])
        return d.filter(pc.equal(d.column("status"), "success")).column("uid").combine_chunks(), "downloaded"
    if dataset.has_table("samples"):
        return dataset.read("samples", columns=["uid"]).column("uid").combine_chunks(), "ingested"
    return final, subset


def _galleries(dataset: Dataset, subset: str, dec_name: str | None, lineage: dict, origin: dict | None, texts: dict,
               before: pa.Array, final: pa.Array, before_label: str, per_reason: int) -> list[dict]:
    """Per stage, a few kept and a few per removal reason, with value/detail and thumbnails; a
    subset without decisions (select, import) shows selected vs not-selected samples of the
    "before" set."""
    if dec_name:
        groups_by_stage = _decision_groups(dataset.read(dec_name), lineage, origin, texts, per_reason)
    else:
        not_chosen = before.filter(pc.invert(pc.is_in(before, value_set=final))).to_pylist()
        groups = [{"reason": f"not selected (of {before_label})", "uids": not_chosen},
                  {"reason": "kept", "uids": final.to_pylist()}]
        groups_by_stage = [{"stage": subset, "kind": origin["kind"] if origin else "subset", "groups": [
            {"reason": g["reason"], "count": len(g["uids"]),
             "items": [{"uid": u, "value": None, "detail": None, "text": texts.get(u, "")}
                       for u in stable_pick(g["uids"], per_reason, subset + g["reason"])]}
            for g in groups if g["uids"]]}] if len(final) else []
    galleries = [g for g in groups_by_stage if g["groups"]]
    thumbs = thumbnails(dataset, [it["uid"] for g in galleries for grp in g["groups"] for it in grp["items"]])
    for g in galleries:
        for grp in g["groups"]:
            for it in grp["items"]:
                it["thumb"] = thumbs.get(it["uid"])
    return galleries


def _decision_groups(dec: pa.Table, lineage: dict, origin: dict | None, texts: dict, per_reason: int) -> list[dict]:
    """A stable pick of each stage's decisions per reason (kept last)."""
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
            pick = set(stable_pick(r.column("uid").to_pylist(), per_reason, name + reason))
            items = [{"uid": u, "value": v, "detail": dt, "text": texts.get(u, "")}
                     for u, v, dt in zip(r.column("uid").to_pylist(), r.column("value").to_pylist(),
                                         r.column("detail").to_pylist()) if u in pick]
            groups.append({"reason": reason, "count": r.num_rows, "items": items})
        groups_by_stage.append({"stage": name, "kind": kind, "groups": groups})
    return groups_by_stage


def load_evals(evals: dict[str, Path], comparison: Path | None) -> dict:
    """Eval JSON files (label -> path) flattened to numbers, and the multi-seed comparison."""
    runs = {}
    for label, p in evals.items():
        try:
            runs[label] = _flatten(json.loads(storage.read_bytes(p)))
        except (OSError, ValueError) as e:
            raise DatasetError(f"{p}: cannot read evaluation results ({e})") from e
    comp = None
    if comparison is not None:
        try:
            comp = json.loads(storage.read_bytes(comparison))
        except (OSError, ValueError) as e:
            raise DatasetError(f"{comparison}: cannot read comparison ({e})") from e
    return {"runs": runs, "comparison": comp}
