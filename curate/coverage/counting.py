"""Coverage counting tasks, run on any executor: a caption task reads one ``samples`` shard, an
image task one ``embeddings/<model>`` shard; each counts concept matches per population
(the pool and each subset), which a task reads for its own uid range."""

from __future__ import annotations

from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from curate import storage
from curate.engine import worker_cache
from curate.errors import DatasetError, InputFileError
from curate.metaclip.matching import Matcher, load_metadata
from curate.tables import Dataset


TABLE = "coverage"
POOL = "pool"
SIZE_ID = -1  # concept_id of a population's size row
CAPTION, IMAGE = "caption", "image"
COUNT_SCHEMA = pa.schema([("concept_id", pa.int32()), ("source", pa.string()),
                          ("population", pa.string()), ("count", pa.int64())])
CONCEPTS_FILE = "_concepts.json"
PROMPTS_FILE = "_concept_embeddings.npy"
DEFAULT_MIN_POOL_COUNT = 20
STARVED_K = 10
_MAX_SIMILARITIES = 1 << 24  # image x concept cosines held at once in a task (64 MiB of float32)


# ---------------------------------------------------------------- populations (inside tasks)
def _uid_range_filter(lo: str, hi: str):
    return (pc.field("uid") >= lo) & (pc.field("uid") <= hi)


def _parquet_dataset(paths):
    """A pyarrow dataset over a file, a folder or a list of files, local or on a store."""
    if isinstance(paths, list):
        if not paths or not storage.is_uri(paths[0]):
            return pads.dataset(paths, format="parquet")
        locs = [storage.resolve(p) for p in paths]
        return pads.dataset([loc.path for loc in locs], format="parquet", filesystem=locs[0].fs)
    if not storage.is_uri(paths):
        return pads.dataset(paths, format="parquet")
    loc = storage.resolve(paths)
    return pads.dataset(loc.path, format="parquet", filesystem=loc.fs)


def _population_uids(spec: dict, lo: str, hi: str) -> pa.Array | None:
    """uids of a population within [lo, hi]; None means every row (the whole pool)."""
    kind = spec["kind"]
    if kind == "all":
        return None
    if kind == "uids":
        t = _parquet_dataset(spec["path"]).to_table(columns=["uid"], filter=_uid_range_filter(lo, hi))
        return t.column("uid").combine_chunks()
    if kind == "downloaded":
        files = [str(p) for p in Dataset(spec["root"]).shards("downloads")]
        t = _parquet_dataset(files).to_table(
            columns=["uid"], filter=_uid_range_filter(lo, hi) & (pc.field("status") == "success"))
        return t.column("uid").combine_chunks()
    raise ValueError(f"unknown population kind {kind!r}")


def _masks(task: dict, uids: pa.Array) -> dict[str, np.ndarray]:
    """Per population label, which of ``uids`` belong to it (subsets within the pool)."""
    if len(uids) == 0:
        return {}
    lo, hi = pc.min(uids).as_py(), pc.max(uids).as_py()
    pool_uids = _population_uids(task["pool"], lo, hi)
    pool = np.ones(len(uids), bool) if pool_uids is None else \
        pc.is_in(uids, value_set=pool_uids).to_numpy(zero_copy_only=False)
    out = {POOL: pool}
    for s in task["subsets"]:
        member = pc.is_in(uids, value_set=_population_uids({"kind": "uids", "path": s["path"]}, lo, hi))
        out[s["label"]] = member.to_numpy(zero_copy_only=False)
    return out


def _concept_matcher(path: str, sha: str) -> Matcher:
    return worker_cache(("curate.coverage.Matcher", path, sha), lambda: Matcher(load_metadata(path)))


def _concept_weights(path: str, sha: str) -> np.ndarray:
    return worker_cache(("curate.coverage.weights", path, sha), lambda: storage.load_npy(path))


