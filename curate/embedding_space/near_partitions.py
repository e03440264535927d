"""Near duplicates searched within partitions of an IVF layout, so no worker (and not the
driver) holds every vector.

Layout: with a clustering, its centroids are the coarse quantiser; each row's *home* is its
nearest centroid and its *probes* are its ``nprobe`` nearest centroids (FAISS IVF semantics).
Without a clustering there is one partition holding every row (the exact all-pairs search,
for small pools).

Search: partition ``p`` holds its residents (home ``p``) and its visitors (every row that
probes ``p``; rows are replicated ``nprobe`` times). Each visitor is range-searched against
the residents, so a pair (i, j) is found when ``home(j)`` is among i's probes or ``home(i)``
among j's: the symmetric form of an IVF search with ``nprobe`` lists. A pair that two
partitions both find is emitted only by the smaller of them, so pairs are never counted
twice. At ``nprobe`` = number of centroids every pair is found (the exact result).

Decisions: the pairs (two uids, a similarity, and each side's CLIP score: a few dozen bytes
per *duplicate pair*, never per input row) form a frame; its connected components are found
by the engine (``components.component_labels``: min-label propagation, no node list on the
driver); one row per component is kept (the smallest uid, or with ``keep_by="clip_score"``
the highest score, ties by uid), as ``duplicates.near_duplicate_decisions`` does, in a
grouped apply per component. Every other input row is kept alone (an anti-join).
"""

from __future__ import annotations


import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


from curate import storage
from curate.decisions import decisions_table
from curate.embedding_space.duplicates import NEAR_REASON
from curate.embedding_space.vectors import (binary_to_matrix, embedding_binary, embedding_columns, embedding_matrix,
                                           matrix_to_binary, normalize_rows)
from curate.engine import worker_cache

ROW_SCHEMA = pa.schema([("partition", pa.int32()), ("uid", pa.string()), ("clip_score", pa.float32()),
                        ("home", pa.int32()), ("probes", pa.binary()), ("embedding", pa.binary())])
PAIR_SCHEMA = pa.schema([("uid_a", pa.string()), ("uid_b", pa.string()), ("similarity", pa.float32()),
                         ("score_a", pa.float32()), ("score_b", pa.float32())])
GROUPS_SCHEMA = pa.schema([("uid", pa.string()), ("kept", pa.bool_()), ("value", pa.float64()),
                           ("detail", pa.string())])


def _quantiser(path: str | None):
    if not path:
        return None
    def build():
        import faiss

        c = storage.load_npy(path)
        q = faiss.IndexFlatIP(c.shape[1])
        q.add(np.ascontiguousarray(c, dtype=np.float32))
        return q

    return worker_cache(("near_quantiser", *storage.fingerprint(path)), build)


def partition_rows(task: dict):
    """One shard's rows, each once per partition it probes (home first), float16 embeddings."""
    t = storage.read_parquet(task["path"], columns=["uid", "clip_score", *embedding_columns(task["embedding"])])
    if t.num_rows == 0:
        return
    x = embedding_matrix(t, task["embedding"], f"{task['path']}: ")  # checks the rows are finite
    n = len(x)
    q = _quantiser(task.get("centroids_npy"))
    if q is None:
        probes = np.zeros((n, 1), np.int32)
    else:
        _, probes = q.search(x, int(task["nprobe"]))
        probes = probes.astype(np.int32)
    home = probes[:, 0]
    npr = probes.shape[1]
    rep = np.repeat(np.arange(n), npr)
    uid = t.column("uid").combine_chunks()
    yield pa.record_batch(
        [pa.array(probes.reshape(-1)), uid.take(pa.array(rep)),
         t.column("clip_score").combine_chunks().take(pa.array(rep)), pa.array(home[rep]),
         matrix_to_binary(probes, dtype=np.int32).take(pa.array(rep)),
         # the stored row's bytes: the receiver normalises them as the reference does (a float16
         # rounding of the normalised row is off unit length by up to ~1e-4, cosines past 1)
         embedding_binary(t, task["embedding"]).take(pa.array(rep))], schema=ROW_SCHEMA)


