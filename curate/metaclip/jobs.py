"""MetaCLIP jobs: per-shard tasks plus the drivers that plan, run and summarise them.

Tasks are JSON dicts run by any executor (Spark or local): each reads one input shard with
pyarrow, writes its own output shard atomically and returns counts that add up.

- match: ``samples`` shard i -> ``metadata_matches`` shard i (uid, sorted entry ids) and a
  sparse per-shard entry count in ``metadata_matches/_counts/``; the driver sums those into
  ``entry_counts``. The Aho-Corasick automaton is built once per Python worker.
- balance: ``metadata_matches`` shard i -> ``decisions/<run>`` shard i plus sparse kept
  counts; the driver writes the subset, ``entry_balance/<run>`` and the distribution report.
- bigram counting: per-shard (gram, order, n) rows, summed by a Spark shuffle.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.decisions import decisions_table, reason_counts
from curate.engine import worker_cache
from curate.errors import DatasetError, InputFileError
from curate.manifest import RunManifest, file_fingerprint
from curate.metaclip import balance as bal
from curate.metaclip.matching import Matcher, load_metadata
from curate.metaclip.metadata import NGRAM_SCHEMA, ngram_batch
from curate.tables import Dataset, atomic_write_bytes, load_schema, write_parquet_atomic

MATCHES = "metadata_matches"
ENTRY_COUNTS = "entry_counts"
ENTRY_BALANCE = "entry_balance"
STAGE = "metaclip_balance"
METADATA_COPY = "metaclip/metadata.json"  # the entries a dataset was matched against
# Worldwide mode only: which global entry ids belong to which language, and how they match.
LANGUAGES_COPY = "metaclip/languages.json"
LANGUAGES = "metadata_languages"  # per sample: language ID label and the metadata list used
LANGUAGE_BALANCE = "language_balance"
NO_LANGUAGE = "(none)"  # stats key for captions whose language has no metadata (and no `other`)
_COUNTS_DIR = "_counts"
_COUNT_SCHEMA = pa.schema([("entry_id", pa.int32()), ("count", pa.int64())])


# ---------------------------------------------------------------- helpers
def _input_shards(dataset: Dataset, table: str, hint: str) -> list[Path]:
    shards = dataset.shards(table)
    if not shards:
        raise DatasetError(f"table {table!r} not found in {dataset.root}: {hint}")
    return shards


def _check_columns(path: Path, needed: list[str]) -> pq.ParquetFile:
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise InputFileError(str(path), f"cannot read Parquet shard ({e})") from None
    missing = [c for c in needed if c not in pf.schema_arrow.names]
    if missing:
        raise InputFileError(str(path), f"missing column(s) {', '.join(missing)}")
    return pf


def _write_sparse_counts(counts: np.ndarray, path: Path) -> None:
    ids = np.flatnonzero(counts)
    t = pa.table([pa.array(ids.astype(np.int32)), pa.array(counts[ids].astype(np.int64))], schema=_COUNT_SCHEMA)
    write_parquet_atomic(t, path)


def _sum_sparse_counts(paths: list[Path], size: int) -> np.ndarray:
    total = np.zeros(size, dtype=np.int64)
    for p in paths:
        t = pq.read_table(p)
        np.add.at(total, t.column("entry_id").to_numpy(), t.column("count").to_numpy())
    return total


def _clear_stale(dataset: Dataset, table: str, keep: int) -> None:
    """Remove shards (and count parts) past ``keep`` left by an earlier, larger run."""
    for p in dataset.shards(table):
        if int(p.stem.split("-")[1]) >= keep:
            p.unlink()
    parts = dataset.table_dir(table) / _COUNTS_DIR
    if parts.is_dir():
        for p in parts.glob("part-*.parquet"):
            if int(p.stem.split("-")[1]) >= keep:
                p.unlink()


def _matcher(path: str, sha: str) -> Matcher:
    return worker_cache(("curate.metaclip.Matcher", path, sha), lambda: Matcher(load_metadata(path)))


# ---------------------------------------------------------------- match
def match_shard_task(task: dict) -> dict:
    """Match one ``samples`` shard; writes ``metadata_matches`` shard i and its entry counts."""
    ds = Dataset(task["root"])
    i = task["shard"]
    out = ds.shard_path(MATCHES, i)
    counts_path = ds.table_dir(MATCHES) / _COUNTS_DIR / out.name
    if task.get("resume") and out.exists() and counts_path.exists():
        return {"shard": i, "rows": pq.ParquetFile(out).metadata.num_rows, "skipped": 1}
    matcher = _matcher(task["metadata"], task["metadata_sha"])
    pf = _check_columns(Path(task["input"]), ["uid", "text"])
    schema = load_schema(MATCHES).arrow()
    counts = np.zeros(matcher.num_entries, dtype=np.int64)
    batches, rows, matched, pairs = [], 0, 0, 0
    for b in pf.iter_batches(batch_size=task.get("batch_size", 65536), columns=["uid", "text"]):
        ids = matcher.match_array(b.column("text"))
        flat = pc.list_flatten(ids).to_numpy(zero_copy_only=False)
        counts += np.bincount(flat, minlength=matcher.num_entries)
        rows += b.num_rows
        pairs += len(flat)
        matched += int(pc.sum(pc.greater(pc.list_value_length(ids), 0)).as_py() or 0)
        batches.append(pa.record_batch([b.column("uid"), ids], schema=schema))
    _write_sparse_counts(counts, counts_path)  # before the shard: the shard marks completion
    write_parquet_atomic(pa.Table.from_batches(batches, schema=schema), out)
    return {"shard": i, "rows": rows, "matched": matched, "unmatched": rows - matched, "pairs": pairs, "skipped": 0}


def run_match(dataset: Dataset, metadata: str | Path, executor, *, batch_size: int = 65536,
              resume: bool = False, params: dict | None = None, lid_model: str | None = None,
              nospace_match: str = "substring") -> dict:
    """Match every sample's text against ``metadata``; writes ``metadata_matches``,
    ``entry_counts`` and ``_runs/metadata-match.json``. Returns the manifest data.

    A metadata folder (one ``<lang>.json`` per language) runs MetaCLIP 2's worldwide matching
    (``run_match_worldwide``); a file runs MetaCLIP v1's."""
    if Path(metadata).is_dir():
        return run_match_worldwide(dataset, metadata, executor, batch_size=batch_size, resume=resume,
                                   params=params, lid_model=lid_model, nospace_match=nospace_match)
    _drop_worldwide_outputs(dataset)
    manifest = RunManifest("metadata-match", dict(params or {}, metadata=str(metadata), batch_size=batch_size))
    with manifest.stage("load_metadata"):
        entries = load_metadata(metadata)
        copy = dataset.root / METADATA_COPY
        src_fp = file_fingerprint(metadata)
        if not copy.exists() or file_fingerprint(copy)["sha256"] != src_fp["sha256"]:
            # Executors read the entries from the dataset folder, which every node can reach.
            atomic_write_bytes(copy, Path(metadata).read_bytes())
        sha = file_fingerprint(copy)["sha256"]
    shards = _input_shards(dataset, "samples", "run `curate ingest` first")
    manifest["inputs"] = [src_fp, {"table": "samples", "shards": len(shards)}]
    job_marker = dataset.table_dir(MATCHES) / "_job.json"
    plan = {"metadata_sha256": sha,
            "inputs": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in shards]}
    if resume and job_marker.exists() and json.loads(job_marker.read_text()) != plan:
        resume = False  # different metadata or inputs: nothing to resume
    if not resume:
        _clear_stale(dataset, MATCHES, 0)
    dataset.write_json(f"{MATCHES}/_job.json", plan)
    tasks = [{"root": str(dataset.root), "shard": i, "input": str(p), "metadata": str(copy),
              "metadata_sha": sha, "batch_size": batch_size, "resume": resume}
             for i, p in enumerate(shards)]
    with manifest.stage("match"):
        stats = executor.map_tasks(tasks, match_shard_task, "metaclip match")
    _clear_stale(dataset, MATCHES, len(tasks))
    with manifest.stage("entry_counts"):
        parts = [dataset.table_dir(MATCHES) / _COUNTS_DIR / dataset.shard_path(MATCHES, i).name
                 for i in range(len(tasks))]
        counts = _sum_sparse_counts(parts, len(entries))
        table = pa.table({"entry_id": pa.array(np.arange(len(entries), dtype=np.int32)),
                          "entry": pa.array(entries, pa.string()),
                          "count": pa.array(counts)})
        dataset.write_table(ENTRY_COUNTS, table, schema=ENTRY_COUNTS)
    rows = sum(s["rows"] for s in stats)
    totals = {k: sum(s.get(k, 0) for s in stats) for k in ("matched", "unmatched", "pairs", "skipped")}
    manifest["counts"] = {"samples": rows, **totals, "entries": len(entries),
                          "entries_matched": int((counts > 0).sum()),
                          "engine": getattr(executor, "name", "?")}
    manifest["outputs"] = {MATCHES: len(tasks), ENTRY_COUNTS: 1, "metadata": str(copy)}
    manifest.write(dataset, "metadata-match")
    return manifest.data


