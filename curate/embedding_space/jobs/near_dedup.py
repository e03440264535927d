"""``curate dedup near``: near duplicates by embedding cosine >= a threshold, searched
within the partitions of an IVF layout (``near_partitions``), one sample kept per group."""

from __future__ import annotations

from curate.embedding_space import guards as _guards
from curate.embedding_space.common import cleanup_tmp, embeddings_table, input_record, uid_frame, write_uid_filter
from curate.embedding_space.jobs.shared import (NO_EMBEDDING, as_dataset, check_clustering, check_dataset,
                                                missing_frame, samples_left_out, with_missing)
from curate.engine import LocalExecutor
from curate.errors import DatasetError
from curate.manifest import RunManifest
from curate.selection import finish_selection
from curate.tables import Dataset


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


def run_near_dedup(dataset, model_id: str, threshold: float, run: str = "near_dedup", keep_by: str = "uid",
                   embedding: str = "image", clusters: str | None = None, nprobe: int = 8, input_uids=None,
                   executor=None, output: str | None = None) -> dict:
    """Near duplicates by embedding cosine >= ``threshold``: exact FAISS range search, or within the
    partitions of an IVF layout over the centroids of ``clusters`` probing ``nprobe`` lists
    (``curate.embedding_space.near_partitions``)."""
    from curate.embedding_space.near_partitions import near_duplicates

    ds = as_dataset(dataset)
    executor = executor or LocalExecutor()
    table = check_near_dedup(ds, model_id, threshold, keep_by, embedding, clusters, nprobe)
    uid_filter = write_uid_filter(ds, run, input_uids)
    m = RunManifest(run, dict(stage="near_dedup", model_id=model_id, threshold=threshold, keep_by=keep_by,
                              embedding=embedding, clusters=clusters, nprobe=nprobe,
                              restricted=input_uids is not None,
                              input_subset=input_record(input_uids), engine=executor.name))
    m["inputs"] = [{"table": table, "rows": ds.count(table)}]
    # searched within the partitions of the clustering's IVF layout (one partition without one)
    uids = uid_frame(executor, uid_filter)
    dec, stats, release = near_duplicates(executor, ds, table, run, threshold, keep_by, embedding, clusters, nprobe,
                                          uids, manifest=m)
    try:
        miss = missing_frame(executor, ds, uids, table, "near_dedup", NO_EMBEDDING)
        health, warns = _guards.table_health(ds, table, embedding, executor=executor)
        warns = warns + samples_left_out(ds, table, uids is not None)
        return finish_selection(executor, ds, run, "near_dedup", with_missing(dec, miss), m,
                                output, stats, guards=({"embeddings": health}, warns),
                                acted_on=("highest cosine of each grouped sample (kept or removed) to another of its group", None),
                                input_rows=None if uids is not None else (table, ds.count(table)),
                                cleanup=lambda: cleanup_tmp(ds, run))
    finally:
        release()


