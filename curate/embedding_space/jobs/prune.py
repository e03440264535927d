"""``curate prune dbp|ssp``: density-based pruning (DBP) or self-supervised-prototype pruning
(SSP) over a clustering. Per-cluster sizes and distance sums come from the engine (one row
per cluster), the driver plans a quota per cluster, and each cluster keeps its quota in one
worker (``dbp.select_in_cluster``)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.embedding_space import dbp as _dbp
from curate.embedding_space.clusters import load_clustering, write_cluster_stats
from curate.embedding_space.common import cleanup_tmp, input_record, restricted_frame, uid_frame, write_uid_filter
from curate.embedding_space.jobs.clustered import (CLUSTER_SUMS, DECISIONS_C, cluster_rows, cluster_sums,
                                                   clustering_tasks, per_cluster, row_schema, with_cluster)
from curate.embedding_space.jobs.shared import (NO_EMBEDDING, as_dataset, check_clustering, clustering_health,
                                                missing_frame, samples_left_out, with_missing)
from curate.embedding_space.semdedup import KEEP_CHOICES
from curate.engine import LocalExecutor
from curate.errors import DatasetError
from curate.manifest import RunManifest
from curate.selection import finish_selection
from curate.tables import Dataset


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
    check_clustering(ds, clusters, current=True)


def run_prune(dataset, clusters: str, keep_fraction: float, method: str = "dbp", run: str | None = None,
              keep: str = "hard", seed: int = 0, temperature: float = 0.5, balance_ratio: float = 0.5,
              n_neighbors: int = 20, input_uids=None, executor=None, output: str | None = None) -> dict:
    """Density-based pruning (``dbp``) or self-supervised-prototype pruning (``ssp``)."""
    ds = as_dataset(dataset)
    executor = executor or LocalExecutor()
    run = run or method
    check_prune(ds, clusters, keep_fraction, method, keep, temperature, balance_ratio, n_neighbors)
    c, _ = load_clustering(ds, clusters)
    k = c.shape[0]
    uid_filter = write_uid_filter(ds, run, input_uids)
    uids = uid_frame(executor, uid_filter)
    meta, table, tasks = clustering_tasks(ds, clusters, with_embedding=False)
    params = dict(stage=method, clusters=clusters, keep_fraction=keep_fraction, keep=keep, seed=seed,
                  model_id=meta["model_id"], restricted=input_uids is not None,
                  input_subset=input_record(input_uids), engine=executor.name)
    if method == "dbp":
        params.update(temperature=temperature, balance_ratio=balance_ratio, n_neighbors=n_neighbors)
    m = RunManifest(run, params)
    m["inputs"] = [{"table": f"clusters/{clusters}", "rows": ds.count(f"clusters/{clusters}")}]
    with m.stage("stats"):
        # placed by cluster once: both grouped passes (sums, then selection) read them there
        rows = restricted_frame(executor, tasks, cluster_rows, row_schema(False), uids)
        rows = rows.partition_by("cluster_id").cache()
        size, dsum = _cluster_sizes(rows, k)
    plan = _plan(c, size, dsum, keep_fraction, method, temperature, balance_ratio, n_neighbors)
    stage, quota_list = method, plan["quota"].astype(np.int64)
    reason = "dbp_pruned" if method == "dbp" else "ssp_pruned"

    def group_fn(group: pa.Table) -> pa.Table:
        cid = int(group.column("cluster_id")[0].as_py())
        out = _dbp.prune_group_decisions(group, int(quota_list[cid]), stage, reason, keep=keep, seed=seed)
        return with_cluster(out, group)

    with m.stage("select"):
        dec = rows.group_apply("cluster_id", group_fn, DECISIONS_C).cache()
        size2, kept, _ = per_cluster(dec, k)
    try:
        n_keep = plan["n_keep"]
        if not np.array_equal(size2, size) or int(kept.sum()) != n_keep:
            raise DatasetError(f"{run}: internal count mismatch (kept {int(kept.sum())}, planned {n_keep})")
        write_cluster_stats(ds, run, size, plan["d_intra"], plan["d_inter"], plan["complexity"], plan["probability"],
                            plan["quota"], kept)
        miss = missing_frame(executor, ds, uids, table, stage, NO_EMBEDDING, uid_filter, int(size.sum()))
        health, warns = clustering_health(ds, meta, executor)
        warns = warns + samples_left_out(ds, f"clusters/{clusters}", uids is not None)
        # removing most of the input is what a small --keep-fraction asks for: no removal warning here
        return finish_selection(executor, ds, run, stage, with_missing(dec, miss), m, output,
                                {"target_kept": n_keep}, guards=({"embeddings": health}, warns),
                                acted_on=("cosine to the cluster centroid", _one_minus), removal_guard=False,
                                cleanup=lambda: cleanup_tmp(ds, run))
    finally:
        dec.release()
        rows.release()


def _cluster_sizes(rows, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-cluster sizes and distance sums of the input rows (one row per cluster from the engine)."""
    t = rows.select(["cluster_id", "uid", "distance"]).group_apply("cluster_id", cluster_sums,
                                                                 CLUSTER_SUMS).collect_small(k)
    cid = t.column("cluster_id").to_numpy()
    size = np.bincount(cid, weights=t.column("n").to_numpy(), minlength=k).astype(np.int64)
    dsum = np.zeros(k)
    dsum[cid] = t.column("distance_sum").to_numpy()
    return size, dsum


def _plan(c: np.ndarray, size: np.ndarray, dsum: np.ndarray, keep_fraction: float, method: str,
          temperature: float, balance_ratio: float, n_neighbors: int) -> dict:
    """The driver's plan: how many to keep in all (``n_keep``) and per cluster (``quota``),
    with the cluster statistics it was made from (d_intra, d_inter; DBP's complexity and
    probability, None for SSP)."""
    try:
        n_keep = _dbp.n_keep_from_fraction(int(size.sum()), keep_fraction)
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
    return {"n_keep": n_keep, "quota": quota, "d_intra": d_intra, "d_inter": d_inter,
            "complexity": plan["complexity"], "probability": plan["probability"]}


def _one_minus(d: np.ndarray) -> np.ndarray:
    return 1.0 - d

