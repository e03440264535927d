"""What a report shows, gathered as plain data: the funnel, the "before" population, the
distributions (``curate.report.distributions``), the galleries of kept and removed samples,
the lineage of a subset made without a recipe, and evaluation results."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pyarrow as pa

from curate import storage
from curate.errors import DatasetError
from curate.report.distributions import distributions
from curate.report.frames import rows_for_keys, stable_sample, table_frame
from curate.report.images import thumbnails
from curate.subset import list_subsets, read_subset_manifest
from curate.tables import Dataset

MAX_REASONS = 10_000  # distinct (stage, reason) or (status, error) pairs; more is a bug


def _flatten(obj: Any, prefix: str = "") -> dict[str, float | int]:
    """An evaluation JSON's numbers by dotted path; counts stay ints (``n_images`` 50,000, not
    5e+04), scores floats."""
    out: dict[str, float | int] = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        out[prefix] = obj
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
    if not subsets:  # a report is of a subset: say how to make one, not which to pick of none
        raise DatasetError(f"{dataset.root}: no subset to report on yet; make one first (curate run, filter, "
                           "select or dedup)")
    raise DatasetError(f"{dataset.root}: say which subset to report on (--subset); "
                       f"have: {', '.join(subsets) or 'none'}")


# how a subset was made, from its manifest's "stage" (recipes carry a lineage instead)
MADE_BY = {"select_sql": "curate select --sql", "import": "curate select --from-file (imported subset file)",
           "filter": "curate filter", "demo": "curate demo", "semdedup": "curate dedup semantic",
           "exact_dedup": "curate dedup exact", "near_dedup": "curate dedup near",
           "perceptual_dedup": "curate dedup perceptual", "dbp": "curate prune dbp", "ssp": "curate prune ssp",
           "decontaminate": "curate decontaminate", "metaclip_balance": "curate metadata balance"}
# manifest keys that describe the run rather than configure it (left out of the lineage parameters)
_NOT_PARAMS = {"lineage", "evaluations", "trainings", "counts", "reasons", "stage", "seconds", "recipe_text", "input_count",
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


def _decisions_name(man: dict, lineage: dict) -> str | None:
    """The decisions table the subset's manifest names, there or not."""
    name = lineage.get("decisions") or man.get("decisions")
    run = man.get("run")
    if not name and isinstance(run, str) and "/" not in run:
        name = f"decisions/{run}"  # embedding-space stages name their run, not the table
    return name


def _decisions_table(dataset: Dataset, man: dict, lineage: dict) -> str | None:
    name = _decisions_name(man, lineage)
    return name if name and dataset.has_table(name) else None


def collect(dataset: Dataset, subset: str, pool_subset: str | None = None, embedding_model: str | None = None,
            per_reason: int = 6, executor=None) -> dict:
    """Everything the report shows, as plain data (tested apart from the HTML).

    The per-row tables are read by ``executor``'s workers (default: in-process): counts,
    histogram bins and the few samples shown reach the driver, never a table's rows
    (docs/scale-history.md, "report")."""
    from curate.embedding_space.common import subset_uids, uid_frame
    from curate.engine import LocalExecutor

    if subset not in list_subsets(dataset):
        raise DatasetError(f"subset {subset!r} not found in {dataset.path('subsets')} "
                           f"(have: {', '.join(list_subsets(dataset)) or 'none'})")
    ex = executor or LocalExecutor()
    man = read_subset_manifest(dataset, subset)
    lineage = man.get("lineage") or {}
    model = embedding_model or lineage.get("embedding_model") or (man.get("params") or {}).get("embedding_model")
    if not model:  # a subset made without a recipe: the dataset's only embeddings table, if one
        emb = [t for t in dataset.tables() if t.startswith("embeddings/")]
        model = emb[0].split("/", 1)[1] if len(emb) == 1 else None
    final = uid_frame(ex, subset_uids(dataset, subset)).cache()
    final_count = final.count()
    origin = None if lineage else _subset_lineage(subset, man, final_count)
    out: dict[str, Any] = {"dataset": str(dataset.root), "subset": subset, "lineage": lineage, "origin": origin,
                           "made_by": "curate run (recipe " + str(lineage.get("recipe")) + ")" if lineage else origin["made_by"],
                           "recipe_text": man.get("recipe_text"), "manifest": man, "model": model,
                           "evaluations": [e for e in man.get("evaluations", []) if isinstance(e, dict) and e.get("results")]}
    out["funnel"] = _funnel(ex, dataset, subset, lineage, origin, final_count)
    before, out["before_label"] = _before_population(ex, dataset, subset, pool_subset, final)
    before = before.cache()
    out["before_count"], out["after_count"] = before.count(), final_count
    out["distributions"] = distributions(ex, dataset, model, lineage, before, final)
    dec_name = _decisions_table(dataset, man, lineage)
    named = _decisions_name(man, lineage)
    out["notes"] = ([f"{named}, which made this subset, is not in the dataset any more: the galleries show the "
                     f"samples selected and not selected instead of its decisions per reason"]
                    if named and dec_name is None else [])
    out["galleries"] = _galleries(ex, dataset, subset, dec_name, lineage, origin, before, final,
                                  out["before_label"], per_reason)
    from curate.report.perceptual import perceptual_groups

    out["perceptual_groups"] = perceptual_groups(ex, dataset, dec_name)
    items = [it for g in out["galleries"] for grp in g["groups"] for it in grp["items"]]
    items += [it for g in out["perceptual_groups"] for it in [g["survivor"], *g["removed"]]]
    _show(ex, dataset, items)
    before.release()
    final.release()
    from curate.metaclip.report import language_section

    out["metaclip_languages"] = language_section(dataset, subset, lineage)  # worldwide MetaCLIP only
    return out


