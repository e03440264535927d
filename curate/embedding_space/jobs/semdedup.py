"""``curate dedup semantic``: SemDeDup within each cluster of a clustering. Rows group by
cluster in the engine; each group is deduplicated whole in one worker
(``semdedup.semdedup_group_table``); per-cluster stats and the decisions are written from the
workers' output."""

from __future__ import annotations

import pyarrow as pa

from curate.embedding_space import dbp as _dbp
from curate.embedding_space.clusters import load_clustering, write_cluster_stats
from curate.embedding_space.common import cleanup_tmp, input_record, restricted_frame, uid_frame, write_uid_filter
from curate.embedding_space.jobs.clustered import (DECISIONS_C, cluster_rows, clustering_tasks, per_cluster,
                                                   row_schema, with_cluster)
from curate.embedding_space.jobs.shared import (NO_EMBEDDING, as_dataset, check_clustering, clustering_health,
                                                missing_frame, samples_left_out, with_missing)
from curate.embedding_space.semdedup import KEEP_CHOICES, semdedup_group_table
from curate.engine import LocalExecutor
from curate.errors import DatasetError
from curate.manifest import RunManifest
from curate.selection import finish_selection
from curate.tables import Dataset


def check_semdedup(ds: Dataset, clusters: str, eps: float, keep: str) -> None:
    if keep not in KEEP_CHOICES:
        raise DatasetError(f"--keep must be one of {KEEP_CHOICES}, got {keep!r}")
    if not 0.0 < eps <= 1.0:
        why = " (at 0 the rule 'cosine > 1' is decided by float rounding: exact copies are `curate dedup " \
              "exact`'s, or give a tiny eps such as 1e-6)" if eps == 0 else ""
        raise DatasetError(f"--eps must be in (0, 1], got {eps}{why}")
    check_clustering(ds, clusters, current=True)


def run_semdedup(dataset, clusters: str, eps: float, run: str = "semdedup", keep: str = "hard", seed: int = 0,
                 input_uids=None, executor=None, output: str | None = None, block_cells: int = 1 << 24,
                 device: str = "auto") -> dict:
    ds = as_dataset(dataset)
    executor = executor or LocalExecutor()
    check_semdedup(ds, clusters, eps, keep)
    c, _ = load_clustering(ds, clusters)
    uid_filter = write_uid_filter(ds, run, input_uids)
    uids = uid_frame(executor, uid_filter)
    meta, table, tasks = clustering_tasks(ds, clusters, with_embedding=True)
    m = RunManifest(run, dict(stage="semdedup", clusters=clusters, eps=eps, keep=keep, seed=seed,
                              model_id=meta["model_id"], embedding=meta["embedding"],
                              restricted=input_uids is not None,
                              input_subset=input_record(input_uids), engine=executor.name))
    m["inputs"] = [{"table": table, "rows": ds.count(table)}, {"table": f"clusters/{clusters}"}]
    dim = meta["dim"]

    def group_fn(group: pa.Table) -> pa.Table:
        out = semdedup_group_table(group, eps, dim, keep=keep, seed=seed, stage="semdedup",
                                   block_cells=block_cells, device=device)
        return with_cluster(out, group)  # rows are in group order

    with m.stage("semdedup"):
        rows = restricted_frame(executor, tasks, cluster_rows, row_schema(True), uids)
        dec = rows.group_apply("cluster_id", group_fn, DECISIONS_C).cache()
        size, kept, d_intra = per_cluster(dec, c.shape[0])
    try:
        write_cluster_stats(ds, run, size, d_intra, _dbp.centroid_d_inter(c), kept=kept)
        miss = missing_frame(executor, ds, uids, table, "semdedup", NO_EMBEDDING, uid_filter, int(size.sum()))
        health, warns = clustering_health(ds, meta, executor)
        warns = warns + samples_left_out(ds, f"clusters/{clusters}", uids is not None)
        return finish_selection(executor, ds, run, "semdedup", with_missing(dec, miss), m, output,
                                {"clusters_with_removals": int(((size - kept) > 0).sum())},
                                guards=({"embeddings": health}, warns),
                                acted_on=("largest cosine to an earlier item of the same cluster", None),
                                cleanup=lambda: cleanup_tmp(ds, run))
    finally:
        dec.release()