def partition_pairs(group: pa.Table, threshold: float, dim: int) -> pa.Table:
    """Pairs with cosine above ``threshold`` among one partition's rows (visitors against
    residents), each pair once across all partitions."""
    group = group.sort_by("uid")  # row order never depends on the shuffle
    p = int(group.column("partition")[0].as_py())
    uids = group.column("uid").combine_chunks()
    home = group.column("home").to_numpy()
    resident = np.flatnonzero(home == p)
    if len(resident) == 0 or group.num_rows < 2:
        return PAIR_SCHEMA.empty_table()
    x = normalize_rows(binary_to_matrix(group.column("embedding"), dim))
    import faiss

    index = faiss.IndexFlatIP(dim)
    index.add(np.ascontiguousarray(x[resident]))
    a, b, s = _range_pairs(index, x, threshold)
    b = resident[b]
    keep = a != b
    a, b, s = a[keep], b[keep], s[keep]
    # rows are uid-sorted: (min, max) index is the uid-ordered pair; drop the mirror images
    lo, hi = np.minimum(a, b), np.maximum(a, b)
    key = lo.astype(np.int64) * len(x) + hi
    _, first = np.unique(key, return_index=True)
    lo, hi, s = lo[first], hi[first], s[first]
    # the partition that emits a pair: the smallest one that finds it
    pr = _probe_lists(group)
    own = _finder(pr, home, lo, hi)
    sel = own == p
    lo, hi, s = lo[sel], hi[sel], s[sel]
    score = group.column("clip_score").to_numpy(zero_copy_only=False)
    idx_lo, idx_hi = pa.array(lo), pa.array(hi)
    return pa.Table.from_arrays([uids.take(idx_lo), uids.take(idx_hi), pa.array(s.astype(np.float32)),
                                 pa.array(score[lo].astype(np.float32)), pa.array(score[hi].astype(np.float32))],
                                schema=PAIR_SCHEMA)


def _range_pairs(index, x: np.ndarray, threshold: float, batch_size: int = 16384):
    """(query row, index row, similarity) of every range-search hit, as ``duplicates.similar_pairs``
    searches (FAISS range search in query batches)."""
    A, B, S = [], [], []
    n = len(x)
    for s in range(0, n, batch_size):
        lims, D, I = index.range_search(x[s:s + batch_size], float(threshold))
        A.append(np.repeat(np.arange(s, min(n, s + batch_size)), np.diff(lims).astype(np.int64)))
        B.append(I.astype(np.int64))
        S.append(D)
    return np.concatenate(A), np.concatenate(B), np.concatenate(S)


def _probe_lists(group: pa.Table) -> np.ndarray:
    arr = group.column("probes").combine_chunks()
    width = len(arr[0].as_py()) // 4 if len(arr) else 1
    return binary_to_matrix(arr, width, np.int32)


def _finder(probes: np.ndarray, home: np.ndarray, i: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Smallest partition that finds pair (i, j): home(j) if i probes it, home(i) if j probes it."""
    big = np.iinfo(np.int32).max
    hj_in_i = (probes[i] == home[j][:, None]).any(axis=1)
    hi_in_j = (probes[j] == home[i][:, None]).any(axis=1)
    return np.minimum(np.where(hj_in_i, home[j], big), np.where(hi_in_j, home[i], big))


def write_quantiser(ds, run: str, clusters: str | None, embedding: str, dim: int,
                    table: str | None = None) -> str | None:
    """The clustering's normalised centroids as a .npy every task can read (None: one partition).
    A clustering of another embeddings table (another model of the same dim) is refused: its
    partitions are not neighbourhoods of this table's space, and pairs across them are missed."""
    if not clusters:
        return None
    from curate.embedding_space.clusters import load_clustering
    from curate.errors import DatasetError

    c, cmeta = load_clustering(ds, clusters)
    if cmeta["embedding"] != embedding or c.shape[1] != dim:
        raise DatasetError(f"clustering {clusters!r} is over {cmeta['embedding']} embeddings of dim {c.shape[1]}; "
                           f"near dedup uses {embedding} of dim {dim}")
    if table is not None and cmeta.get("embeddings_table") not in (None, table):
        raise DatasetError(f"clustering {clusters!r} was made from {cmeta['embeddings_table']}; near dedup searches "
                           f"{table}: cluster that table (`curate cluster -m MODEL --name NAME`) or leave out "
                           "--clusters")
    path = ds.path(f"_tmp/{run}/coarse_centroids.npy")
    from curate.tables.atomic import atomic_write_bytes

    atomic_write_bytes(path, storage.npy_bytes(np.asarray(
        c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12), dtype=np.float32)))
    return str(path)


def _uid_rows(task: dict):
    t = storage.read_parquet(task["path"], columns=["uid"])
    if t.num_rows:
        yield from t.to_batches()


