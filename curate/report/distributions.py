"""Distributions of the pool vs the curated subset for the report, as histograms the engine
computes (``curate.report.frames``); the charts are made by the view in ``curate.report.build``.

``before`` and ``final`` are frames of distinct uids (the "before" population and the subset);
every distribution is a semi-join of a dataset table against them, binned by the workers.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.report.frames import SIDE, VALUE, stable_sample, table_frame, value_histogram, values_of
from curate.tables import Dataset

CAPTION_WORDS_CAP = 60  # longer captions share the last bar
LANGUAGE_SAMPLE = 5000  # captions per side given to fastText when no text_stats table exists
MAX_LANGUAGES = 10_000


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


SIDES = ["pool", "curated"]


def sides_frame(before, final):
    """(uid, side) rows: every "before" uid as ``pool``, every subset uid as ``curated`` (a uid
    in both has both rows), so that one join tags a table's rows with their sides."""
    return (before.select(["uid"]).with_constant(SIDE, "pool", pa.string())
            .union(final.select(["uid"]).with_constant(SIDE, "curated", pa.string())))


def distributions(executor, dataset: Dataset, model: str | None, lineage: dict, before, final) -> dict[str, Any]:
    """Pool vs curated: caption length, CLIP score, language, cluster sizes, metadata entry
    counts, each when its table exists (histograms: ``frames.value_histogram``)."""
    dists: dict[str, Any] = {}
    sides = sides_frame(before, final).cache()
    captions = None  # (uid, text, side): the samples tagged once, for caption lengths and languages
    if dataset.has_table("samples"):
        captions = table_frame(executor, dataset, "samples", ["uid", "text"]).join(sides, "uid")
        if not dataset.has_table("text_stats"):
            captions = captions.cache()  # read again for the language sample

        def words(b: pa.RecordBatch) -> pa.Array:
            n = pc.list_value_length(pc.utf8_split_whitespace(b.column("text")))
            return pc.min_element_wise(n, pa.scalar(CAPTION_WORDS_CAP, n.type))

        dists["caption_words"] = value_histogram(values_of(captions, words, integer=True), SIDES,
                                                 bins=30, integer=True)
    if model and dataset.has_table(f"embeddings/{model}"):
        emb = table_frame(executor, dataset, f"embeddings/{model}", ["uid", "clip_score"])
        dists["clip_score"] = value_histogram(values_of(emb.join(sides, "uid"), lambda b: b.column("clip_score"),
                                                        integer=False), SIDES, bins=40, integer=False)
    lang = _languages(executor, dataset, sides, captions)
    if captions is not None:
        captions.release()
    if lang:
        dists["language"] = lang
    clusters = _cluster_sizes(executor, dataset, lineage, sides)
    if clusters:
        dists["cluster_sizes"] = clusters
    meta = _metadata_counts(executor, dataset, sides)
    if meta:
        dists["metadata_entries"] = meta
    sides.release()
    return dists


def _per_key_counts(frame, key: str):
    """(side, v = rows per value of ``key`` on that side): per cluster, per metadata entry."""
    return frame.aggregate([SIDE, key], {VALUE: ("uid", "count")}).select([SIDE, VALUE])


def _cluster_sizes(executor, dataset: Dataset, lineage: dict, sides) -> dict | None:
    clusters = _find_tables_with(dataset, {"uid", "cluster_id"}, prefix="clusters/")
    if not clusters:
        return None
    # the clustering this run made, else the most recently written one
    own = [t for t in clusters if t == f"clusters/recipe-{lineage.get('recipe')}"]
    name = own[0] if own else max(clusters, key=lambda t: max(storage.fingerprint(p)[1] for p in dataset.shards(t)))
    c = table_frame(executor, dataset, name, ["uid", "cluster_id"])
    hist = value_histogram(_per_key_counts(c.join(sides, "uid"), "cluster_id"), SIDES, bins=30, integer=True)
    return {"table": name, **hist}


def _languages(executor, dataset: Dataset, sides, captions) -> dict | None:
    """Language label shares before/after: from text_stats when present (every sample), else
    fastText on a stable sample of each side's captions (``captions``: the samples tagged with
    their sides; both sides picked in one pass, each by the same salted hash)."""
    counts: dict[str, dict[str, int]] = {k: {} for k in SIDES}
    if dataset.has_table("text_stats"):
        t = table_frame(executor, dataset, "text_stats", ["uid", "language"])
        got = t.join(sides, "uid").aggregate([SIDE, "language"], {"n": ("uid", "count")}).collect_small(MAX_LANGUAGES)
        for side, lang, n in zip(got.column(SIDE).to_pylist(), got.column("language").to_pylist(),
                                 got.column("n").to_pylist()):
            counts[side][lang or "none"] = counts[side].get(lang or "none", 0) + int(n)
    elif captions is not None:
        try:
            from curate.filters.langid import load_model, predict_languages
        except ImportError:
            return None
        rows = captions.aggregate([SIDE], {"n": ("uid", "count")}).collect_small(len(SIDES))
        picks = stable_sample(captions, LANGUAGE_SAMPLE, {(s,): int(n) for s, n in zip(
            rows.column(SIDE).to_pylist(), rows.column("n").to_pylist())}, lambda g: "lang", groups=(SIDE,))
        for (side,), picked in sorted(picks.items()):
            try:
                labels, _ = predict_languages(picked.column("text"), load_model())
            except Exception:  # no language model here: the section is left out, not the report
                return None
            vc = pc.value_counts(pc.fill_null(labels, "none")).to_pylist()
            counts[side] = {r["values"]: int(r["counts"]) for r in vc}
    else:
        return None

    def shares(vc: dict) -> tuple[dict, int]:
        n = sum(vc.values())
        return {k: v / max(1, n) for k, v in vc.items()}, n

    b, nb = shares(counts["pool"])
    a, na = shares(counts["curated"])
    top = sorted(set(b) | set(a), key=lambda k: (-(b.get(k, 0) + a.get(k, 0)), k))[:12]
    return {"labels": top, "pool": [b.get(k, 0) for k in top], "curated": [a.get(k, 0) for k in top],
            "n_pool": nb, "n_curated": na}


ENTRY = pa.schema([("uid", pa.string()), ("entry_id", pa.int64())])


def _entries(batch: pa.RecordBatch) -> pa.Table:
    """One row per (uid, matched metadata entry)."""
    ids = batch.column("entry_ids")
    idx = pc.list_parent_indices(ids)
    return pa.table([pc.take(batch.column("uid"), idx), pc.list_flatten(ids).cast(pa.int64())], schema=ENTRY)


def _metadata_counts(executor, dataset: Dataset, sides) -> dict | None:
    """Matches per metadata entry before/after, from MetaCLIP's metadata_matches (uid, entry_ids)."""
    if not dataset.has_table("metadata_matches"):
        return None
    t = table_frame(executor, dataset, "metadata_matches", ["uid", "entry_ids"])
    hist = value_histogram(_per_key_counts(t.map_batches(_entries, ENTRY).join(sides, "uid"), "entry_id"), SIDES,
                           bins=30, integer=True, transform=np.log10)
    if not hist["n"].get("pool"):
        return None
    return {"table": "metadata_matches", **hist}