# ---------------------------------------------------------------- worldwide match (MetaCLIP 2)
NOSPACE_MODES = ("substring", "tokens")


def _drop_worldwide_outputs(dataset: Dataset) -> None:
    """A v1 match replaces a worldwide one: its language layout and table would be stale."""
    (dataset.root / LANGUAGES_COPY).unlink(missing_ok=True)
    _clear_stale(dataset, LANGUAGES, 0)


def _write_if_changed(path: Path, data: bytes) -> None:
    if not path.exists() or path.read_bytes() != data:
        atomic_write_bytes(path, data)


def _worldwide_matchers(root: str, sha: str) -> dict:
    """Per metadata language: (matcher over its slice, first global id), built once per worker."""
    def build():
        from curate.metaclip import worldwide as ww

        layout = json.loads((Path(root) / LANGUAGES_COPY).read_text(encoding="utf-8"))
        entries = load_metadata(Path(root) / METADATA_COPY)
        mode = layout["nospace_match"]
        out = {}
        for lang, a, b in layout["ranges"]:
            if mode == "tokens" and ww.base_language(lang) in ww.TOKENIZED_LANGUAGES:
                def key(e, lang=lang):
                    words = ww.tokenize(e, lang)
                    return f" {' '.join(words)} " if words else ""

                def transform(texts, lang=lang):
                    return pa.array([" ".join(ww.tokenize(t, lang)) for t in texts.to_pylist()], pa.string())

                out[lang] = (Matcher(entries[a:b], key_fn=key, text_transform=transform), a)
            else:
                out[lang] = (Matcher(entries[a:b], key_fn=ww.spaced_entry), a)
        return out

    return worker_cache(("curate.metaclip.worldwide", root, sha), build)