def _rows(source: str, totals: dict[str, np.ndarray], sizes: dict[str, int]) -> pa.RecordBatch:
    ids, pops, counts = [], [], []
    for label, c in totals.items():
        nz = np.flatnonzero(c)
        ids.append(nz.astype(np.int32))
        pops += [label] * len(nz)
        counts.append(c[nz].astype(np.int64))
        ids.append(np.array([SIZE_ID], np.int32))
        pops.append(label)
        counts.append(np.array([sizes[label]], np.int64))
    return pa.record_batch([pa.array(np.concatenate(ids) if ids else np.zeros(0, np.int32)),
                            pa.array([source] * len(pops), pa.string()), pa.array(pops, pa.string()),
                            pa.array(np.concatenate(counts) if counts else np.zeros(0, np.int64))],
                           schema=COUNT_SCHEMA)


def _shard_matches(task: dict) -> Iterator[tuple[pa.Array, dict[str, np.ndarray], np.ndarray, np.ndarray]]:
    """Per batch of one shard: (uids, population masks, row, concept) where each (row,
    concept) pair is a match of the task's source (caption substring, or image-prompt cosine
    at or above the threshold). Subset masks are already restricted to the pool."""
    path = task["input"]
    try:
        pf = storage.parquet_file(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise InputFileError(str(path), f"cannot read Parquet shard ({e})") from None
    source = task["source"]
    column = "text" if source == CAPTION else "image_embedding"
    missing = [c for c in ("uid", column) if c not in pf.schema_arrow.names]
    if missing:
        raise InputFileError(str(path), f"missing column(s) {', '.join(missing)}")
    n = task["num_concepts"]
    # membership is read once per shard for the shard's whole uid range
    masks_all = _masks(task, pf.read(columns=["uid"]).column("uid").combine_chunks())
    masks_all = {k: (v & masks_all[POOL]) for k, v in masks_all.items()}
    if source == CAPTION:
        matcher = _concept_matcher(task["concepts"], task["concepts_sha"])
    else:
        weights = _concept_weights(task["weights"], task["weights_sha"])
        threshold = np.float32(task["threshold"])
    offset = 0
    for b in pf.iter_batches(batch_size=task.get("batch_size", 65536), columns=["uid", column]):
        m = b.num_rows
        masks = {k: v[offset:offset + m] for k, v in masks_all.items()}
        offset += m
        if source == CAPTION:
            ids = matcher.match_array(b.column("text"))
            rows = pc.list_parent_indices(ids).to_numpy(zero_copy_only=False).astype(np.int64)
            concepts = pc.list_flatten(ids).to_numpy(zero_copy_only=False).astype(np.int64)
        else:
            col = b.column(column)
            emb = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32).reshape(m, col.type.list_size)
            if emb.shape[1] != weights.shape[1]:
                raise DatasetError(f"{path}: image embeddings have {emb.shape[1]} dimensions, the concept "
                                   f"prompts {weights.shape[1]} (another model?)")
            step = max(1, _MAX_SIMILARITIES // max(1, n))  # rows per product: bounded memory for long lists
            rows_l, concepts_l = [], []
            for a in range(0, m, step):
                r, c = np.nonzero((emb[a:a + step] @ weights.T) >= threshold)  # [rows, concepts]
                rows_l.append(r.astype(np.int64) + a)
                concepts_l.append(c.astype(np.int64))
            rows = np.concatenate(rows_l) if rows_l else np.zeros(0, np.int64)
            concepts = np.concatenate(concepts_l) if concepts_l else np.zeros(0, np.int64)
        yield b.column("uid"), masks, rows, concepts


def coverage_counts_task(task: dict) -> Iterator[pa.RecordBatch]:
    """Per-concept counts of one shard, for the pool and every subset (partial sums)."""
    n = task["num_concepts"]
    labels = [POOL] + [s["label"] for s in task["subsets"]]
    totals = {lab: np.zeros(n, np.int64) for lab in labels}
    sizes = dict.fromkeys(labels, 0)
    for _, masks, rows, concepts in _shard_matches(task):
        for lab in labels:
            sizes[lab] += int(masks[lab].sum())
            totals[lab] += np.bincount(concepts[masks[lab][rows]], minlength=n)[:n]
    yield _rows(task["source"], totals, sizes)


# ---------------------------------------------------------------- caption and image together
# A concept counted in both the caption and the image of one sample (Udandarao et al.'s
# "matched" frequency) needs each sample's two match sets side by side: tasks emit one row per
# pool sample and source (its matched concept ids, its populations as bits), the executor
# shuffles them by a uid bucket (grouped_apply), and each bucket returns per-concept counts.
BOTH = "caption+image"
MATCH_ROWS = pa.schema([("bucket", pa.int32()), ("uid", pa.string()), ("source", pa.string()),
                        ("ids", pa.list_(pa.int32())), ("populations", pa.int64())])
MAX_SUBSETS_WITH_BOTH = 62  # populations travel as bits of an int64 (bit 0: the pool)


def coverage_match_rows_task(task: dict) -> Iterator[pa.RecordBatch]:
    """One row per pool sample of the shard: its matched concept ids and population bits."""
    labels = [POOL] + [s["label"] for s in task["subsets"]]
    buckets = task["buckets"]
    for uids, masks, rows, concepts in _shard_matches(task):
        pool = masks[POOL]
        if not pool.any():
            continue
        bits = np.zeros(len(uids), np.int64)
        for j, lab in enumerate(labels):
            bits |= masks[lab].astype(np.int64) << j
        keep = np.flatnonzero(pool)
        remap = np.full(len(uids), -1, np.int64)
        remap[keep] = np.arange(len(keep))
        sel = pool[rows]
        offsets = np.zeros(len(keep) + 1, np.int32)
        np.cumsum(np.bincount(remap[rows[sel]], minlength=len(keep)), out=offsets[1:])
        kept_uids = uids.take(pa.array(keep))
        head = np.array([int(u[:8], 16) for u in kept_uids.to_pylist()], np.int64)  # uids are hex
        yield pa.record_batch([pa.array((head % buckets).astype(np.int32)), kept_uids,
                               pa.array([task["source"]] * len(keep), pa.string()),
                               pa.ListArray.from_arrays(pa.array(offsets), pa.array(concepts[sel].astype(np.int32))),
                               pa.array(bits[keep])], schema=MATCH_ROWS)


def bucket_counts(rows: pa.Table, num_concepts: int, labels: list[str]) -> pa.Table:
    """Per-concept counts of one uid bucket for caption, image and both, with size rows."""
    n = num_concepts
    uid_idx = pc.dictionary_encode(rows.column("uid").combine_chunks()).indices.to_numpy(zero_copy_only=False)
    n_uids = int(uid_idx.max()) + 1 if len(uid_idx) else 0
    bits = np.zeros(n_uids, np.int64)
    bits[uid_idx] = rows.column("populations").to_numpy()
    source = rows.column("source").to_numpy(zero_copy_only=False)
    ids = rows.column("ids").combine_chunks()
    parent = pc.list_parent_indices(ids).to_numpy(zero_copy_only=False)
    flat = pc.list_flatten(ids).to_numpy(zero_copy_only=False).astype(np.int64)
    keys, present = {}, {}
    for s in (CAPTION, IMAGE):
        is_s = source == s
        present[s] = np.zeros(n_uids, bool)
        present[s][uid_idx[is_s]] = True
        on = is_s[parent]
        keys[s] = np.unique(uid_idx[parent[on]].astype(np.int64) * n + flat[on])
    keys[BOTH] = np.intersect1d(keys[CAPTION], keys[IMAGE], assume_unique=True)
    present[BOTH] = present[CAPTION] & present[IMAGE]
    out = []
    for s in (CAPTION, IMAGE, BOTH):
        u, c = keys[s] // n, keys[s] % n
        totals, sizes = {}, {}
        for j, lab in enumerate(labels):
            member = (bits >> j) & 1 == 1
            totals[lab] = np.bincount(c[member[u]], minlength=n)[:n]
            sizes[lab] = int((member & present[s]).sum())
        out.append(_rows(s, totals, sizes))
    return pa.Table.from_batches(out, schema=COUNT_SCHEMA)


class BucketCounts:
    """``bucket_counts`` with its parameters bound (picklable for Spark workers)."""

    def __init__(self, num_concepts: int, labels: list[str]):
        self.num_concepts, self.labels = num_concepts, labels

    def __call__(self, rows: pa.Table) -> pa.Table:
        return bucket_counts(rows, self.num_concepts, self.labels)
