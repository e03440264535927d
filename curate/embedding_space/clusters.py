"""``curate cluster``: k-means over an embeddings table, then every sample assigned.

1. A deterministic sample (smallest uid hashes, so independent of sharding) is gathered on
   the driver and FAISS k-means is trained on it.
2. Centroids go to ``centroids/<name>/`` with ``_meta.json`` (model, embedding, parameters).
3. Each embeddings shard is assigned by one task (centroids loaded once per worker) and
   written as the aligned shard of ``clusters/<name>/`` (same rows, same order).
4. ``cluster_stats/<name>/``: size, d_intra (mean cosine distance to the centroid) and
   d_inter (mean cosine distance to the 20 nearest other centroids) per cluster.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pyarrow as pa

from curate import storage
from curate.embedding_space.common import (cleanup_tmp, collect_rows, embeddings_table, shard_tasks, uid_frame,
                                           input_record, write_json, write_uid_filter)
from curate.embedding_space import guards
from curate.embedding_space.kmeans import assign, train_kmeans
from curate.embedding_space.sampling import (MAX_SAMPLE_BYTES, merge_guard_candidates, normalized_matrix,
                                             read_shard_matrices, sample_rows, save_guard_candidates,
                                             uid_hash_array)
from curate.embedding_space.vectors import EMBEDDING_KINDS, binary_to_matrix, check_embedding_shards, matrix_to_binary
from curate.engine import LocalExecutor, worker_cache
from curate.errors import DatasetError
from curate.manifest import RunManifest
from curate.tables import Dataset, atomic_write_bytes, load_schema, write_parquet_atomic

META = "_meta.json"
SAMPLE_SCHEMA = pa.schema([("uid", pa.string()), ("hash", pa.int64()), ("embedding", pa.binary())])


def centroids_dir(dataset: Dataset, name: str) -> Path | str:
    return dataset.table_dir(f"centroids/{name}")


def load_clustering(dataset: Dataset, name: str) -> tuple[np.ndarray, dict]:
    """(centroids float32 (k, d), meta) of clustering ``name``."""
    d = centroids_dir(dataset, name)
    meta_path = storage.join(d, META)
    if not storage.exists(meta_path):
        have = sorted(t.split("/", 1)[1] for t in dataset.tables() if t.startswith("centroids/")) \
            if dataset.exists() else []
        raise DatasetError(f"clustering {name!r} not found in {dataset.root} (no {meta_path}; clusterings: "
                           f"{have or 'none'}; run `curate cluster` first)")
    meta = json.loads(storage.read_bytes(meta_path))
    t = dataset.read(f"centroids/{name}")
    t = t.sort_by("cluster_id")
    col = t.column("centroid").combine_chunks()
    c = col.flatten().to_numpy().reshape(len(t), col.type.list_size).astype(np.float32)
    return c, meta


def _load_centroids_cached(root: str, name: str) -> tuple[np.ndarray, dict]:
    ds = Dataset(root)
    p = ds.shard_path(f"centroids/{name}", 0)
    return worker_cache(("centroids", *storage.fingerprint(p)), lambda: load_clustering(ds, name))


# ---------------------------------------------------------------- tasks
SAMPLE_ROWS_SCHEMA = SAMPLE_SCHEMA.append(pa.field("shard", pa.int32()))


def sample_task(task: dict):
    """Rows of one shard whose uid hash is below the threshold, embeddings as float16 bytes.

    With ``cache_dir`` the shard's decoded matrices are kept there for the assign pass, so each
    shard is decoded once per job. With ``restricted`` the rows go to the engine's semi-join
    with the input restriction first, and the per-shard limit is applied after it
    (``smallest_of_shard``); otherwise it is applied here."""
    uids, mats = read_shard_matrices(task["path"], task["embedding"], task.get("cache_dir"), task["index"],
                                     write_cache=True)
    if task.get("cache_dir") and len(uids):
        save_guard_candidates(task["cache_dir"], task["index"], uids, mats, task["embedding"], f"{task['path']}: ")
    if len(uids) == 0:
        return
    h = uid_hash_array(uids, task["seed"])
    sel = np.flatnonzero(h <= task["threshold"])
    if not task.get("restricted"):
        sel = _smallest(uids, h, sel, task["limit"])
    if len(sel) == 0:
        return
    su = uids.take(pa.array(sel))
    x = normalized_matrix([np.asarray(m[sel]) for m in mats], task["embedding"], su, f"{task['path']}: ")
    cols = [su, pa.array(h[sel], pa.int64()), matrix_to_binary(x)]
    if task.get("restricted"):
        yield pa.record_batch(cols + [pa.array(np.full(len(sel), task["index"], np.int32))], schema=SAMPLE_ROWS_SCHEMA)
    else:
        yield pa.record_batch(cols, schema=SAMPLE_SCHEMA)


def _smallest(uids, h: np.ndarray, sel: np.ndarray, limit: int) -> np.ndarray:
    """``sel`` cut to its ``limit`` smallest (hash, uid), in row order: no task sends more than the
    whole sample, and the smallest are the ones the driver would keep anyway (matters only when
    hashes bunch, e.g. the take-all retry)."""
    if len(sel) <= limit:
        return sel
    order = np.lexsort((np.asarray(uids.take(pa.array(sel)).to_pylist(), dtype=str), h[sel]))
    return np.sort(sel[order[:limit]])


def smallest_of_shard(limit: int):
    """The per-shard limit of ``sample_task`` for rows already restricted by the engine: one
    shard's rows whole in one group (``group_apply`` by shard)."""
    def take(group: pa.Table) -> pa.Table:
        uids = group.column("uid").combine_chunks()
        sel = _smallest(uids, group.column("hash").to_numpy(), np.arange(group.num_rows), limit)
        return group.take(pa.array(sel)).select(SAMPLE_SCHEMA.names)

    return take