def _shift_lists(lists: pa.ListArray, offset: int) -> pa.ListArray:
    values = pc.list_flatten(lists).to_numpy(zero_copy_only=False).astype(np.int64) + offset
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    offsets = np.zeros(len(lists) + 1, np.int32)
    np.cumsum(lengths, out=offsets[1:])
    return pa.ListArray.from_arrays(pa.array(offsets), pa.array(values.astype(np.int32), pa.int32()))


def match_worldwide_batch(texts: pa.Array, labels: pa.Array, matchers: dict) -> tuple[pa.ListArray, list]:
    """Global entry ids per caption, each caption matched against its language's list (or
    ``other``); also the metadata language used per caption (None: no list for it)."""
    from curate.metaclip.worldwide import metadata_language

    n = len(texts)
    label_list = labels.to_pylist()
    choice = {lab: metadata_language(lab, matchers) for lab in set(label_list)}
    used = [choice[lab] for lab in label_list]
    used_np = np.array([u if u is not None else "" for u in used], dtype=object)
    pieces, order = [], []
    for lang in sorted({u for u in used if u is not None}):
        idx = np.flatnonzero(used_np == lang)
        matcher, start = matchers[lang]
        pieces.append(_shift_lists(matcher.match_array(texts.take(pa.array(idx))), start))
        order.append(idx)
    rest = np.flatnonzero(used_np == "")
    if len(rest):
        pieces.append(pa.ListArray.from_arrays(pa.array(np.zeros(len(rest) + 1, np.int32)), pa.array([], pa.int32())))
        order.append(rest)
    if not pieces:
        return pa.array([], pa.list_(pa.int32())), used
    inverse = np.empty(n, np.int64)
    inverse[np.concatenate(order)] = np.arange(n)
    return pa.concat_arrays(pieces).take(pa.array(inverse)), used


def _language_stats(used: list, labels: list, matched: np.ndarray) -> dict:
    out: dict = {}
    for u, lab, m in zip(used, labels, matched.tolist()):
        key = u if u is not None else NO_LANGUAGE
        d = out.setdefault(key, {"samples": 0, "matched": 0, "labels": {}})
        d["samples"] += 1
        d["matched"] += int(m)
        lab = lab or ""
        d["labels"][lab] = d["labels"].get(lab, 0) + 1
    return out


def _add_language_stats(total: dict, part: dict) -> dict:
    for k, d in part.items():
        t = total.setdefault(k, {"samples": 0, "matched": 0, "labels": {}})
        t["samples"] += d["samples"]
        t["matched"] += d["matched"]
        for lab, v in d["labels"].items():
            t["labels"][lab] = t["labels"].get(lab, 0) + v
    return total


