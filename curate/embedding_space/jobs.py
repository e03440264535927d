"""The embedding-space selection jobs: SemDeDup, DBP/SSP pruning, exact and near duplicate
removal, decontamination. Each reads its input (optionally restricted to a uid set), writes
``decisions/<run>/`` (one row per input uid), the kept uids as ``subsets/<run>/``, per-cluster
stats where clusters are involved, and ``_runs/<run>.json``; and returns the decisions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.decisions import decisions_table
from curate.embedding_space import dbp as _dbp
from curate.embedding_space import guards as _guards
from curate.embedding_space.clusters import cleanup_tmp, load_clustering, write_cluster_stats
from curate.embedding_space.common import (UID_SCHEMA, collect_rows, embeddings_table, read_uid_filter,
                                           restrict, restricted_frame, shard_tasks, uid_frame, write_uid_filter)
from curate.embedding_space.decontaminate import REASON as EVAL_REASON
from curate.embedding_space.semdedup import KEEP_CHOICES, semdedup_group_table
from curate.embedding_space.vectors import embedding_columns, embedding_matrix, matrix_to_binary
from curate.engine import LocalExecutor, worker_cache
from curate.errors import DatasetError
from curate.manifest import RunManifest
from curate.selection import finish_selection
from curate.tables import Dataset, load_schema

NO_EMBEDDING = "no_embedding"
NOT_DOWNLOADED = "not_downloaded"


DECISIONS = load_schema("decisions").arrow()
# decisions plus the row's cluster and distance, for the per-cluster stats of the run
DECISIONS_C = (DECISIONS.append(pa.field("cluster_id", pa.int32(), nullable=False))
               .append(pa.field("distance", pa.float32(), nullable=False))
               .append(pa.field("distance_sum", pa.float64(), nullable=False)))
# one row per cluster: its rows and their summed distance to the centroid
CLUSTER_SUMS = pa.schema([("cluster_id", pa.int32()), ("n", pa.int64()), ("distance_sum", pa.float64())])


def _distance_sum(group: pa.Table) -> float:
    """A cluster's summed distances, added in uid order: the same float wherever its rows came
    from (a sum in arrival order could differ in the last bit between partitionings)."""
    d = group.column("distance").take(pc.sort_indices(group.column("uid"))).to_numpy().astype(np.float64)
    return float(np.cumsum(d)[-1]) if len(d) else 0.0


def _cluster_sums(group: pa.Table) -> pa.Table:
    return pa.table([pa.array([group.column("cluster_id")[0].as_py()], pa.int32()), pa.array([group.num_rows]),
                     pa.array([_distance_sum(group)])], schema=CLUSTER_SUMS)


def _ds(dataset) -> Dataset:
    return dataset if isinstance(dataset, Dataset) else Dataset(dataset)


def _finish(ds: Dataset, run: str, stage: str, decisions: pa.Table, manifest: RunManifest, output: str | None,
            extra_counts: dict | None = None, guards: tuple[dict, list[str]] | None = None,
            removal_guard: bool = True, executor=None) -> dict:
    """``curate.selection.finish_selection`` for a decisions table the driver already holds
    (kept for steps not yet written as frames); the result also carries the table."""
    executor = executor or LocalExecutor()
    res = finish_selection(executor, ds, run, stage, executor.frame_from_table(decisions.select(DECISIONS.names)
                                                                                .cast(DECISIONS)),
                           manifest, output, extra_counts, guards=guards, removal_guard=removal_guard,
                           cleanup=lambda: cleanup_tmp(ds, run))
    res["decisions"] = decisions
    return res


# Driver-side helpers for steps that still hold their decisions as a table (with ``_finish``).
def _values_histogram(dec: pa.Table, transform=None) -> np.ndarray:
    """Histogram of a decisions table's ``value`` column (the similarity each row was judged by)."""
    v = dec.column("value").to_numpy(zero_copy_only=False) if dec.num_rows else np.zeros(0)
    v = np.asarray([np.nan if x is None else x for x in v], dtype=np.float64) if v.dtype == object else v
    return _guards.histogram(transform(v) if transform else v)