def assign_task(task: dict) -> dict:
    """Assign one embeddings shard; write the aligned clusters shard; per-cluster sums."""
    c, meta = _load_centroids_cached(task["root"], task["name"])
    ds = Dataset(task["root"])
    out = ds.shard_path(f"clusters/{task['name']}", task["index"])
    uids, mats = read_shard_matrices(task["path"], meta["embedding"], task.get("cache_dir"), task["index"])
    k = c.shape[0]
    x = normalized_matrix(mats, meta["embedding"], uids, f"{task['path']}: ")
    if x.shape[0] and x.shape[1] != c.shape[1]:
        raise DatasetError(f"{task['path']}: embeddings have dim {x.shape[1]}, clustering {task['name']!r} "
                           f"has dim {c.shape[1]}")
    cn = c / np.maximum(np.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    if meta["spherical"]:
        ids, cos = assign(x, cn, metric="ip")
        l2 = np.sqrt(np.maximum(2.0 - 2.0 * cos, 0.0))
    else:
        ids, d2 = assign(x, c, metric="l2")
        cos = np.einsum("ij,ij->i", x, cn[ids]) if len(ids) else np.zeros(0, np.float32)
        l2 = np.sqrt(np.maximum(d2, 0.0))
    cos = np.clip(cos, -1.0, 1.0).astype(np.float32)
    dist = (1.0 - cos).astype(np.float32)
    table = pa.Table.from_arrays(
        [uids, pa.array(ids.astype(np.int32)), pa.array(cos),
         pa.array(dist), pa.array(l2.astype(np.float32))],
        schema=load_schema("clusters").arrow())
    write_parquet_atomic(table, out)
    size = np.bincount(ids, minlength=k)
    dsum = np.bincount(ids, weights=dist.astype(np.float64), minlength=k)
    from curate.embedding_space.guards import histogram

    # per-cluster sums go to a file, not into the task result: S results of k numbers each would
    # sit on the driver together (S x k Python objects); the driver adds the files one by one
    sums = storage.join(task["tmp_dir"], f"sums-{task['index']:05d}.npz")
    buf = io.BytesIO()
    np.savez(buf, size=size, distance_sum=dsum, similarity_hist=histogram(cos))
    atomic_write_bytes(sums, buf.getvalue())
    return {"rows": int(len(ids)), "sums": str(sums)}


# ---------------------------------------------------------------- job
def check_cluster(ds: Dataset, model_id: str, k: int, embedding: str = "image", niter: int = 20,
                  max_points_per_centroid: int = 256, input_uids=None) -> str:
    """The embeddings table to cluster, after every check that needs no data pass (run before
    an engine starts)."""
    if not ds.exists():
        raise DatasetError(f"dataset folder {ds.root} does not exist")
    if k < 1 or niter < 1 or max_points_per_centroid < 1:
        raise DatasetError(f"need k >= 1, --niter >= 1 and --max-points-per-centroid >= 1 "
                           f"(got {k}, {niter}, {max_points_per_centroid})")
    if embedding not in EMBEDDING_KINDS:
        raise DatasetError(f"--embedding must be one of {EMBEDDING_KINDS}, got {embedding!r}")
    table = embeddings_table(ds, model_id)
    total = len(input_uids) if input_uids is not None else ds.count(table)
    if total < k:
        raise DatasetError(f"clustering needs at least k={k} rows, "
                           + (f"the input subset holds {total} uids" if input_uids is not None else f"{table} has {total}"))
    return table


def run_cluster(dataset: Dataset | str, model_id: str, k: int, name: str = "kmeans", embedding: str = "image",
                niter: int = 20, seed: int = 0, spherical: bool = True, max_points_per_centroid: int = 256,
                sample_size: int | None = None, gpu="auto", executor=None, input_uids=None,
                n_neighbors: int = 20, max_sample_bytes: int = MAX_SAMPLE_BYTES) -> dict:
    """Train k-means on a sample of ``embeddings/<model_id>`` and assign every row.

    The training sample is the rows with the smallest uid hashes, at most
    ``sample_size or k * max_points_per_centroid`` rows and at most ``max_sample_bytes`` of float32
    (``curate.embedding_space.sampling``): the driver's share does not grow with the pool."""
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    executor = executor or LocalExecutor()
    table = check_cluster(ds, model_id, k, embedding, niter, max_points_per_centroid, input_uids)
    params = dict(model_id=model_id, embedding=embedding, k=k, niter=niter, seed=seed, spherical=spherical,
                  max_points_per_centroid=max_points_per_centroid, sample_size=sample_size,
                  max_sample_bytes=int(max_sample_bytes), restricted=input_uids is not None,
                  input_subset=input_record(input_uids),
                  engine=executor.name, n_neighbors=n_neighbors)
    m = RunManifest("cluster", params)
    m["inputs"] = [{"table": table, "rows": ds.count(table)}]
    # what later jobs check the table against: new vectors under the same uids need a new clustering
    from curate.tables.fingerprint import table_fingerprint

    fingerprint = table_fingerprint(ds, table)
    uid_filter = write_uid_filter(ds, f"cluster-{name}", input_uids)
    total = len(input_uids) if input_uids is not None else ds.count(table)
    dim = (check_embedding_shards(ds.shards(table)) or 1) * (2 if embedding == "concat" else 1)
    want, capped = sample_rows(total, k, dim, max_points_per_centroid, sample_size, max_sample_bytes)
    if want < k:
        raise DatasetError(f"clustering needs at least k={k} rows, {table} has {total}")
    # each shard is decoded once: the sample pass keeps the decoded matrices for the assign pass
    tmp_dir = ds.path(f"_tmp/cluster-{name}")
    cache_dir = storage.join(tmp_dir, "decoded")
    _clear_cache(cache_dir)
    with m.stage("sample"):
        xs = _training_sample(ds, executor, table, embedding, seed, want, total, dim, str(cache_dir), uid_filter)
    if len(xs) < k:  # a restriction whose uids are mostly not in the table (only those are sampled)
        _clear_cache(cache_dir)
        cleanup_tmp(ds, f"cluster-{name}")
        raise DatasetError(f"clustering needs at least k={k} rows with embeddings: {len(xs)} of the input subset's "
                           f"{total} uids have a row in {table}")
    with m.stage("train"):
        c = train_kmeans(xs, k, niter=niter, seed=seed, spherical=spherical,
                         max_points_per_centroid=max_points_per_centroid, gpu=gpu)
    meta = _write_centroids(ds, name, c, dict(params, name=name, dim=int(c.shape[1]), embeddings_table=table,
                                              train_rows=int(len(xs)), embeddings_fingerprint=fingerprint),
                            str(cache_dir))
    # drop shards of an earlier clustering with the same name before writing new ones
    ds.remove_shards_beyond(f"clusters/{name}", 0)
    atasks = [dict(t, name=name, cache_dir=str(cache_dir), tmp_dir=str(tmp_dir)) for t in shard_tasks(ds, table)]
    with m.stage("assign"):
        res = executor.map_tasks(atasks, assign_task, "assign")
    size, dsum, sim_hist = _add_sums([r["sums"] for r in res], k)
    _write_assigned_stats(ds, name, c, size, dsum, n_neighbors)
    counts = {"rows": int(size.sum()), "clusters": k, "empty_clusters": int((size == 0).sum()),
              "largest_cluster": int(size.max()) if k else 0, "train_rows": int(len(xs)),
              "sample_capped": bool(capped)}
    m["counts"] = counts
    m["guards"] = _cluster_guards(xs, sim_hist, counts)
    m["outputs"] = {"centroids": f"centroids/{name}", "clusters": f"clusters/{name}",
                    "cluster_stats": f"cluster_stats/{name}"}
    m.write(ds, f"cluster-{name}")
    _clear_cache(cache_dir)
    cleanup_tmp(ds, f"cluster-{name}")
    return {"name": name, "counts": counts, "timings_s": m["timings_s"], "meta": meta, "guards": m["guards"]}


def _training_sample(ds: Dataset, executor, table: str, embedding: str, seed: int, want: int, total: int, dim: int,
                     cache_dir: str, uid_filter) -> np.ndarray:
    """The k-means training rows (float32): the ``want`` smallest (uid hash, uid) of the input."""
    # Hash threshold giving ~10% more rows than wanted; the smallest hashes are then taken.
    frac = min(1.0, 1.1 * want / max(total, 1))
    tasks = shard_tasks(ds, table, embedding=embedding, seed=seed, threshold=_hash_threshold(frac),
                        cache_dir=cache_dir, limit=int(want), restricted=uid_filter is not None)
    uids = uid_frame(executor, uid_filter)  # --subset: a semi-join in the engine, no uid set per worker
    sample = _sample(executor, tasks, uids, want)
    while sample.num_rows < want and frac < 1.0:
        # Short: an unlucky draw, or fewer rows than ``total`` (a --subset naming uids without
        # embeddings). A larger fraction sized by what this one found (~1.2x ``want`` expected),
        # never "every row": that brought up to ``want`` rows a shard, the whole table, to the
        # driver. The ``want`` smallest hashes are the same whichever threshold holds them.
        frac = min(1.0, max(2 * frac, 1.2 * frac * want / max(sample.num_rows, 1)))
        tasks = [dict(t, threshold=_hash_threshold(frac)) for t in tasks]
        sample = _sample(executor, tasks, uids, want)
    sample = sample.sort_by([("hash", "ascending"), ("uid", "ascending")]).slice(0, want)
    return binary_to_matrix(sample.column("embedding"), dim).astype(np.float32)


def _hash_threshold(frac: float) -> int:
    """The uid-hash bound keeping about ``frac`` of the rows (every row at 1)."""
    return int(min(2**63 - 1, frac * 2**63)) if frac < 1.0 else 2**63 - 1


def _write_centroids(ds: Dataset, name: str, c: np.ndarray, meta: dict, cache_dir: str) -> dict:
    """``centroids/<name>`` and its ``_meta.json`` (``meta`` plus the FAISS version and the
    embeddings table's health); returns the meta."""
    import faiss

    meta = dict(meta, faiss=faiss.__version__)
    table = meta["embeddings_table"]
    # the embeddings table's health (guards.table_health) as the later jobs on this clustering
    # report it, from the candidates the sample tasks kept: they need not decode the table again
    xg = merge_guard_candidates(cache_dir, [storage.parquet_file(p).metadata.num_rows for p in ds.shards(table)])
    if xg is not None:
        table_h, table_w = guards.embedding_health(guards.pairwise_histogram(xg))
        meta["embeddings_health"] = {"health": table_h, "warnings": table_w}
    k = c.shape[0]
    ct = pa.Table.from_arrays([pa.array(np.arange(k, dtype=np.int32)),
                               pa.FixedSizeListArray.from_arrays(pa.array(c.reshape(-1)), c.shape[1])],
                              schema=load_schema("centroids").arrow(dim=c.shape[1]))
    ds.write_table(f"centroids/{name}", ct)
    write_json(storage.join(centroids_dir(ds, name), META), meta)
    return meta


def _write_assigned_stats(ds: Dataset, name: str, c: np.ndarray, size: np.ndarray, dsum: np.ndarray,
                          n_neighbors: int) -> None:
    """``cluster_stats/<name>``: sizes, d_intra (mean distance to the centroid), d_inter."""
    from curate.embedding_space.dbp import centroid_d_inter

    with np.errstate(invalid="ignore", divide="ignore"):
        d_intra = np.where(size > 0, dsum / np.maximum(size, 1), np.nan)
    write_cluster_stats(ds, name, size, d_intra, centroid_d_inter(c, n_neighbors))


def _cluster_guards(xs: np.ndarray, sim_hist: np.ndarray, counts: dict) -> dict:
    # the sample is ordered by uid hash, so its head is a random pick
    health, warns = guards.embedding_health(guards.pairwise_histogram(xs[:guards.PAIR_SAMPLE]))
    return guards.guards_record(
        {"embeddings": health, "acted_on": guards.distribution(sim_hist, "cosine to the assigned centroid")},
        warns + guards.cluster_warnings(counts["rows"], counts["clusters"], counts["empty_clusters"]))


def _sample(executor, tasks: list[dict], uids, want: int) -> pa.Table:
    """The sample candidates of every shard (at most ``want`` per shard); with an input
    restriction ``uids`` (a frame), rows are semi-joined with it and cut per shard after."""
    if uids is None:
        return collect_rows(executor, tasks, sample_task, SAMPLE_SCHEMA, "sample")
    rows = executor.frame_from_tasks(tasks, sample_task, SAMPLE_ROWS_SCHEMA).semi_join(uids)
    return rows.group_apply("shard", smallest_of_shard(want), SAMPLE_SCHEMA).collect_small(want * max(1, len(tasks)))


def _add_sums(paths: list[str], k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-cluster sizes, distance sums and the similarity histogram over the assign tasks'
    files, added in task order (memory O(k), whatever the number of shards)."""
    size, dsum, hist = np.zeros(k, np.int64), np.zeros(k), np.zeros(guards.BINS, np.int64)
    for p in paths:
        with np.load(io.BytesIO(storage.read_bytes(p)), allow_pickle=False) as z:
            size += z["size"]
            dsum += z["distance_sum"]
            hist += z["similarity_hist"]
        storage.delete(storage.resolve(p))
    return size, dsum, hist


def write_cluster_stats(ds: Dataset, name: str, size, d_intra, d_inter, complexity=None, probability=None,
                        quota=None, kept=None) -> None:
    k = len(size)

    def col(v, typ):
        if v is None:
            return pa.nulls(k, typ)
        arr = np.asarray(v, dtype=np.float64 if typ == pa.float64() else np.int64)
        return pa.array(arr, typ, mask=np.isnan(arr) if arr.dtype.kind == "f" else None)

    t = pa.Table.from_arrays(
        [pa.array(np.arange(k, dtype=np.int32)), pa.array(np.asarray(size, dtype=np.int64)),
         col(d_intra, pa.float64()), col(d_inter, pa.float64()), col(complexity, pa.float64()),
         col(probability, pa.float64()), col(quota, pa.int64()), col(kept, pa.int64())],
        schema=load_schema("cluster_stats").arrow())
    ds.write_table(f"cluster_stats/{name}", t)


def _clear_cache(cache_dir) -> None:
    storage.remove_tree(cache_dir)