def _show(executor, dataset: Dataset, items: list[dict]) -> None:
    """Each shown item's caption and thumbnail, read for those uids only."""
    uids = sorted({it["uid"] for it in items})
    texts: dict[str, str] = {}
    if uids and dataset.has_table("samples"):
        t = rows_for_keys(table_frame(executor, dataset, "samples", ["uid", "text"]), "uid",
                          pa.array(uids, pa.string())).collect_small(2 * len(uids))
        texts = dict(zip(t.column("uid").to_pylist(), t.column("text").to_pylist()))
    thumbs = thumbnails(dataset, uids, executor=executor)
    for it in items:
        it["text"] = texts.get(it["uid"]) or ""
        it["thumb"] = thumbs.get(it["uid"])


def _distinct(entry: dict, side: str) -> int:
    """A recipe step's distinct samples (``input``/``output``): its reasons count distinct uids,
    so its removals must too; a lineage from before distinct counts were kept gives its rows."""
    return entry.get(f"{side}_distinct", entry[f"{side}_count"])


def _funnel(executor, dataset: Dataset, subset: str, lineage: dict, origin: dict | None,
            final_count: int) -> list[dict]:
    """Pool -> download -> recipe stages (or the one step that made the subset)."""
    steps: list[dict] = []
    if dataset.has_table("samples"):
        steps.append({"name": "pool (ingested samples)", "count": dataset.count("samples"), "reasons": {}})
        if dataset.has_table("downloads"):
            d = (table_frame(executor, dataset, "downloads", ["uid", "status", "error_class"])
                 .aggregate(["status", "error_class"], {"n": ("uid", "count")}).collect_small(MAX_REASONS))
            ok, reasons = 0, {}
            for status, error, n in zip(d.column("status").to_pylist(), d.column("error_class").to_pylist(),
                                        d.column("n").to_pylist()):
                if status == "success":
                    ok += int(n)
                else:
                    reasons[error or "unknown"] = reasons.get(error or "unknown", 0) + int(n)
            steps.append({"name": "downloaded", "count": ok, "reasons": dict(sorted(reasons.items()))})
    if (lineage and lineage.get("input") not in (None, "all", "downloaded")
            and isinstance(lineage.get("input_count"), int)):
        # a recipe run from a subset: its first stage's input is that subset, not the pool
        name = f"recipe input ({lineage['input']})"
        if lineage.get("input_distinct", lineage["input_count"]) != lineage["input_count"]:
            name += f", {lineage['input_count']:,} rows with repeats"
        steps.append({"name": name, "count": _distinct(lineage, "input"), "reasons": {}})
    for s in lineage.get("stages", []):
        if s.get("enabled") is False:
            continue
        removed = {k: v for k, v in s.get("reasons", {}).items() if k != "kept"}
        steps.append({"name": f"{s['name']} ({s['kind']})", "count": _distinct(s, "output"), "reasons": removed,
                      "cached": s.get("cached"), "seconds": s.get("seconds"), "input": _distinct(s, "input")})
    if origin:
        step = {"name": f"subset {subset} ({origin['kind']})", "count": final_count, "reasons": origin["reasons"]}
        n_in = origin.get("input_count")
        if isinstance(n_in, int) and origin["reasons"]:  # a selection's removals count from its own input
            step["input"] = n_in
            if steps and steps[-1]["count"] != n_in:
                step["name"] += f", of its {n_in:,} input samples"
            if sum(origin["reasons"].values()) > n_in - final_count >= 0:  # several filters removed one sample
                step["name"] += "; a sample removed by several filters counts under each reason"
        steps.append(step)
    return steps