def _missing_decisions(ds: Dataset, input_uids, table: str, stage: str, reason: str) -> pa.Table:
    if input_uids is None:
        return decisions_table([], stage, [], [])
    from curate.embedding_space.common import UidList, missing_uids

    if isinstance(input_uids, UidList):
        input_uids = pq.read_table(input_uids.path, columns=["uid"]).column("uid").combine_chunks()
    present = pa.concat_arrays([pq.read_table(p, columns=["uid"]).column("uid").combine_chunks()
                                for p in ds.shards(table)]) if ds.shards(table) else pa.array([], pa.string())
    miss = missing_uids(input_uids, present)
    return decisions_table(miss, stage, [False] * len(miss), [reason] * len(miss))


def _concat_decisions(*tables: pa.Table) -> pa.Table:
    parts = [t.select(DECISIONS.names).cast(DECISIONS) for t in tables if t.num_rows]
    return pa.concat_tables(parts) if parts else DECISIONS.empty_table()


def _clustering_health(ds: Dataset, meta: dict) -> tuple[dict, list[str]]:
    return _guards.table_health(ds, meta["embeddings_table"], meta["embedding"])


def _missing_frame(executor, ds: Dataset, uids, table: str, stage: str, reason: str):
    """Decisions (removed, ``reason``) for the restriction's uids absent from ``table``: an
    anti-join in the engine; None without a restriction."""
    if uids is None:
        return None
    present = executor.frame_read([str(p) for p in ds.shards(table)], UID_SCHEMA)

    def to_decisions(batch: pa.RecordBatch) -> pa.Table:
        n = batch.num_rows
        return decisions_table(batch.column("uid"), stage, pa.array([False] * n), pa.array([reason] * n, pa.string()))

    return uids.anti_join(present).map_batches(to_decisions, DECISIONS)


def _with_missing(decisions, missing):
    decisions = decisions.select(DECISIONS.names)
    return decisions.union(missing) if missing is not None else decisions


# ---------------------------------------------------------------- checks (before any engine starts)
def check_dataset(ds: Dataset) -> Dataset:
    if not ds.root.is_dir():
        raise DatasetError(f"dataset folder {ds.root} does not exist")
    return ds


def check_clustering(ds: Dataset, clusters: str) -> dict:
    """The clustering's metadata; an error if it or the embeddings table it was made from is missing."""
    check_dataset(ds)
    _, meta = load_clustering(ds, clusters)
    if not ds.has_table(meta["embeddings_table"]):
        raise DatasetError(f"clustering {clusters!r} was made from {meta['embeddings_table']}, which is missing "
                           f"in {ds.root}")
    return meta


def check_semdedup(ds: Dataset, clusters: str, eps: float, keep: str) -> None:
    if keep not in KEEP_CHOICES:
        raise DatasetError(f"--keep must be one of {KEEP_CHOICES}, got {keep!r}")
    if not 0.0 <= eps <= 1.0:
        raise DatasetError(f"--eps must be in [0, 1], got {eps}")
    check_clustering(ds, clusters)


def check_prune(ds: Dataset, clusters: str, keep_fraction: float, method: str = "dbp", keep: str = "hard",
                temperature: float = 0.5, balance_ratio: float = 0.5, n_neighbors: int = 20) -> None:
    if method not in ("dbp", "ssp"):
        raise DatasetError(f"pruning method must be dbp or ssp, got {method!r}")
    if keep not in KEEP_CHOICES:
        raise DatasetError(f"--keep must be one of {KEEP_CHOICES}, got {keep!r}")
    if not 0.0 <= keep_fraction <= 1.0:
        raise DatasetError(f"--keep-fraction must be in [0, 1], got {keep_fraction}")
    if temperature <= 0 or not 0.0 <= balance_ratio <= 1.0 or n_neighbors < 1:
        raise DatasetError(f"need --temperature > 0, --balance-ratio in [0, 1] and --neighbors >= 1 "
                           f"(got {temperature}, {balance_ratio}, {n_neighbors})")
    check_clustering(ds, clusters)


def check_exact_dedup(ds: Dataset) -> None:
    check_dataset(ds)
    if not ds.has_table("downloads"):
        raise DatasetError(f"table downloads not found in {ds.root} (run `curate download` first)")