def match_worldwide_shard_task(task: dict) -> dict:
    """Language ID then per-language matching of one ``samples`` shard; writes
    ``metadata_matches`` and ``metadata_languages`` shard i and the shard's entry counts."""
    from curate.filters.langid import load_model, predict_languages

    ds = Dataset(task["root"])
    i = task["shard"]
    out = ds.shard_path(MATCHES, i)
    lang_out = ds.shard_path(LANGUAGES, i)
    counts_path = ds.table_dir(MATCHES) / _COUNTS_DIR / out.name
    if task.get("resume") and out.exists() and counts_path.exists() and lang_out.exists():
        t = pq.read_table(lang_out, columns=["lang", "metadata_lang"])
        m = pq.read_table(out, columns=["entry_ids"]).column("entry_ids")
        matched = pc.greater(pc.list_value_length(m), 0).to_numpy(zero_copy_only=False)
        langs = _language_stats(t.column("metadata_lang").to_pylist(), t.column("lang").to_pylist(), matched)
        return {"shard": i, "rows": t.num_rows, "skipped": 1, "languages": langs}
    matchers = _worldwide_matchers(task["root"], task["layout_sha"])
    total_entries = task["entries"]
    model = load_model(task.get("lid_model"))
    pf = _check_columns(Path(task["input"]), ["uid", "text"])
    schema = load_schema(MATCHES).arrow()
    lang_schema = load_schema(LANGUAGES).arrow()
    counts = np.zeros(total_entries, dtype=np.int64)
    batches, lang_batches, rows, matched, pairs, langs = [], [], 0, 0, 0, {}
    for b in pf.iter_batches(batch_size=task.get("batch_size", 65536), columns=["uid", "text"]):
        texts = b.column("text")
        labels, scores = predict_languages(texts, model)
        ids, used = match_worldwide_batch(texts, labels, matchers)
        flat = pc.list_flatten(ids).to_numpy(zero_copy_only=False)
        counts += np.bincount(flat, minlength=total_entries)
        has = pc.greater(pc.list_value_length(ids), 0).to_numpy(zero_copy_only=False)
        rows += b.num_rows
        pairs += len(flat)
        matched += int(has.sum())
        _add_language_stats(langs, _language_stats(used, labels.to_pylist(), has))
        batches.append(pa.record_batch([b.column("uid"), ids], schema=schema))
        lang_batches.append(pa.record_batch([b.column("uid"), labels, scores, pa.array(used, pa.string())],
                                            schema=lang_schema))
    _write_sparse_counts(counts, counts_path)
    write_parquet_atomic(pa.Table.from_batches(lang_batches, schema=lang_schema), lang_out)
    write_parquet_atomic(pa.Table.from_batches(batches, schema=schema), out)  # last: marks completion
    return {"shard": i, "rows": rows, "matched": matched, "unmatched": rows - matched, "pairs": pairs,
            "skipped": 0, "languages": langs}


