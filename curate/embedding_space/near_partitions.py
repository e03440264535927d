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
per *duplicate pair*, never per input row) are joined into connected components; one row per
component is kept (the smallest uid, or with ``keep_by="clip_score"`` the highest score, ties
by uid), as ``duplicates.near_duplicate_decisions`` does. A second pass over the shards then
writes one decision per input row.
"""

from __future__ import annotations


import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


from curate import storage
from curate.decisions import decisions_table
from curate.embedding_space.common import read_uid_filter, restrict
from curate.embedding_space.duplicates import NEAR_REASON, connected_components
from curate.embedding_space.vectors import binary_to_matrix, embedding_columns, embedding_matrix, matrix_to_binary
from curate.engine import worker_cache
from curate.tables import write_parquet_atomic

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
    t = restrict(t, read_uid_filter(task.get("uid_filter")))
    if t.num_rows == 0:
        return
    x16 = np.ascontiguousarray(embedding_matrix(t, task["embedding"], f"{task['path']}: "), dtype=np.float16)
    n = len(x16)
    q = _quantiser(task.get("centroids_npy"))
    if q is None:
        probes = np.zeros((n, 1), np.int32)
    else:
        _, probes = q.search(x16.astype(np.float32), int(task["nprobe"]))
        probes = probes.astype(np.int32)
    home = probes[:, 0]
    npr = probes.shape[1]
    rep = np.repeat(np.arange(n), npr)
    uid = t.column("uid").combine_chunks()
    yield pa.record_batch(
        [pa.array(probes.reshape(-1)), uid.take(pa.array(rep)),
         t.column("clip_score").combine_chunks().take(pa.array(rep)), pa.array(home[rep]),
         matrix_to_binary(probes, dtype=np.int32).take(pa.array(rep)),
         matrix_to_binary(x16).take(pa.array(rep))], schema=ROW_SCHEMA)


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
    x = binary_to_matrix(group.column("embedding"), dim).astype(np.float32)
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


def group_decisions(pairs: pa.Table, keep_by: str) -> tuple[pa.Table, dict]:
    """For every uid in a pair: kept, value (its highest similarity) and detail (its group's kept
    uid); as ``near_duplicate_decisions`` decides them."""
    if pairs.num_rows == 0:
        return GROUPS_SCHEMA.empty_table(), {"pairs": 0, "groups_with_duplicates": 0, "removed": 0}
    both = pa.chunked_array(pairs.column("uid_a").chunks + pairs.column("uid_b").chunks).combine_chunks()
    nodes = pc.unique(both).sort()
    n = len(nodes)
    a = pc.index_in(pairs.column("uid_a"), value_set=nodes).to_numpy()
    b = pc.index_in(pairs.column("uid_b"), value_set=nodes).to_numpy()
    s = pairs.column("similarity").to_numpy().astype(np.float64)
    labels = connected_components(n, a, b)
    best = np.full(n, -np.inf)
    np.maximum.at(best, np.concatenate([a, b]), np.concatenate([s, s]))
    score = np.zeros(n)
    if keep_by == "clip_score":
        score[a] = pairs.column("score_a").to_numpy(zero_copy_only=False)
        score[b] = pairs.column("score_b").to_numpy(zero_copy_only=False)
    # nodes are uid-sorted, so index order is uid order: keeper = first of (label, -score, index)
    order = np.lexsort((np.arange(n), -score, labels))
    first = np.ones(n, dtype=bool)
    first[1:] = labels[order][1:] != labels[order][:-1]
    keeper_of = np.empty(n, np.int64)
    keeper_of[labels[order[first]]] = order[first]
    keeper = keeper_of[labels]
    kept = keeper == np.arange(n)
    t = pa.Table.from_arrays([nodes, pa.array(kept), pa.array(best), nodes.take(pa.array(keeper))],
                             schema=GROUPS_SCHEMA)
    stats = {"pairs": int(pairs.num_rows), "groups_with_duplicates": int(kept.sum()), "removed": int((~kept).sum())}
    return t, stats


def write_groups(groups: pa.Table, path) -> str:
    write_parquet_atomic(groups, path)
    return str(path)


def _groups(path: str) -> pa.Table:
    return worker_cache(("near_groups", *storage.fingerprint(path)), lambda: storage.read_parquet(path))


def decision_rows(task: dict):
    """One near-dedup decision per row of a shard (its group's outcome, or kept alone)."""
    t = storage.read_parquet(task["path"], columns=["uid"])
    t = restrict(t, read_uid_filter(task.get("uid_filter")))
    if t.num_rows == 0:
        return
    uid = t.column("uid").combine_chunks()
    g = _groups(task["groups"])
    pos = pc.index_in(uid, value_set=g.column("uid").combine_chunks())
    hit = pc.is_valid(pos)
    take = pc.fill_null(pos, 0)

    def col(name):
        nulls = pa.nulls(len(uid), g.schema.field(name).type)
        if g.num_rows == 0:  # no pair anywhere in the pool: every row is kept alone
            return nulls
        return pc.if_else(hit, g.column(name).combine_chunks().take(take), nulls)

    kept = pc.fill_null(col("kept"), True)
    reason = pc.if_else(kept, "kept", NEAR_REASON)
    yield from decisions_table(uid, task["stage"], kept, reason, col("value"), col("detail")).to_batches()


def write_quantiser(ds, run: str, clusters: str | None, embedding: str, dim: int) -> str | None:
    """The clustering's normalised centroids as a .npy every task can read (None: one partition)."""
    if not clusters:
        return None
    from curate.embedding_space.clusters import load_clustering
    from curate.errors import DatasetError

    c, cmeta = load_clustering(ds, clusters)
    if cmeta["embedding"] != embedding or c.shape[1] != dim:
        raise DatasetError(f"clustering {clusters!r} is over {cmeta['embedding']} embeddings of dim {c.shape[1]}; "
                           f"near dedup uses {embedding} of dim {dim}")
    path = ds.path(f"_tmp/{run}/coarse_centroids.npy")
    from curate.tables.dataset import atomic_write_bytes

    atomic_write_bytes(path, storage.npy_bytes(np.asarray(
        c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12), dtype=np.float32)))
    return str(path)