def check_near_dedup(ds: Dataset, model_id: str, threshold: float, keep_by: str = "uid", embedding: str = "image",
                     clusters: str | None = None, nprobe: int = 8) -> str:
    """The embeddings table near dedup reads, after checking every argument."""
    from curate.embedding_space.vectors import EMBEDDING_KINDS

    if keep_by not in ("uid", "clip_score"):
        raise DatasetError(f"--keep-by must be uid or clip_score, got {keep_by!r}")
    if not -1.0 <= threshold <= 1.0:
        raise DatasetError(f"--threshold must be a cosine similarity in [-1, 1], got {threshold}")
    if embedding not in EMBEDDING_KINDS:
        raise DatasetError(f"--embedding must be one of {EMBEDDING_KINDS}, got {embedding!r}")
    if nprobe < 1:
        raise DatasetError(f"--nprobe must be >= 1, got {nprobe}")
    table = embeddings_table(check_dataset(ds), model_id)
    if clusters:
        check_clustering(ds, clusters)
    return table


def check_decontaminate(ds: Dataset, model_id: str, eval_source: str, threshold: float,
                        model_name: str | None = None, pretrained: str | None = None) -> str:
    """The pool's embeddings table, after checking the threshold, the evaluation source and, for
    an image folder, that the model to embed it with resolves."""
    if not -1.0 <= threshold <= 1.0:
        raise DatasetError(f"--threshold must be a cosine similarity in [-1, 1], got {threshold}")
    table = embeddings_table(check_dataset(ds), model_id)
    p = Path(str(eval_source))
    if not p.exists() and not ds.has_table(str(eval_source)):
        raise DatasetError(f"--eval {eval_source}: neither an image folder, a Parquet table, nor a table of {ds.root}")
    if p.is_dir() and not any(p.glob("*.parquet")):
        _eval_model_ref(ds, model_id, model_name, pretrained)
    return table


def _eval_model_ref(ds: Dataset, model_id: str, model_name: str | None, pretrained: str | None):
    """The model that embeds evaluation images: the pool's own (via the resolver), or the one given."""
    from curate.models.resolve import resolve_model

    if model_name is None:
        return resolve_model(model_id, dataset=ds)
    return resolve_model(model_name, pretrained)


# ---------------------------------------------------------------- clustered rows
def _cluster_rows(task: dict):
    """(cluster_id, uid, distance[, embedding]) of one embeddings shard and its aligned clusters shard."""
    ds = Dataset(task["root"])
    cpath = ds.shard_path(f"clusters/{task['clusters']}", task["index"])
    if not cpath.exists():
        raise DatasetError(f"{cpath} is missing: clusters/{task['clusters']} does not cover {task['path']} "
                           f"(rerun `curate cluster`)")
    cl = pq.read_table(cpath, columns=["uid", "cluster_id", "distance"])
    cols = [("cluster_id", cl.column("cluster_id")), ("uid", cl.column("uid")), ("distance", cl.column("distance"))]
    if task.get("embedding"):
        emb = pq.read_table(task["path"], columns=["uid", *embedding_columns(task["embedding"])])
        if emb.num_rows != cl.num_rows or not emb.column("uid").equals(cl.column("uid")):
            raise DatasetError(f"{cpath} does not match {task['path']} row for row (embeddings changed after "
                               f"clustering; rerun `curate cluster`)")
        cols.append(("embedding", matrix_to_binary(embedding_matrix(emb, task["embedding"], f"{task['path']}: "))))
    t = pa.table(dict(cols))
    t = restrict(t, read_uid_filter(task.get("uid_filter")))
    if t.num_rows:
        yield from t.to_batches()


def _row_schema(with_embedding: bool) -> pa.Schema:
    fields = [("cluster_id", pa.int32()), ("uid", pa.string()), ("distance", pa.float32())]
    if with_embedding:
        fields.append(("embedding", pa.binary()))
    return pa.schema(fields)


def _clustering_tasks(ds: Dataset, clusters: str, with_embedding: bool):
    _, meta = load_clustering(ds, clusters)
    table = meta["embeddings_table"]
    if not ds.has_table(table):
        raise DatasetError(f"clustering {clusters!r} was made from {table}, which is missing in {ds.root}")
    return meta, table, shard_tasks(ds, table, clusters=clusters,
                                    embedding=meta["embedding"] if with_embedding else None)


