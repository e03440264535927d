"""MetaCLIP balance: ``metadata_matches`` shard i -> ``decisions/<run>`` shard i plus sparse kept
counts; the driver writes the subset, ``entry_balance/<run>`` and the distribution report."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.decisions import decisions_table, reason_counts
from curate.engine import worker_cache
from curate.errors import DatasetError
from curate.manifest import RunManifest
from curate.metaclip import balance as bal
from curate.metaclip.matching import load_metadata
from curate.tables import Dataset, load_schema, write_parquet_atomic
from curate.metaclip.job_shards import (ENTRY_BALANCE, ENTRY_COUNTS, LANGUAGE_BALANCE, LANGUAGES, LANGUAGES_COPY, MATCHES,
                                        METADATA_COPY, NO_LANGUAGE, STAGE, check_columns, clear_stale, counts_table,
                                        file_record, input_shards, sum_sparse_counts, write_sparse_counts)


def _probabilities(root: str, t: float) -> np.ndarray:
    ds = Dataset(root)
    stamp = _counts_stamp(ds)

    def build():
        counts = ds.read(ENTRY_COUNTS, columns=["entry_id", "count"]).sort_by("entry_id")
        return bal.entry_probabilities(counts.column("count").to_numpy(), t)

    return worker_cache(("curate.metaclip.probs", root, stamp, t), build)


def _range_probabilities(root: str, thresholds: list) -> np.ndarray:
    from curate.metaclip.worldwide import range_probabilities

    ds = Dataset(root)
    stamp = _counts_stamp(ds)
    key = tuple(tuple(x) for x in thresholds)

    def build():
        counts = ds.read(ENTRY_COUNTS, columns=["entry_id", "count"]).sort_by("entry_id")
        return range_probabilities(counts.column("count").to_numpy(), key)

    return worker_cache(("curate.metaclip.range_probs", root, stamp, key), build)


def _counts_stamp(ds: Dataset) -> tuple:
    """Changes when ``entry_counts`` is rewritten (a worker's cache key)."""
    return tuple(storage.fingerprint(p) for p in ds.shards(ENTRY_COUNTS))


def _balance_language_stats(metadata_lang: list, r: "bal.BalanceResult", entry_ids) -> dict:
    """Per metadata language: samples, matched, kept, and matches of the kept captions."""
    pairs_kept = pc.list_value_length(entry_ids).to_numpy(zero_copy_only=False)
    out: dict = {}
    for lang, n, k, pk in zip(metadata_lang, r.num_entries.tolist(), r.kept.tolist(), pairs_kept.tolist()):
        d = out.setdefault(lang if lang is not None else NO_LANGUAGE,
                           {"samples": 0, "matched": 0, "kept": 0, "pairs_kept": 0})
        d["samples"] += 1
        d["matched"] += int(n > 0)
        d["kept"] += int(k)
        d["pairs_kept"] += int(pk) if k else 0
    return out


def balance_shard_task(task: dict) -> dict:
    """Balance one ``metadata_matches`` shard; writes decisions shard i and kept entry counts."""
    ds = Dataset(task["root"])
    i, run = task["shard"], task["run"]
    worldwide = "thresholds" in task
    probs = _range_probabilities(task["root"], task["thresholds"]) if worldwide else _probabilities(task["root"], task["t"])
    languages: dict = {}
    lang_batches = None
    if worldwide:
        lang_pf = check_columns(ds.shard_path(LANGUAGES, i), ["metadata_lang"])
        lang_batches = lang_pf.iter_batches(batch_size=task.get("batch_size", 65536), columns=["metadata_lang"])
    entries = task["entries"]
    pf = check_columns(task["input"], ["uid", "entry_ids"])
    kept_counts = np.zeros(len(probs), dtype=np.int64)
    parts, reasons = [], {}
    entry_names = None
    for b in pf.iter_batches(batch_size=task.get("batch_size", 65536), columns=["uid", "entry_ids"]):
        r = bal.balance_matches(b.column("uid"), b.column("entry_ids"), probs, task["seed"])
        kept_counts += r.kept_entry_counts
        if worldwide:
            lang_b = next(lang_batches)  # same shard, same row order, same batch size
            if lang_b.num_rows != b.num_rows:
                raise DatasetError(f"{ds.shard_path(LANGUAGES, i)}: rows do not line up with {task['input']}; "
                                   "rerun `curate metadata match`")
            part = _balance_language_stats(lang_b.column(0).to_pylist(), r, b.column("entry_ids"))
            for k, d in part.items():
                t = languages.setdefault(k, {"samples": 0, "matched": 0, "kept": 0, "pairs_kept": 0})
                for f, v in d.items():
                    t[f] += v
        if entry_names is None:
            entry_names = _entry_names(task["root"], entries)
        detail = [entry_names[e] if e >= 0 else None for e in r.first_entry.tolist()]
        dt = decisions_table(b.column("uid"), STAGE, r.kept, bal.decision_reasons(r).tolist(),
                             value=r.p_keep, detail=detail)
        parts.append(dt)
        for k, v in reason_counts(dt).items():
            reasons[k] = reasons.get(k, 0) + v
    schema = load_schema("decisions").arrow()
    table = pa.concat_tables(parts) if parts else schema.empty_table()
    table = table.sort_by([("uid", "ascending")])
    write_sparse_counts(kept_counts, ds.shard_path(counts_table(f"{ENTRY_BALANCE}/{run}"), i))
    write_parquet_atomic(table, ds.shard_path(f"decisions/{run}", i))
    out = {"shard": i, "rows": table.num_rows, **reasons}
    if worldwide:
        out["languages"] = languages
    return out


def _entry_names(root: str, sha: str) -> list[str]:
    return worker_cache(("curate.metaclip.entries", root, sha),
                        lambda: load_metadata(Dataset(root).path(METADATA_COPY)))


def _write_language_balance(dataset: Dataset, run: str, thresholds, stats: list[dict], before: np.ndarray,
                            after: np.ndarray) -> list[dict]:
    """``language_balance/<run>`` (one row per metadata language) and the same rows for the summary."""
    per: dict = {}
    for s in stats:
        for k, d in s.get("languages", {}).items():
            t = per.setdefault(k, {"samples": 0, "matched": 0, "kept": 0, "pairs_kept": 0})
            for f, v in d.items():
                t[f] += v
    rows = []
    for th in thresholds:
        c = before[th.start:th.stop]
        d = per.get(th.lang, {"samples": 0, "matched": 0, "kept": 0, "pairs_kept": 0})
        rows.append({"lang": th.lang, "first_entry_id": th.start, "entries": th.stop - th.start,
                     "entries_matched": int((c > 0).sum()), "pairs": int(c.sum()), "t": th.t,
                     "tail_proportion": th.tail_proportion,
                     "entries_over_t": int((c >= th.t).sum()) if th.t is not None else 0,
                     "samples": d["samples"], "matched": d["matched"], "kept": d["kept"],
                     "pairs_kept": int(after[th.start:th.stop].sum())})
    schema = load_schema(LANGUAGE_BALANCE).arrow()
    dataset.write_table(f"{LANGUAGE_BALANCE}/{run}", pa.Table.from_pylist(rows, schema=schema),
                        schema=LANGUAGE_BALANCE)
    if NO_LANGUAGE in per:  # captions of languages without a list (and no `other`): summary only
        d = per[NO_LANGUAGE]
        rows.append({"lang": NO_LANGUAGE, "entries": 0, "samples": d["samples"], "matched": 0, "kept": 0})
    return rows


def run_balance(dataset: Dataset, executor, *, t: float = bal.DEFAULT_T, t_reference_pool: int | None = None,
                seed: int = 0, name: str = "metaclip", batch_size: int = 65536,
                params: dict | None = None, tail_proportion: float | None = None) -> dict:
    """Balance ``metadata_matches`` with per-entry cap t; writes the subset ``name``,
    ``decisions/<name>``, ``entry_balance/<name>`` and the entry distribution report.

    After a worldwide match (a metadata folder) t is per language (MetaCLIP 2): English keeps
    t, every other language gets ``p_to_t`` of English's tail proportion at t (or of
    ``tail_proportion``); also writes ``language_balance/<name>``."""
    from curate.selection import DECISIONS, write_subset_frame

    shards = input_shards(dataset, MATCHES, "run `curate metadata match` first")
    if not dataset.has_table(ENTRY_COUNTS):
        raise DatasetError(f"table {ENTRY_COUNTS!r} not found in {dataset.root}: run `curate metadata match` first")
    pool = dataset.count(MATCHES)
    t_eff = bal.scaled_t(t, pool, t_reference_pool)
    manifest = RunManifest("metadata-balance", dict(params or {}, t=t, t_reference_pool=t_reference_pool,
                                                    t_effective=t_eff, seed=seed, name=name))
    entry_counts = dataset.read(ENTRY_COUNTS).sort_by("entry_id")
    metadata = file_record(dataset.path(METADATA_COPY))
    entries_sha = metadata["sha256"]
    manifest["inputs"] = [{"table": MATCHES, "shards": len(shards), "rows": pool},
                          {"table": ENTRY_COUNTS, "rows": entry_counts.num_rows}, metadata]
    run = name
    counts_before = entry_counts.column("count").to_numpy()
    p_tail, thresholds = _language_thresholds(dataset, len(shards), counts_before, t_eff, tail_proportion)
    by_language = ({"tail_proportion": p_tail, "t_by_language": {th.lang: th.t for th in thresholds}}
                   if thresholds is not None else {})
    manifest["params"].update(by_language)
    for table in (f"decisions/{run}", f"{ENTRY_BALANCE}/{run}", f"{LANGUAGE_BALANCE}/{run}"):
        clear_stale(dataset, table, 0)
    tasks = _balance_tasks(dataset, shards, run, t_eff, thresholds, seed, entries_sha, batch_size)
    with manifest.stage("balance"):
        stats = executor.map_tasks(tasks, balance_shard_task, "metaclip balance")
    with manifest.stage("subset"):
        decisions = executor.frame_read([str(p) for p in dataset.shards(f"decisions/{run}")], DECISIONS)
        kept = decisions.filter_true("kept").select(["uid"])
        counts_after = _write_entry_balance(dataset, run, entry_counts, t_eff, thresholds)
        reasons = {k: sum(st.get(k, 0) for st in stats)
                   for k in dict.fromkeys(k for st in stats for k in st if k not in ("shard", "rows", "languages"))}
        summary, plot = _distribution_report(dataset, name, entry_counts, counts_after, t_eff, p_tail, thresholds,
                                             stats)
        counts = {"input": pool, **dict(sorted(reasons.items())), "kept_total": int(reasons.get("kept", 0))}
        write_subset_frame(dataset, name, kept, manifest={
            "stage": STAGE, "params": {"t": t, "t_effective": t_eff, "t_reference_pool": t_reference_pool,
                                       "seed": seed, **by_language},
            "decisions": f"decisions/{run}", "counts": counts, "input_count": pool,
            # removals per reason, as every selection's subset records them (the report's funnel)
            "reasons": {k: v for k, v in sorted(reasons.items()) if k != "kept"},
            "entry_distribution": ["entry_distribution.json", plot]}, executor=executor)
    _record_outcome(manifest, counts, reasons, summary, pool, name, plot, thresholds is not None)
    manifest.write(dataset, f"metadata-balance-{name}")
    return manifest.data


def _balance_tasks(dataset: Dataset, shards: list, run: str, t_eff: float, thresholds: list | None, seed: int,
                   entries_sha: str, batch_size: int) -> list[dict]:
    """One task per ``metadata_matches`` shard."""
    # one cap t for all entries, or per language (each language's global entry-id range)
    limit = ({"t": t_eff} if thresholds is None else
             {"thresholds": [[th.start, th.stop, th.t] for th in thresholds]})
    return [{"root": str(dataset.root), "shard": i, "input": str(p), "run": run, **limit, "seed": seed,
             "entries": entries_sha, "batch_size": batch_size} for i, p in enumerate(shards)]


def _record_outcome(manifest: RunManifest, counts: dict, reasons: dict, summary: dict, pool: int, name: str,
                    plot: str, worldwide: bool) -> None:
    """The manifest's counts, entry distribution and outputs (the run's tables are named ``name``)."""
    # the selection count keys (input, kept, removed, reasons) beside the per-reason keys
    kept_n = int(reasons.get("kept", 0))
    manifest["counts"] = {**counts, "kept": kept_n, "removed": pool - kept_n, "reasons": dict(sorted(reasons.items()))}
    manifest["distribution"] = {k: summary[k] for k in ("before", "after")}
    manifest["outputs"] = {"subset": f"subsets/{name}", "decisions": f"decisions/{name}",
                           ENTRY_BALANCE: f"{ENTRY_BALANCE}/{name}", "plot": f"subsets/{name}/{plot}"}
    if worldwide:
        manifest["languages"] = summary["languages"]
        manifest["outputs"][LANGUAGE_BALANCE] = f"{LANGUAGE_BALANCE}/{name}"


def _language_thresholds(dataset: Dataset, shards: int, counts_before: np.ndarray, t_eff: float,
                         tail_proportion: float | None) -> tuple[float | None, list | None]:
    """After a worldwide match: the tail proportion and each language's threshold; else (None, None)."""
    layout_path = dataset.path(LANGUAGES_COPY)
    if not storage.exists(layout_path):
        if tail_proportion is not None:  # it would be dropped in silence: one list has no tail to set
            from curate.errors import CurateError

            raise CurateError("--tail-proportion applies after a worldwide (MetaCLIP 2) match, whose languages "
                              f"each get a t; {dataset.root}'s match used one metadata list (--t alone sets its cap)")
        return None, None
    from curate.metaclip import worldwide as ww

    if len(dataset.shards(LANGUAGES)) != shards:
        raise DatasetError(f"table {LANGUAGES!r} in {dataset.root} does not match {MATCHES!r}: "
                           "rerun `curate metadata match`")
    layout = json.loads(storage.read_bytes(layout_path).decode("utf-8"))
    return ww.language_thresholds(counts_before, [tuple(r) for r in layout["ranges"]], t_eff, tail_proportion)


def _write_entry_balance(dataset: Dataset, run: str, entry_counts: pa.Table, t_eff: float,
                         thresholds: list | None) -> np.ndarray:
    """``entry_balance/<run>``: each entry's count, sampling probability and kept count (summed
    from the tasks' sparse parts); returns the kept counts."""
    counts_before = entry_counts.column("count").to_numpy()
    counts_after = sum_sparse_counts(dataset.shards(counts_table(f"{ENTRY_BALANCE}/{run}")), len(counts_before))
    if thresholds is None:
        probs = bal.entry_probabilities(counts_before, t_eff)
    else:
        from curate.metaclip import worldwide as ww

        probs = ww.range_probabilities(counts_before, [(th.start, th.stop, th.t) for th in thresholds])
    dataset.write_table(f"{ENTRY_BALANCE}/{run}", pa.table({
        "entry_id": entry_counts.column("entry_id"), "entry": entry_counts.column("entry"),
        "count": entry_counts.column("count"), "probability": pa.array(probs),
        "kept": pa.array(counts_after)}), schema=ENTRY_BALANCE)
    return counts_after


def _distribution_report(dataset: Dataset, name: str, entry_counts: pa.Table, counts_after: np.ndarray,
                         t_eff: float, p_tail: float | None, thresholds: list | None, stats: list[dict]):
    """The entry distribution summary and plot beside the subset (and ``language_balance/<name>``
    after a worldwide match); returns (summary, the plot's file name)."""
    from curate.metaclip import report
    from curate.subset import subset_dir

    counts_before = entry_counts.column("count").to_numpy()
    summary = report.distribution_summary(entry_counts.column("entry").to_pylist(), counts_before,
                                          counts_after, t_eff)
    if thresholds is not None:
        summary["tail_proportion"] = p_tail
        summary["languages"] = _write_language_balance(dataset, name, thresholds, stats, counts_before, counts_after)
    plot = report.plot_distribution(counts_before, counts_after, t_eff,
                                    storage.join(subset_dir(dataset, name), "entry_distribution.png"))
    dataset.write_json(f"subsets/{name}/entry_distribution.json", summary)
    return summary, plot