def near_duplicates(executor, ds, table: str, run: str, threshold: float, keep_by: str, embedding: str,
                    clusters: str | None, nprobe: int, uid_filter, stage: str = "near_dedup", manifest=None):
    """(decisions of every input row as an engine frame, stats): pairs searched per partition by
    the executor's grouped apply, components over the pairs, decisions written by shard tasks."""
    from contextlib import nullcontext

    from curate.embedding_space.common import grouped_apply, restricted_frame, shard_tasks, uid_frame
    from curate.embedding_space.vectors import check_embedding_shards
    from curate.tables import load_schema

    timed = manifest.stage if manifest is not None else (lambda name: nullcontext())
    dim = (check_embedding_shards(ds.shards(table)) or 1) * (2 if embedding == "concat" else 1)
    quantiser = write_quantiser(ds, run, clusters, embedding, dim)
    k = len(storage.load_npy(quantiser, mmap=True)) if quantiser else 1
    tasks = shard_tasks(ds, table, embedding=embedding, uid_filter=uid_filter, centroids_npy=quantiser,
                        nprobe=min(int(nprobe), k))
    with timed("search"):
        pairs = grouped_apply(executor, tasks, partition_rows, ROW_SCHEMA, "partition",
                              lambda g: partition_pairs(g, threshold, dim), PAIR_SCHEMA)
    with timed("groups"):
        groups, stats = group_decisions(pairs, keep_by)
        gpath = write_groups(groups, ds.path(f"_tmp/{run}/near_groups.parquet"))
    # one decision per input row, written by shard tasks (an engine frame the shared finish writes)
    dec = restricted_frame(executor, shard_tasks(ds, table, groups=gpath, stage=stage), decision_rows,
                           load_schema("decisions").arrow(), uid_frame(executor, uid_filter))
    stats = dict(stats, partitions=k, nprobe=min(int(nprobe), k))
    return dec, stats
