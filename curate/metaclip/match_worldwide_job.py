"""MetaCLIP 2 worldwide match: fastText language ID per caption, then matching against that
language's metadata list; writes ``metadata_matches``, ``metadata_languages`` and ``entry_counts``."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.engine import worker_cache
from curate.errors import DatasetError
from curate.manifest import RunManifest, file_fingerprint
from curate.metaclip.matching import Matcher, load_metadata
from curate.tables import Dataset, load_schema, write_parquet_atomic
from curate.metaclip.job_shards import (ENTRY_COUNTS, LANGUAGES, LANGUAGES_COPY, MATCHES, METADATA_COPY, NO_LANGUAGE,
                                        check_columns, clear_stale, counts_table, input_shards, input_stamps,
                                        plan_changed, sum_sparse_counts, write_if_changed,
                                        write_sparse_counts)


NOSPACE_MODES = ("substring", "tokens")


def drop_worldwide_outputs(dataset: Dataset) -> None:
    """A v1 match replaces a worldwide one: its language layout and table would be stale."""
    storage.delete(storage.resolve(dataset.path(LANGUAGES_COPY)))
    clear_stale(dataset, LANGUAGES, 0)


def _worldwide_matchers(root: str, sha: str) -> dict:
    """Per metadata language: (matcher over its slice, first global id), built once per worker."""
    def build():
        from curate.metaclip import worldwide as ww

        ds = Dataset(root)
        layout = json.loads(storage.read_bytes(ds.path(LANGUAGES_COPY)).decode("utf-8"))
        entries = load_metadata(ds.path(METADATA_COPY))
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
    counts_path = ds.shard_path(counts_table(MATCHES), i)
    if task.get("resume") and all(storage.committed(x) for x in (out, counts_path, lang_out)):
        t = storage.read_parquet(lang_out, columns=["lang", "metadata_lang"])
        m = storage.read_parquet(out, columns=["entry_ids"]).column("entry_ids")
        matched = pc.greater(pc.list_value_length(m), 0).to_numpy(zero_copy_only=False)
        langs = _language_stats(t.column("metadata_lang").to_pylist(), t.column("lang").to_pylist(), matched)
        return {"shard": i, "rows": t.num_rows, "skipped": 1, "languages": langs}
    matchers = _worldwide_matchers(task["root"], task["layout_sha"])
    total_entries = task["entries"]
    model = load_model(task.get("lid_model"))
    pf = check_columns(task["input"], ["uid", "text"])
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
    write_sparse_counts(counts, counts_path)
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

    if nospace_match not in NOSPACE_MODES:
        raise DatasetError(f"--nospace-match must be one of {', '.join(NOSPACE_MODES)}, got {nospace_match!r}")
    lid = str(resolve_model_path(lid_model))
    manifest = RunManifest("metadata-match", dict(params or {}, metadata=str(metadata), batch_size=batch_size,
                                                  mode="worldwide", nospace_match=nospace_match, lid_model=lid))
    with manifest.stage("load_metadata"):
        entries, ranges, sha = _write_layout(dataset, metadata, nospace_match)
    copy = dataset.path(METADATA_COPY)
    shards = input_shards(dataset, "samples", "run `curate ingest` first")
    manifest["inputs"] = [file_fingerprint(metadata), file_fingerprint(lid), {"table": "samples", "shards": len(shards)}]
    plan = {"metadata_sha256": sha, "lid_model": file_fingerprint(lid)["sha256"], "inputs": input_stamps(shards)}
    if resume and plan_changed(dataset, plan):
        resume = False
    if not resume:
        clear_stale(dataset, MATCHES, 0)
        clear_stale(dataset, LANGUAGES, 0)
    dataset.write_json(f"{MATCHES}/_job.json", plan)
    tasks = [{"root": str(dataset.root), "shard": i, "input": str(p), "layout_sha": sha, "entries": len(entries),
              "lid_model": lid, "batch_size": batch_size, "resume": resume} for i, p in enumerate(shards)]
    with manifest.stage("match"):
        stats = executor.map_tasks(tasks, match_worldwide_shard_task, "metaclip worldwide match")
    clear_stale(dataset, MATCHES, len(tasks))
    clear_stale(dataset, LANGUAGES, len(tasks))
    with manifest.stage("entry_counts"):
        counts = sum_sparse_counts([dataset.shard_path(counts_table(MATCHES), i) for i in range(len(tasks))],
                                   len(entries))
        dataset.write_table(ENTRY_COUNTS, pa.table({
            "entry_id": pa.array(np.arange(len(entries), dtype=np.int32)),
            "entry": pa.array(entries, pa.string()), "count": pa.array(counts)}), schema=ENTRY_COUNTS)
    per_language = _per_language(stats, ranges, counts)
    rows = sum(s["rows"] for s in stats)
    totals = {k: sum(s.get(k, 0) for s in stats) for k in ("matched", "unmatched", "pairs", "skipped")}
    manifest["counts"] = {"samples": rows, **totals, "entries": len(entries),
                          "entries_matched": int((counts > 0).sum()), "engine": getattr(executor, "name", "?")}
    manifest["languages"] = per_language
    manifest["outputs"] = {MATCHES: len(tasks), LANGUAGES: len(tasks), ENTRY_COUNTS: 1, "metadata": str(copy),
                           "layout": str(dataset.path(LANGUAGES_COPY))}
    manifest.write(dataset, "metadata-match")
    return manifest.data


def _write_layout(dataset: Dataset, metadata: str | Path, nospace_match: str) -> tuple[list[str], list, str]:
    """The language lists concatenated (``metaclip/metadata.json``) and their layout
    (``metaclip/languages.json``), each rewritten only when it changed; returns the entries,
    each language's id range and the layout's sha256."""
    from curate.metaclip import worldwide as ww

    meta = ww.load_worldwide(metadata)
    entries = meta.flat()
    ranges = meta.ranges()
    entries_bytes = json.dumps(entries, ensure_ascii=False).encode("utf-8")
    write_if_changed(dataset.path(METADATA_COPY), entries_bytes)
    layout = {"mode": "worldwide", "source": str(metadata), "nospace_match": nospace_match,
              "ranges": [[lang, a, b] for lang, a, b in ranges],
              "tokenizers": {lang: ww.tokenizer_for(lang).describe() for lang, _, _ in ranges
                             if nospace_match == "tokens" and ww.base_language(lang) in ww.TOKENIZED_LANGUAGES},
              "metadata_sha256": hashlib.sha256(entries_bytes).hexdigest()}
    layout_bytes = (json.dumps(layout, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")
    write_if_changed(dataset.path(LANGUAGES_COPY), layout_bytes)
    return entries, ranges, hashlib.sha256(layout_bytes).hexdigest()


def _per_language(stats: list[dict], ranges: list, counts: np.ndarray) -> dict:
    """The manifest's per-language counts: entries, matches, samples and their language labels."""
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
    return per_language