def _before_population(executor, dataset: Dataset, subset: str, pool_subset: str | None, final) -> tuple[Any, str]:
    """The "before" population (a frame of distinct uids) and its label: --pool-subset, else
    every downloaded sample, else every ingested one."""
    from curate.embedding_space.common import subset_uids, uid_frame

    if pool_subset:
        return uid_frame(executor, subset_uids(dataset, pool_subset)), f"subset {pool_subset}"
    if dataset.has_table("downloads"):
        return (table_frame(executor, dataset, "downloads", ["uid", "status"])
                .keep_values("status", pa.array(["success"])).select(["uid"]), "downloaded")
    if dataset.has_table("samples"):
        return table_frame(executor, dataset, "samples", ["uid"]), "ingested"
    return final, subset


def _galleries(executor, dataset: Dataset, subset: str, dec_name: str | None, lineage: dict, origin: dict | None,
               before, final, before_label: str, per_reason: int) -> list[dict]:
    """Per stage, a few kept and a few per removal reason, with value/detail; a subset without
    decisions (select, import) shows selected vs not-selected samples of the "before" set.
    Captions and thumbnails are added by ``_show``."""
    if dec_name:
        return [g for g in _decision_groups(executor, dataset, dec_name, lineage, origin, per_reason) if g["groups"]]
    sides = [(f"not selected (of {before_label})", before.anti_join(final)), ("kept", final)]
    groups = []
    for reason, frame in sides:
        n = frame.count()
        if not n:
            continue
        picked = stable_sample(frame, per_reason, {(): n}, lambda g, r=reason: subset + r)[()]
        groups.append({"reason": reason, "count": n,
                       "items": [{"uid": u, "value": None, "detail": None} for u in picked.column("uid").to_pylist()]})
    if not groups:  # an empty subset still shows what it left out
        return []
    return [{"stage": subset, "kind": origin["kind"] if origin else "subset", "groups": groups}]


DECISION_COLUMNS = ["uid", "stage", "reason", "value", "detail"]


def _decision_groups(executor, dataset: Dataset, dec_name: str, lineage: dict, origin: dict | None,
                     per_reason: int) -> list[dict]:
    """A stable pick of each stage's decisions per reason (kept last), listed by uid."""
    dec = table_frame(executor, dataset, dec_name, DECISION_COLUMNS)
    t = dec.aggregate(["stage", "reason"], {"n": ("uid", "count")}).collect_small(MAX_REASONS)
    counts = {(s, r): int(n) for s, r, n in zip(t.column("stage").to_pylist(), t.column("reason").to_pylist(),
                                                  t.column("n").to_pylist())}
    if lineage:
        stages = [(s["name"], s["kind"]) for s in lineage.get("stages", []) if s.get("enabled") is not False]
    else:
        stages = [(n, origin["kind"]) for n in sorted({s for s, _ in counts})]
    names = {name for name, _ in stages}
    picks = stable_sample(dec, per_reason, {g: n for g, n in counts.items() if g[0] in names},
                          lambda g: g[0] + g[1], groups=("stage", "reason"))
    groups_by_stage = []
    for name, kind in stages:
        groups = []
        for reason in sorted((r for s, r in counts if s == name), key=lambda r: (r == "kept", r)):
            rows = picks[(name, reason)].sort_by([("uid", "ascending")])
            items = [{"uid": u, "value": v, "detail": dt} for u, v, dt in
                     zip(rows.column("uid").to_pylist(), rows.column("value").to_pylist(),
                         rows.column("detail").to_pylist())]
            groups.append({"reason": reason, "count": counts[(name, reason)], "items": items})
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
        _check_comparison(comp, comparison)
    return {"runs": runs, "comparison": comp}


def _check_comparison(comp: Any, path) -> None:
    """The shape `curate demo` writes (comparison.json): {"arms": [{"name", "runs": [{"metrics":
    {name: number}}]}]}; anything else is one line naming where it differs."""
    def bad(where: str, what: str):
        return DatasetError(f"{path}: not a comparison ({where}: {what}; expected "
                            "{\"arms\": [{\"name\": ..., \"runs\": [{\"metrics\": {NAME: NUMBER}}]}]}, "
                            "as curate demo writes comparison.json)")

    if not isinstance(comp, dict) or not isinstance(comp.get("arms"), list):
        raise bad("top level", "no 'arms' list")
    for i, arm in enumerate(comp["arms"]):
        if not isinstance(arm, dict) or not isinstance(arm.get("name"), str) or not isinstance(arm.get("runs"), list):
            raise bad(f"arms[{i}]", "needs a 'name' and a 'runs' list")
        for j, run in enumerate(arm["runs"]):
            metrics = run.get("metrics") if isinstance(run, dict) else None
            if not isinstance(metrics, dict):
                raise bad(f"arms[{i}].runs[{j}]", "no 'metrics' object")
            for m, v in metrics.items():
                if not isinstance(v, (int, float)) or isinstance(v, bool):
                    raise bad(f"arms[{i}].runs[{j}].metrics.{m}", f"{v!r} is not a number")
