"""Distributions of the pool vs the curated subset for the report (plain data; the charts are
made by the view in ``curate.report.build``)."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.tables import Dataset


def uids_in(t: pa.Table, uids: pa.Array) -> pa.Table:
    return t.filter(pc.is_in(t.column("uid"), value_set=uids))


def stable_pick(uids: list[str], k: int, salt: str) -> list[str]:
    """k uids chosen by a salted hash: varied, but the same on every rebuild."""
    return sorted(uids, key=lambda u: hashlib.blake2b(f"{salt}{u}".encode(), digest_size=8).digest())[:k]


def _find_tables_with(dataset: Dataset, columns: set[str], prefix: str | None = None) -> list[str]:
    found = []
    for t in dataset.tables():
        if prefix and not t.startswith(prefix):
            continue
        try:
            names = set(storage.parquet_file(dataset.shards(t)[0]).schema_arrow.names)
        except (OSError, pa.ArrowInvalid, IndexError):
            continue
        if columns <= names:
            found.append(t)
    return found


def distributions(dataset: Dataset, model: str | None, lineage: dict, samples: pa.Table | None, before: pa.Array,
                  final: pa.Array) -> dict[str, Any]:
    """Pool vs curated: caption length, CLIP score, language, cluster sizes, metadata entry
    counts, each when its table exists."""
    dists: dict[str, Any] = {}
    if samples is not None:
        wc = pc.list_value_length(pc.utf8_split_whitespace(samples.column("text")))
        st = pa.table({"uid": samples.column("uid"), "words": wc})
        dists["caption_words"] = {"pool": uids_in(st, before).column("words").to_numpy(zero_copy_only=False),
                                  "curated": uids_in(st, final).column("words").to_numpy(zero_copy_only=False)}
    if model and dataset.has_table(f"embeddings/{model}"):
        e = dataset.read(f"embeddings/{model}", columns=["uid", "clip_score"])
        dists["clip_score"] = {"pool": uids_in(e, before).column("clip_score").to_numpy(zero_copy_only=False),
                               "curated": uids_in(e, final).column("clip_score").to_numpy(zero_copy_only=False)}
    lang = _languages(dataset, samples, before, final)
    if lang:
        dists["language"] = lang
    clusters = _cluster_sizes(dataset, lineage, before, final)
    if clusters:
        dists["cluster_sizes"] = clusters
    meta = _metadata_counts(dataset, before, final)
    if meta:
        dists["metadata_entries"] = meta
    return dists


def _cluster_sizes(dataset: Dataset, lineage: dict, before: pa.Array, final: pa.Array) -> dict | None:
    clusters = _find_tables_with(dataset, {"uid", "cluster_id"}, prefix="clusters/")
    if not clusters:
        return None
    # the clustering this run made, else the most recently written one
    own = [t for t in clusters if t == f"clusters/recipe-{lineage.get('recipe')}"]
    name = own[0] if own else max(clusters, key=lambda t: max(storage.fingerprint(p)[1] for p in dataset.shards(t)))
    c = dataset.read(name, columns=["uid", "cluster_id"])
    sizes_before = pc.value_counts(uids_in(c, before).column("cluster_id").combine_chunks()).field("counts")
    sizes_after = pc.value_counts(uids_in(c, final).column("cluster_id").combine_chunks()).field("counts")
    return {"table": name, "pool": sizes_before.to_numpy(), "curated": sizes_after.to_numpy()}


def _languages(dataset: Dataset, samples, before: pa.Array, final: pa.Array, limit: int = 5000) -> dict | None:
    """Language label shares before/after: from text_stats when present, else fastText on a sample."""
    if dataset.has_table("text_stats"):
        t = dataset.read("text_stats", columns=["uid", "language"])
    elif samples is not None:
        try:
            from curate.filters.langid import load_model, predict_languages
        except ImportError:
            return None
        pool_uids = stable_pick(before.to_pylist(), limit, "lang")
        both = pa.array(sorted(set(pool_uids) | set(stable_pick(final.to_pylist(), limit, "lang"))), pa.string())
        s = uids_in(samples, both)
        try:
            labels, _ = predict_languages(s.column("text"), load_model())
        except Exception:  # no language model here: the section is left out, not the report
            return None
        t = pa.table({"uid": s.column("uid"), "language": labels})
    else:
        return None
    def shares(uids):
        col = uids_in(t, uids).column("language").fill_null("none").combine_chunks()
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
        ids = pc.list_flatten(uids_in(t, uids).column("entry_ids").combine_chunks())
        return pc.value_counts(ids).field("counts").to_numpy() if len(ids) else np.array([], np.int64)

    b, a = per_entry(before), per_entry(final)
    if not len(b):
        return None
    return {"table": "metadata_matches", "pool": b, "curated": a}