def _ends(batch: pa.RecordBatch) -> pa.Table:
    """Both ends of each pair: (uid, dst, similarity, score of uid)."""
    t = pa.Table.from_batches([batch])
    a = [t.column("uid_a"), t.column("uid_b"), t.column("similarity"), t.column("score_a")]
    b = [t.column("uid_b"), t.column("uid_a"), t.column("similarity"), t.column("score_b")]
    return pa.concat_tables([pa.Table.from_arrays(a, schema=ENDS_SCHEMA), pa.Table.from_arrays(b, schema=ENDS_SCHEMA)])


ENDS_SCHEMA = pa.schema([("uid", pa.string()), ("dst", pa.string()), ("similarity", pa.float32()),
                         ("score", pa.float32())])


def group_decisions(executor, pairs, keep_by: str):
    """(frame of (uid, kept, value, detail) for every uid in a pair, stats, the cached frame it
    is built on): components by the engine, one keeper per component in a grouped apply."""
    from curate.embedding_space.components import component_labels, keepers

    ends = pairs.map_batches(_ends, ENDS_SCHEMA).cache()
    labels, rounds = component_labels(ends.select(["uid", "dst"]))
    best = ends.aggregate(["uid"], {"best": ("similarity", "max"), "score": ("score", "max")})
    groups = labels.join(best, "uid").group_apply_many("label", keepers(keep_by), GROUPS_SCHEMA).cache()
    kept = groups.aggregate(["kept"], {"n": ("uid", "count")}).collect_small(2)
    by = dict(zip(kept.column("kept").to_pylist(), kept.column("n").to_pylist()))
    # what each group removed is the decisions' own count (``near_duplicate``); a "removed" here
    # would stand in for the job's, which also counts samples without an embedding
    stats = {"groups_with_duplicates": int(by.get(True, 0)), "component_rounds": rounds}
    # ``ends`` is released with ``groups`` once the decisions are written (releasing it now
    # would make Spark recompute the cached groups built on it)
    return groups, stats, ends


def _group_decisions(stage: str):
    def to_decisions(batch: pa.RecordBatch) -> pa.Table:
        kept = batch.column("kept")
        return decisions_table(batch.column("uid"), stage, kept, pc.if_else(kept, "kept", NEAR_REASON),
                               batch.column("value"), batch.column("detail"))

    return to_decisions


def near_duplicates(executor, ds, table: str, run: str, threshold: float, keep_by: str, embedding: str,
                    clusters: str | None, nprobe: int, uids=None, stage: str = "near_dedup", manifest=None):
    """(decisions of every input row as an engine frame, stats, release): pairs searched per
    partition by the engine's grouped apply, components over the pairs frame by the engine,
    decisions as a frame for the shared finish; ``release()`` frees what the engine keeps
    cached for them once they are written. ``uids``: the input restriction as a frame (a
    semi-join), or None."""
    from contextlib import nullcontext

    from curate.embedding_space.common import UID_SCHEMA, shard_tasks
    from curate.embedding_space.vectors import check_embedding_shards
    from curate.selection import uniform_decisions
    from curate.tables import load_schema

    decisions = load_schema("decisions").arrow()
    timed = manifest.stage if manifest is not None else (lambda name: nullcontext())
    dim = (check_embedding_shards(ds.shards(table)) or 1) * (2 if embedding == "concat" else 1)
    quantiser = write_quantiser(ds, run, clusters, embedding, dim, table)
    k = len(storage.load_npy(quantiser, mmap=True)) if quantiser else 1
    tasks = shard_tasks(ds, table, embedding=embedding, centroids_npy=quantiser, nprobe=min(int(nprobe), k))
    with timed("search"):
        rows = executor.frame_from_tasks(tasks, partition_rows, ROW_SCHEMA)
        rows = rows.semi_join(uids) if uids is not None else rows
        pairs = rows.group_apply("partition", lambda g: partition_pairs(g, threshold, dim), PAIR_SCHEMA).cache()
        n_pairs = pairs.count()
    with timed("groups"):
        groups, stats, ends = group_decisions(executor, pairs, keep_by)
    inputs = executor.frame_from_tasks(shard_tasks(ds, table), _uid_rows, UID_SCHEMA)
    inputs = inputs.semi_join(uids) if uids is not None else inputs
    dec = (groups.map_batches(_group_decisions(stage), decisions)
           .union(uniform_decisions(inputs.anti_join(groups), stage, True, "kept")))
    stats = dict(stats, pairs=n_pairs, partitions=k, nprobe=min(int(nprobe), k))

    def release() -> None:
        for frame in (groups, ends, pairs):
            frame.release()

    return dec, stats, release