def run_match_worldwide(dataset: Dataset, metadata: str | Path, executor, *, batch_size: int = 65536,
                        resume: bool = False, params: dict | None = None, lid_model: str | None = None,
                        nospace_match: str = "substring") -> dict:
    """MetaCLIP 2 matching: each caption's fastText language picks its metadata list (see
    ``curate.metaclip.worldwide``). Entry ids are global: the language lists concatenated in
    sorted language order (``metaclip/metadata.json``), each language's id range in
    ``metaclip/languages.json``. Writes ``metadata_matches``, ``metadata_languages``,
    ``entry_counts`` (with the per-language ranges, counts per language) and the manifest."""
    from curate.filters.langid import resolve_model_path
    from curate.metaclip import worldwide as ww

    if nospace_match not in NOSPACE_MODES:
        raise DatasetError(f"--nospace-match must be one of {', '.join(NOSPACE_MODES)}, got {nospace_match!r}")
    lid = str(resolve_model_path(lid_model))
    manifest = RunManifest("metadata-match", dict(params or {}, metadata=str(metadata), batch_size=batch_size,
                                                  mode="worldwide", nospace_match=nospace_match, lid_model=lid))
    with manifest.stage("load_metadata"):
        meta = ww.load_worldwide(metadata)
        entries = meta.flat()
        ranges = meta.ranges()
        copy = dataset.root / METADATA_COPY
        _write_if_changed(copy, json.dumps(entries, ensure_ascii=False).encode("utf-8"))
        layout = {"mode": "worldwide", "source": str(metadata), "nospace_match": nospace_match,
                  "ranges": [[lang, a, b] for lang, a, b in ranges],
                  "tokenizers": {lang: ww.tokenizer_for(lang).describe() for lang, _, _ in ranges
                                 if nospace_match == "tokens" and ww.base_language(lang) in ww.TOKENIZED_LANGUAGES},
                  "metadata_sha256": file_fingerprint(copy)["sha256"]}
        layout_bytes = (json.dumps(layout, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
        _write_if_changed(dataset.root / LANGUAGES_COPY, layout_bytes)
        sha = file_fingerprint(dataset.root / LANGUAGES_COPY)["sha256"]
    shards = _input_shards(dataset, "samples", "run `curate ingest` first")
    manifest["inputs"] = [file_fingerprint(metadata), file_fingerprint(lid), {"table": "samples", "shards": len(shards)}]
    job_marker = dataset.table_dir(MATCHES) / "_job.json"
    plan = {"metadata_sha256": sha, "lid_model": file_fingerprint(lid)["sha256"],
            "inputs": [[p.name, p.stat().st_size, p.stat().st_mtime_ns] for p in shards]}
    if resume and job_marker.exists() and json.loads(job_marker.read_text()) != plan:
        resume = False
    if not resume:
        _clear_stale(dataset, MATCHES, 0)
        _clear_stale(dataset, LANGUAGES, 0)
    dataset.write_json(f"{MATCHES}/_job.json", plan)
    tasks = [{"root": str(dataset.root), "shard": i, "input": str(p), "layout_sha": sha, "entries": len(entries),
              "lid_model": lid, "batch_size": batch_size, "resume": resume} for i, p in enumerate(shards)]
    with manifest.stage("match"):
        stats = executor.map_tasks(tasks, match_worldwide_shard_task, "metaclip worldwide match")
    _clear_stale(dataset, MATCHES, len(tasks))
    _clear_stale(dataset, LANGUAGES, len(tasks))
    with manifest.stage("entry_counts"):
        parts = [dataset.table_dir(MATCHES) / _COUNTS_DIR / dataset.shard_path(MATCHES, i).name
                 for i in range(len(tasks))]
        counts = _sum_sparse_counts(parts, len(entries))
        dataset.write_table(ENTRY_COUNTS, pa.table({
            "entry_id": pa.array(np.arange(len(entries), dtype=np.int32)),
            "entry": pa.array(entries, pa.string()), "count": pa.array(counts)}), schema=ENTRY_COUNTS)
    langs: dict = {}
    for s in stats:
        _add_language_stats(langs, s.get("languages", {}))
    per_language = {}
    for lang, a, b in ranges:
        d = langs.get(lang, {"samples": 0, "matched": 0, "labels": {}})
        per_language[lang] = {"entries": b - a, "entries_matched": int((counts[a:b] > 0).sum()),
                              "pairs": int(counts[a:b].sum()), "samples": d["samples"], "matched": d["matched"],
                              "labels": dict(sorted(d["labels"].items()))}
    if NO_LANGUAGE in langs:
        d = langs[NO_LANGUAGE]
        per_language[NO_LANGUAGE] = {"entries": 0, "entries_matched": 0, "pairs": 0, "samples": d["samples"],
                                     "matched": 0, "labels": dict(sorted(d["labels"].items()))}
    rows = sum(s["rows"] for s in stats)
    totals = {k: sum(s.get(k, 0) for s in stats) for k in ("matched", "unmatched", "pairs", "skipped")}
    manifest["counts"] = {"samples": rows, **totals, "entries": len(entries),
                          "entries_matched": int((counts > 0).sum()), "engine": getattr(executor, "name", "?")}
    manifest["languages"] = per_language
    manifest["outputs"] = {MATCHES: len(tasks), LANGUAGES: len(tasks), ENTRY_COUNTS: 1, "metadata": str(copy),
                           "layout": str(dataset.root / LANGUAGES_COPY)}
    manifest.write(dataset, "metadata-match")
    return manifest.data


# ---------------------------------------------------------------- balance
def _probabilities(root: str, t: float) -> np.ndarray:
    ds = Dataset(root)
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in ds.shards(ENTRY_COUNTS))

    def build():
        counts = ds.read(ENTRY_COUNTS, columns=["entry_id", "count"]).sort_by("entry_id")
        return bal.entry_probabilities(counts.column("count").to_numpy(), t)

    return worker_cache(("curate.metaclip.probs", root, stamp, t), build)


def _range_probabilities(root: str, thresholds: list) -> np.ndarray:
    from curate.metaclip.worldwide import range_probabilities

    ds = Dataset(root)
    stamp = tuple((p.name, p.stat().st_mtime_ns) for p in ds.shards(ENTRY_COUNTS))
    key = tuple(tuple(x) for x in thresholds)

    def build():
        counts = ds.read(ENTRY_COUNTS, columns=["entry_id", "count"]).sort_by("entry_id")
        return range_probabilities(counts.column("count").to_numpy(), key)

    return worker_cache(("curate.metaclip.range_probs", root, stamp, key), build)


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
        lang_pf = _check_columns(ds.shard_path(LANGUAGES, i), ["metadata_lang"])
        lang_batches = lang_pf.iter_batches(batch_size=task.get("batch_size", 65536), columns=["metadata_lang"])
    entries = task["entries"]
    pf = _check_columns(Path(task["input"]), ["uid", "entry_ids"])
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
    _write_sparse_counts(kept_counts, ds.table_dir(f"{ENTRY_BALANCE}/{run}") / _COUNTS_DIR / f"part-{i:05d}.parquet")
    write_parquet_atomic(table, ds.shard_path(f"decisions/{run}", i))
    out = {"shard": i, "rows": table.num_rows, **reasons}
    if worldwide:
        out["languages"] = languages
    return out


def _entry_names(root: str, sha: str) -> list[str]:
    return worker_cache(("curate.metaclip.entries", root, sha),
                        lambda: load_metadata(Path(root) / METADATA_COPY))


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
    from curate.metaclip import report
    from curate.selection import write_subset_frame
    from curate.subset import subset_dir

    shards = _input_shards(dataset, MATCHES, "run `curate metadata match` first")
    if not dataset.has_table(ENTRY_COUNTS):
        raise DatasetError(f"table {ENTRY_COUNTS!r} not found in {dataset.root}: run `curate metadata match` first")
    pool = dataset.count(MATCHES)
    t_eff = bal.scaled_t(t, pool, t_reference_pool)
    manifest = RunManifest("metadata-balance", dict(params or {}, t=t, t_reference_pool=t_reference_pool,
                                                    t_effective=t_eff, seed=seed, name=name))
    entry_counts = dataset.read(ENTRY_COUNTS).sort_by("entry_id")
    entries_sha = file_fingerprint(dataset.root / METADATA_COPY)["sha256"]
    manifest["inputs"] = [{"table": MATCHES, "shards": len(shards), "rows": pool},
                          {"table": ENTRY_COUNTS, "rows": entry_counts.num_rows},
                          file_fingerprint(dataset.root / METADATA_COPY)]
    run = name
    worldwide = (dataset.root / LANGUAGES_COPY).exists()
    counts_before = entry_counts.column("count").to_numpy()
    thresholds = None
    if worldwide:
        from curate.metaclip import worldwide as ww

        if len(dataset.shards(LANGUAGES)) != len(shards):
            raise DatasetError(f"table {LANGUAGES!r} in {dataset.root} does not match {MATCHES!r}: "
                               "rerun `curate metadata match`")
        layout = json.loads((dataset.root / LANGUAGES_COPY).read_text(encoding="utf-8"))
        p_tail, thresholds = ww.language_thresholds(counts_before, [tuple(r) for r in layout["ranges"]], t_eff,
                                                    tail_proportion)
        manifest["params"]["tail_proportion"] = p_tail
        manifest["params"]["t_by_language"] = {th.lang: th.t for th in thresholds}
    for table in (f"decisions/{run}", f"{ENTRY_BALANCE}/{run}", f"{LANGUAGE_BALANCE}/{run}"):
        _clear_stale(dataset, table, 0)
    tasks = [{"root": str(dataset.root), "shard": i, "input": str(p), "run": run, "t": t_eff, "seed": seed,
              "entries": entries_sha, "batch_size": batch_size} for i, p in enumerate(shards)]
    if thresholds is not None:
        for task in tasks:
            del task["t"]
            task["thresholds"] = [[th.start, th.stop, th.t] for th in thresholds]
    with manifest.stage("balance"):
        stats = executor.map_tasks(tasks, balance_shard_task, "metaclip balance")
    with manifest.stage("subset"):
        from curate.selection import DECISIONS

        decisions = executor.frame_read([str(p) for p in dataset.shards(f"decisions/{run}")], DECISIONS)
        kept = decisions.filter_true("kept").select(["uid"])
        parts = sorted((dataset.table_dir(f"{ENTRY_BALANCE}/{run}") / _COUNTS_DIR).glob("part-*.parquet"))
        counts_after = _sum_sparse_counts(parts, len(counts_before))
        if thresholds is None:
            probs = bal.entry_probabilities(counts_before, t_eff)
        else:
            probs = ww.range_probabilities(counts_before, [(th.start, th.stop, th.t) for th in thresholds])
        dataset.write_table(f"{ENTRY_BALANCE}/{run}", pa.table({
            "entry_id": entry_counts.column("entry_id"), "entry": entry_counts.column("entry"),
            "count": entry_counts.column("count"), "probability": pa.array(probs),
            "kept": pa.array(counts_after)}), schema=ENTRY_BALANCE)
        reasons: dict[str, int] = {}
        for s in stats:
            for k, v in s.items():
                if k not in ("shard", "rows", "languages"):
                    reasons[k] = reasons.get(k, 0) + v
        summary = report.distribution_summary(entry_counts.column("entry").to_pylist(), counts_before,
                                              counts_after, t_eff)
        if thresholds is not None:
            summary["tail_proportion"] = p_tail
            summary["languages"] = _write_language_balance(dataset, run, thresholds, stats, counts_before,
                                                           counts_after)
        out_dir = subset_dir(dataset, name)
        out_dir.mkdir(parents=True, exist_ok=True)
        plot = report.plot_distribution(counts_before, counts_after, t_eff, out_dir / "entry_distribution.png")
        dataset.write_json(f"subsets/{name}/entry_distribution.json", summary)
        counts = {"input": pool, **dict(sorted(reasons.items())), "kept_total": int(reasons.get("kept", 0))}
        write_subset_frame(dataset, name, kept, manifest={
            "stage": STAGE, "params": {"t": t, "t_effective": t_eff, "t_reference_pool": t_reference_pool,
                                       "seed": seed, **({"tail_proportion": p_tail,
                                                         "t_by_language": {th.lang: th.t for th in thresholds}}
                                                        if thresholds is not None else {})},
            "decisions": f"decisions/{run}", "counts": counts,
            "entry_distribution": ["entry_distribution.json", plot.name]})
    # the selection count keys (input, kept, removed, reasons) beside the per-reason keys
    kept_n = int(reasons.get("kept", 0))
    manifest["counts"] = {**counts, "kept": kept_n, "removed": pool - kept_n, "reasons": dict(sorted(reasons.items()))}
    manifest["distribution"] = {k: summary[k] for k in ("before", "after")}
    manifest["outputs"] = {"subset": f"subsets/{name}", "decisions": f"decisions/{run}",
                           ENTRY_BALANCE: f"{ENTRY_BALANCE}/{run}", "plot": f"subsets/{name}/{plot.name}"}
    if thresholds is not None:
        manifest["languages"] = summary["languages"]
        manifest["outputs"][LANGUAGE_BALANCE] = f"{LANGUAGE_BALANCE}/{run}"
    manifest.write(dataset, f"metadata-balance-{name}")
    return manifest.data


# ---------------------------------------------------------------- bigram counting
def ngram_count_task(task: dict) -> Iterator[pa.RecordBatch]:
    """(gram, order, n) counts of one input shard's text column, one batch per read batch."""
    pf = _check_columns(Path(task["input"]), [task.get("column", "text")])
    for b in pf.iter_batches(batch_size=task.get("batch_size", 65536), columns=[task.get("column", "text")]):
        yield ngram_batch(b.column(0))


def count_dataset_ngrams(dataset: Dataset, executor, min_count: int) -> tuple[dict[str, int], dict[str, int], int]:
    """Unigram and bigram counts (those of at least ``min_count``) over the pool's captions,
    plus the total number of word tokens. Summed by the executor (a shuffle on Spark)."""
    shards = _input_shards(dataset, "samples", "run `curate ingest` first, or give --bigram-corpus")
    tasks = [{"input": str(p)} for p in shards]
    summed = executor.sum_task_rows(tasks, ngram_count_task, NGRAM_SCHEMA, ["gram", "order"], "n", min_count)
    # The order-0 row holds the number of word tokens; below min_count it is filtered out,
    # and then no bigram can reach min_count either.
    total_words = 0
    uni: dict[str, int] = {}
    bi: dict[str, int] = {}
    for g, o, n in zip(summed["gram"].to_pylist(), summed["order"].to_pylist(), summed["n"].to_pylist()):
        if o == 0:
            total_words = n
        else:
            (uni if o == 1 else bi)[g] = n
    return uni, bi, total_words



# ---------------------------------------------------------------- build
def run_build(output: str | Path, *, numbers: bool = True, wordnet: bool = True, wordnet_dir: str | None = None,
              wordfreq_top: int | None = 100_000, wordfreq_min_frequency: float | None = None,
              wordfreq_list: str = "best", dataset: Dataset | None = None, corpus: list[str] | None = None,
              corpus_column: str = "text", bigram_min_count: int = 10, bigram_min_pmi: float = 8.0,
              bigrams: bool = True, entry_lists: list[str] | None = None, keep_unmatchable: bool = False,
              max_entries: int | None = None, executor=None, languages: list[str] | None = None,
              lid_model: str | None = None) -> dict:
    """Build a metadata JSON list from the sources of ``curate.metaclip.metadata``; writes
    ``output`` and ``<output>.build.json`` (sources, parameters, counts) and returns the latter.

    ``languages`` other than None or ``["en"]`` builds MetaCLIP 2 worldwide metadata instead:
    ``output`` is then a folder with one ``<lang>.json`` per language
    (``curate.metaclip.worldwide_build``)."""
    if languages is not None and list(languages) != ["en"]:
        from curate.metaclip.worldwide_build import run_build_worldwide

        return run_build_worldwide(
            output, list(languages), numbers=numbers, wordnet=wordnet, wordnet_dir=wordnet_dir,
            wordfreq_top=wordfreq_top, wordfreq_min_frequency=wordfreq_min_frequency, wordfreq_list=wordfreq_list,
            dataset=dataset, corpus=corpus, corpus_column=corpus_column, bigram_min_count=bigram_min_count,
            bigram_min_pmi=bigram_min_pmi, bigrams=bigrams, entry_lists=entry_lists,
            keep_unmatchable=keep_unmatchable, max_entries=max_entries, executor=executor, lid_model=lid_model)
    import time

    from curate.manifest import code_version
    from curate.metaclip import metadata as md

    timings: dict[str, float] = {}
    sources: list[tuple[str, list[str]]] = []

    def timed(name, fn):
        t0 = time.perf_counter()
        out = fn()
        timings[name] = round(time.perf_counter() - t0, 3)
        return out

    if numbers:
        sources.append(("numbers", md.number_entries()))
    if wordnet:
        sources.append(("wordnet", timed("wordnet", lambda: md.wordnet_entries(wordnet_dir))))
    if wordfreq_top or wordfreq_min_frequency is not None:
        sources.append(("wordfreq", timed("wordfreq", lambda: md.wordfreq_entries(
            wordfreq_top, wordfreq_min_frequency, wordlist=wordfreq_list))))
    bigram_info: dict = {}
    if bigrams and (corpus or dataset is not None):
        def mine():
            if corpus:
                texts = (t for path in corpus for t in md.iter_corpus_file(path, corpus_column))
                uni, bi = md.count_ngrams(md.spacing(t) for t in texts)
                total = sum(uni.values())
            else:
                uni, bi, total = count_dataset_ngrams(dataset, executor, bigram_min_count)
            return md.pmi_bigrams(uni, bi, total, bigram_min_count, bigram_min_pmi), total

        mined, total_words = timed("bigrams", mine)
        sources.append(("bigrams", [b.text for b in mined]))
        bigram_info = {"corpus": list(corpus) if corpus else f"{dataset.root}/samples",
                       "word_tokens": total_words, "mined": len(mined),
                       "top": [{"bigram": b.text, "count": b.count, "pmi": round(b.pmi, 3)} for b in mined[:20]]}
    for path in entry_lists or []:
        sources.append((f"user:{path}", md.read_entry_list(path)))
    entries, report = md.assemble(sources, keep_unmatchable=keep_unmatchable, max_entries=max_entries)
    out = md.write_metadata(entries, output)
    build = {
        "output": str(out), "entries": report.entries, "sources": report.sources, "bigrams": bigram_info,
        "params": {"numbers": numbers, "wordnet": wordnet, "wordnet_dir": wordnet_dir, "wordfreq_top": wordfreq_top,
                   "wordfreq_min_frequency": wordfreq_min_frequency, "wordfreq_list": wordfreq_list,
                   "bigram_min_count": bigram_min_count, "bigram_min_pmi": bigram_min_pmi,
                   "keep_unmatchable": keep_unmatchable, "max_entries": max_entries,
                   "entry_lists": list(entry_lists or [])},
        "sha256": file_fingerprint(out)["sha256"], "code": code_version(), "timings_s": timings,
    }
    atomic_write_bytes(Path(f"{out}.build.json"), (json.dumps(build, indent=2, sort_keys=True) + "\n").encode())
    return build