def _per_cluster(dec, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(size, kept, d_intra) per cluster over the run's input rows, summed by the engine."""
    t = dec.aggregate(["cluster_id", "kept"], {"n": ("uid", "count"), "dsum": ("distance_sum", "max")}
                      ).collect_small(2 * k)
    cid = t.column("cluster_id").to_numpy()
    n = t.column("n").to_numpy().astype(np.int64)
    kept_rows = t.column("kept").to_numpy(zero_copy_only=False).astype(bool)
    size = np.bincount(cid, weights=n, minlength=k).astype(np.int64)
    kept = np.bincount(cid[kept_rows], weights=n[kept_rows], minlength=k).astype(np.int64)
    dsum = np.zeros(k)
    dsum[cid] = t.column("dsum").to_numpy()  # the same per-cluster value on its kept and removed rows
    with np.errstate(invalid="ignore", divide="ignore"):
        d_intra = np.where(size > 0, dsum / np.maximum(size, 1), np.nan)
    return size, kept, d_intra


def _with_cluster(out: pa.Table, group: pa.Table) -> pa.Table:
    cid = np.full(out.num_rows, group.column("cluster_id")[0].as_py(), dtype=np.int32)
    return (out.append_column("cluster_id", pa.array(cid)).append_column("distance", group.column("distance"))
            .append_column("distance_sum", pa.array(np.full(out.num_rows, _distance_sum(group)))))


# ---------------------------------------------------------------- SemDeDup
def run_semdedup(dataset, clusters: str, eps: float, run: str = "semdedup", keep: str = "hard", seed: int = 0,
                 input_uids=None, executor=None, output: str | None = None, block_cells: int = 1 << 24,
                 device: str = "auto") -> dict:
    ds = _ds(dataset)
    executor = executor or LocalExecutor()
    check_semdedup(ds, clusters, eps, keep)
    c, _ = load_clustering(ds, clusters)
    uids = uid_frame(executor, write_uid_filter(ds, run, input_uids))
    meta, table, tasks = _clustering_tasks(ds, clusters, with_embedding=True)
    m = RunManifest(run, dict(stage="semdedup", clusters=clusters, eps=eps, keep=keep, seed=seed,
                              model_id=meta["model_id"], embedding=meta["embedding"],
                              restricted=input_uids is not None, engine=executor.name))
    m["inputs"] = [{"table": table, "rows": ds.count(table)}, {"table": f"clusters/{clusters}"}]
    dim = meta["dim"]

    def group_fn(group: pa.Table) -> pa.Table:
        out = semdedup_group_table(group, eps, dim, keep=keep, seed=seed, stage="semdedup",
                                   block_cells=block_cells, device=device)
        return _with_cluster(out, group)  # rows are in group order

    with m.stage("semdedup"):
        rows = restricted_frame(executor, tasks, _cluster_rows, _row_schema(True), uids)
        dec = rows.group_apply("cluster_id", group_fn, DECISIONS_C).cache()
        size, kept, d_intra = _per_cluster(dec, c.shape[0])
    try:
        write_cluster_stats(ds, run, size, d_intra, _dbp.centroid_d_inter(c), kept=kept)
        miss = _missing_frame(executor, ds, uids, table, "semdedup", NO_EMBEDDING)
        health, warns = _clustering_health(ds, meta)
        return finish_selection(executor, ds, run, "semdedup", _with_missing(dec, miss), m, output,
                                {"clusters_with_removals": int(((size - kept) > 0).sum())},
                                guards=({"embeddings": health}, warns),
                                acted_on=("largest cosine to an earlier item of the same cluster", None),
                                cleanup=lambda: cleanup_tmp(ds, run))
    finally:
        dec.release()


# ---------------------------------------------------------------- DBP / SSP
def run_prune(dataset, clusters: str, keep_fraction: float, method: str = "dbp", run: str | None = None,
              keep: str = "hard", seed: int = 0, temperature: float = 0.5, balance_ratio: float = 0.5,
              n_neighbors: int = 20, input_uids=None, executor=None, output: str | None = None) -> dict:
    """Density-based pruning (``dbp``) or self-supervised-prototype pruning (``ssp``)."""
    ds = _ds(dataset)
    executor = executor or LocalExecutor()
    run = run or method
    check_prune(ds, clusters, keep_fraction, method, keep, temperature, balance_ratio, n_neighbors)
    c, _ = load_clustering(ds, clusters)
    k = c.shape[0]
    uids = uid_frame(executor, write_uid_filter(ds, run, input_uids))
    meta, table, tasks = _clustering_tasks(ds, clusters, with_embedding=False)
    params = dict(stage=method, clusters=clusters, keep_fraction=keep_fraction, keep=keep, seed=seed,
                  model_id=meta["model_id"], restricted=input_uids is not None, engine=executor.name)
    if method == "dbp":
        params.update(temperature=temperature, balance_ratio=balance_ratio, n_neighbors=n_neighbors)
    m = RunManifest(run, params)
    m["inputs"] = [{"table": f"clusters/{clusters}", "rows": ds.count(f"clusters/{clusters}")}]
    with m.stage("stats"):
        rows = restricted_frame(executor, tasks, _cluster_rows, _row_schema(False), uids).cache()
        t = rows.select(["cluster_id", "uid", "distance"]).group_apply("cluster_id", _cluster_sums,
                                                                     CLUSTER_SUMS).collect_small(k)
        cid = t.column("cluster_id").to_numpy()
        size = np.bincount(cid, weights=t.column("n").to_numpy(), minlength=k).astype(np.int64)
        dsum = np.zeros(k)
        dsum[cid] = t.column("distance_sum").to_numpy()
    total = int(size.sum())
    try:
        n_keep = _dbp.n_keep_from_fraction(total, keep_fraction)
    except ValueError as e:
        raise DatasetError(str(e)) from e
    with np.errstate(invalid="ignore", divide="ignore"):
        d_intra = np.where(size > 0, dsum / np.maximum(size, 1), np.nan)
    d_inter = _dbp.centroid_d_inter(c, n_neighbors)
    if method == "dbp":
        plan = _dbp.dbp_plan(size, d_intra, d_inter, n_keep, temperature=temperature, balance_ratio=balance_ratio)
        quota = plan["quota"]
    else:
        plan = {"complexity": None, "probability": None}
        quota = _dbp.ssp_quotas(size, n_keep)
    quota_list = quota.astype(np.int64)
    stage = method
    reason = "dbp_pruned" if method == "dbp" else "ssp_pruned"

    def group_fn(group: pa.Table) -> pa.Table:
        cid = int(group.column("cluster_id")[0].as_py())
        uids = np.asarray(group.column("uid").to_pylist(), dtype=object)
        dist = group.column("distance").to_numpy()
        mask = _dbp.select_in_cluster(uids, dist, int(quota_list[cid]), keep=keep, seed=seed, cluster_id=cid)
        out = decisions_table(list(uids), stage, mask.tolist(), np.where(mask, "kept", reason).tolist(),
                              dist.astype(np.float64).tolist(), [f"cluster={cid}"] * len(uids))
        return _with_cluster(out, group)

    with m.stage("select"):
        dec = rows.group_apply("cluster_id", group_fn, DECISIONS_C).cache()
        size2, kept, _ = _per_cluster(dec, k)
    try:
        if not np.array_equal(size2, size) or int(kept.sum()) != n_keep:
            raise DatasetError(f"{run}: internal count mismatch (kept {int(kept.sum())}, planned {n_keep})")
        write_cluster_stats(ds, run, size, d_intra, d_inter, plan["complexity"], plan["probability"], quota, kept)
        miss = _missing_frame(executor, ds, uids, table, stage, NO_EMBEDDING)
        health, warns = _clustering_health(ds, meta)
        # removing most of the input is what a small --keep-fraction asks for: no removal warning here
        return finish_selection(executor, ds, run, stage, _with_missing(dec, miss), m, output,
                                {"target_kept": n_keep}, guards=({"embeddings": health}, warns),
                                acted_on=("cosine to the cluster centroid", _one_minus), removal_guard=False,
                                cleanup=lambda: cleanup_tmp(ds, run))
    finally:
        dec.release()
        rows.release()


def _one_minus(d: np.ndarray) -> np.ndarray:
    return 1.0 - d


# ---------------------------------------------------------------- exact duplicates
_DL_SCHEMA = pa.schema([("uid", pa.string()), ("status", pa.string()), ("sha256", pa.string())])


def _downloads_rows(task: dict):
    t = pq.read_table(task["path"], columns=["uid", "status", "sha256"])
    t = restrict(t, read_uid_filter(task.get("uid_filter")))
    if t.num_rows:
        yield from t.to_batches()


_HASH_SCHEMA = pa.schema([("bucket", pa.string()), ("uid", pa.string()), ("sha256", pa.string())])
HASH_BUCKET_CHARS = 4  # rows group by this prefix of the hash: whole hash groups, bounded group size


def _downloaded(batch: pa.RecordBatch):
    return pc.fill_null(pc.and_(pc.equal(batch.column("status"), "success"), pc.is_valid(batch.column("sha256"))), False)


def _hash_rows(batch: pa.RecordBatch) -> pa.Table:
    b = batch.filter(_downloaded(batch))
    sha = b.column("sha256")
    return pa.table([pc.utf8_slice_codeunits(sha, 0, HASH_BUCKET_CHARS), b.column("uid"), sha], schema=_HASH_SCHEMA)


def _not_downloaded(batch: pa.RecordBatch) -> pa.Table:
    b = batch.filter(pc.invert(_downloaded(batch)))
    n = b.num_rows
    return decisions_table(b.column("uid"), "exact_dedup", pa.array([False] * n), pa.array([NOT_DOWNLOADED] * n, pa.string()))


def _exact_group(group: pa.Table) -> pa.Table:
    from curate.embedding_space.duplicates import exact_duplicate_decisions

    return exact_duplicate_decisions(group.column("uid"), group.column("sha256"), stage="exact_dedup")


def run_exact_dedup(dataset, run: str = "exact_dedup", input_uids=None, executor=None, output: str | None = None) -> dict:
    """One sample per sha256 of the downloaded bytes (the smallest uid); rows group by hash
    (prefix buckets) in the engine, so no driver holds the downloads table."""
    ds = _ds(dataset)
    executor = executor or LocalExecutor()
    check_exact_dedup(ds)
    uids = uid_frame(executor, write_uid_filter(ds, run, input_uids))
    m = RunManifest(run, dict(stage="exact_dedup", restricted=input_uids is not None, engine=executor.name))
    m["inputs"] = [{"table": "downloads", "rows": ds.count("downloads")}]
    with m.stage("read"):
        rows = restricted_frame(executor, shard_tasks(ds, "downloads"), _downloads_rows, _DL_SCHEMA, uids).cache()
    try:
        with m.stage("dedup"):
            dec = rows.map_batches(_hash_rows, _HASH_SCHEMA).group_apply("bucket", _exact_group, DECISIONS)
        dec = dec.union(rows.map_batches(_not_downloaded, DECISIONS))
        miss = _missing_frame(executor, ds, uids, "downloads", "exact_dedup", NOT_DOWNLOADED)
        return finish_selection(executor, ds, run, "exact_dedup", _with_missing(dec, miss), m, output,
                                cleanup=lambda: cleanup_tmp(ds, run))
    finally:
        rows.release()


# ---------------------------------------------------------------- near duplicates
def run_near_dedup(dataset, model_id: str, threshold: float, run: str = "near_dedup", keep_by: str = "uid",
                   embedding: str = "image", clusters: str | None = None, nprobe: int = 8, input_uids=None,
                   executor=None, output: str | None = None) -> dict:
    """Near duplicates by embedding cosine >= ``threshold``: exact FAISS range search, or within the
    partitions of an IVF layout over the centroids of ``clusters`` probing ``nprobe`` lists
    (``curate.embedding_space.near_partitions``)."""
    from curate.embedding_space.near_partitions import near_duplicates

    ds = _ds(dataset)
    executor = executor or LocalExecutor()
    table = check_near_dedup(ds, model_id, threshold, keep_by, embedding, clusters, nprobe)
    uid_filter = write_uid_filter(ds, run, input_uids)
    m = RunManifest(run, dict(stage="near_dedup", model_id=model_id, threshold=threshold, keep_by=keep_by,
                              embedding=embedding, clusters=clusters, nprobe=nprobe,
                              restricted=input_uids is not None, engine=executor.name))
    m["inputs"] = [{"table": table, "rows": ds.count(table)}]
    # searched within the partitions of the clustering's IVF layout (one partition without one)
    dec, stats = near_duplicates(executor, ds, table, run, threshold, keep_by, embedding, clusters, nprobe,
                                 uid_filter, manifest=m)
    miss = _missing_frame(executor, ds, uid_frame(executor, uid_filter), table, "near_dedup", NO_EMBEDDING)
    health, warns = _guards.table_health(ds, table, embedding)
    return finish_selection(executor, ds, run, "near_dedup", _with_missing(dec, miss), m,
                            output, stats, guards=({"embeddings": health}, warns),
                            acted_on=("cosine of each removed sample to its group", None),
                            cleanup=lambda: cleanup_tmp(ds, run))


# ---------------------------------------------------------------- decontamination
def _eval_index(path: str):
    st = Path(path).stat()

    def build():
        from curate.embedding_space.decontaminate import build_eval_index

        return build_eval_index(np.load(path, allow_pickle=False))

    return worker_cache(("eval_index", path, st.st_mtime_ns, st.st_size), build)


def _decontam_rows(task: dict):
    from curate.embedding_space.decontaminate import nearest_eval

    t = pq.read_table(task["path"], columns=["uid", "image_embedding"])
    t = restrict(t, read_uid_filter(task.get("uid_filter")))
    if t.num_rows == 0:
        return
    x = embedding_matrix(t, "image", f"{task['path']}: ")
    sims, ids = nearest_eval(_eval_index(task["eval_npy"]), x)
    yield pa.record_batch([t.column("uid").combine_chunks(), pa.array(sims), pa.array(ids.astype(np.int64))],
                          schema=_DECONTAM_SCHEMA)


_DECONTAM_SCHEMA = pa.schema([("uid", pa.string()), ("similarity", pa.float32()), ("eval_index", pa.int64())])
_PER_EVAL = pa.schema([("eval_index", pa.int64()), ("count", pa.int64()), ("best", pa.float64()),
                       ("nearest", pa.string())])


def _nearest_copy(group: pa.Table) -> pa.Table:
    """One evaluation image's pool copies: their number, the closest (ties: smallest uid)."""
    top = group.sort_by([("similarity", "descending"), ("uid", "ascending")]).slice(0, 1)
    return pa.table([top.column("eval_index"), pa.array([group.num_rows], pa.int64()),
                     top.column("similarity").cast(pa.float64()), top.column("uid")], schema=_PER_EVAL)


def load_eval_embeddings(source: str, dataset: Dataset, model_id: str, model_name: str | None = None,
                         pretrained: str | None = None, batch_size: int = 64) -> tuple[list[str], np.ndarray]:
    """Evaluation image ids and normalised embeddings from a folder of images (embedded with the
    pool's model), a Parquet file/table folder with ``image_embedding``, or a table of ``dataset``."""
    p = Path(source)
    table_path = None
    if p.is_file() and p.suffix == ".parquet":
        table_path = [p]
    elif p.is_dir() and any(p.glob("*.parquet")):
        table_path = sorted(p.glob("*.parquet"))
    elif not p.exists() and dataset.has_table(source):
        table_path = dataset.shards(source)
    if table_path is not None:
        t = pa.concat_tables([pq.read_table(f) for f in table_path])
        if "image_embedding" not in t.column_names:
            raise DatasetError(f"{source}: evaluation table has no image_embedding column (columns: {t.column_names})")
        id_col = next((c for c in ("uid", "key", "path", "id") if c in t.column_names), None)
        ids = [str(v) for v in t.column(id_col).to_pylist()] if id_col else [str(i) for i in range(t.num_rows)]
        return ids, embedding_matrix(t, "image", f"{source}: ")
    if not p.is_dir():
        raise DatasetError(f"--eval {source}: neither an image folder, a Parquet table, nor a table of {dataset.root}")
    from curate.embed import embed_image_folder
    from curate.models import load_model

    ref = _eval_model_ref(dataset, model_id, model_name, pretrained)
    bundle = load_model(ref.name, ref.pretrained, seed=ref.seed)
    if bundle.model_id != model_id:
        raise DatasetError(f"evaluation images would be embedded with {bundle.model_id}, but the pool embeddings "
                           f"are {model_id}; pass --eval-model/--eval-pretrained matching the pool's model")
    paths, _, x = embed_image_folder(p, bundle, batch_size=batch_size)
    ids = [str(Path(q).relative_to(p)) for q in paths]
    return ids, np.asarray(x, dtype=np.float32)


def run_decontaminate(dataset, model_id: str, eval_source: str, threshold: float, run: str = "decontaminate",
                      model_name: str | None = None, pretrained: str | None = None, input_uids=None,
                      executor=None, output: str | None = None) -> dict:
    from curate.embedding_space.vectors import normalize_rows

    ds = _ds(dataset)
    executor = executor or LocalExecutor()
    table = check_decontaminate(ds, model_id, eval_source, threshold, model_name, pretrained)
    m = RunManifest(run, dict(stage="decontaminate", model_id=model_id, eval=str(eval_source), threshold=threshold,
                              restricted=input_uids is not None, engine=executor.name))
    with m.stage("embed_eval"):
        eval_ids, ex = load_eval_embeddings(str(eval_source), ds, model_id, model_name, pretrained)
    ex = normalize_rows(ex)
    if len(eval_ids) == 0:
        raise DatasetError(f"--eval {eval_source}: no evaluation images")
    m["inputs"] = [{"table": table, "rows": ds.count(table)}, {"eval": str(eval_source), "images": len(eval_ids)}]
    tmp = ds.root / "_tmp" / run
    tmp.mkdir(parents=True, exist_ok=True)
    npy = tmp / "eval.npy"
    with open(npy, "wb") as f:
        np.save(f, np.ascontiguousarray(ex, dtype=np.float32))
    uids = uid_frame(executor, write_uid_filter(ds, run, input_uids))
    with m.stage("search"):
        rows = restricted_frame(executor, shard_tasks(ds, table, eval_npy=str(npy)), _decontam_rows,
                                _DECONTAM_SCHEMA, uids).cache()
        eval_names = pa.array(eval_ids, pa.string())

        def to_decisions(batch: pa.RecordBatch) -> pa.Table:
            sims = batch.column("similarity").to_numpy()
            removed = sims >= threshold
            detail = pc.if_else(pa.array(removed), eval_names.take(batch.column("eval_index")),
                                pa.nulls(batch.num_rows, pa.string()))
            return decisions_table(batch.column("uid"), "decontaminate", pa.array(~removed),
                                   pa.array(np.where(removed, EVAL_REASON, "kept")), pa.array(sims.astype(np.float64)),
                                   detail)

        def hits(batch: pa.RecordBatch) -> pa.Table:
            return pa.Table.from_batches([batch]).filter(pc.greater_equal(batch.column("similarity"), threshold))

        # per evaluation image: how many pool samples were its near copies, the closest one
        # (highest similarity, then smallest uid); one row per evaluation image comes back
        per_eval = (rows.map_batches(hits, _DECONTAM_SCHEMA).group_apply("eval_index", _nearest_copy, _PER_EVAL)
                    .collect_small(len(eval_ids)))
    try:
        e = per_eval.column("eval_index").to_numpy()
        count = np.zeros(len(eval_ids), np.int64)
        count[e] = per_eval.column("count").to_numpy()
        best = np.full(len(eval_ids), np.nan)
        best[e] = per_eval.column("best").to_numpy()
        nearest = np.full(len(eval_ids), None, dtype=object)
        nearest[e] = per_eval.column("nearest").to_pylist()
        report = pa.Table.from_arrays(
            [eval_names, pa.array(count), pa.array(best, pa.float64(), mask=np.isnan(best)),
             pa.array(nearest.tolist(), pa.string())], schema=load_schema("decontamination").arrow())
        ds.write_table(f"decontamination/{run}", report)
        miss = _missing_frame(executor, ds, uids, table, "decontaminate", NO_EMBEDDING)
        health, warns = _guards.table_health(ds, table, "image")
        res = finish_selection(executor, ds, run, "decontaminate",
                               _with_missing(rows.map_batches(to_decisions, DECISIONS), miss), m, output,
                               {"eval_images": len(eval_ids), "eval_images_with_copies": int((count > 0).sum())},
                               guards=({"embeddings": health}, warns),
                               acted_on=("cosine to the nearest evaluation image", None),
                               cleanup=lambda: cleanup_tmp(ds, run))
    finally:
        rows.release()
    res["report"] = report
    return res
