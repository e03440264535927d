"""What every embedding-space selection job shares: the decisions schema, the dataset and
clustering checks, the decisions (removed, no embedding) of restriction uids missing from the
table a job reads (an anti-join in the engine), and the driver-side finish of steps that
still hold their decisions as a table."""

from __future__ import annotations

import pyarrow as pa

from curate.embedding_space import guards as _guards
from curate.embedding_space.clusters import load_clustering
from curate.embedding_space.common import UID_SCHEMA, UidList, cleanup_tmp
from curate.engine import LocalExecutor
from curate.errors import DatasetError
from curate.manifest import RunManifest
from curate.selection import finish_selection, uniform_decisions
from curate.tables import Dataset, load_schema

NO_EMBEDDING = "no_embedding"
NOT_DOWNLOADED = "not_downloaded"

DECISIONS = load_schema("decisions").arrow()


def as_dataset(dataset) -> Dataset:
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


def _concat_decisions(*tables: pa.Table) -> pa.Table:
    parts = [t.select(DECISIONS.names).cast(DECISIONS) for t in tables if t.num_rows]
    return pa.concat_tables(parts) if parts else DECISIONS.empty_table()


def clustering_health(ds: Dataset, meta: dict, executor) -> tuple[dict, list[str]]:
    """The health of the embeddings a clustering was made from: recorded by `curate cluster`
    (the same sample and numbers; no second decode of the table), or drawn now for older ones
    (on the workers: ``guards.embedding_sample``)."""
    rec = meta.get("embeddings_health")
    if rec is not None:
        h = rec["health"]  # _meta.json sorts keys: back to guards.embedding_health's order
        first = [k for k in ("what", "n", "quantiles", "median", "spread_p10_p90") if k in h]
        return {k: h[k] for k in first + sorted(set(h) - set(first))}, list(rec["warnings"])
    return _guards.table_health(ds, meta["embeddings_table"], meta["embedding"], executor=executor)


def missing_frame(executor, ds: Dataset, uids, table: str, stage: str, reason: str,
                  restriction: UidList | None = None, found: int | None = None):
    """Decisions (removed, ``reason``) for the restriction's uids absent from ``table``: an
    anti-join in the engine; None without a restriction, or when the ``found`` rows of
    ``table`` the restriction matched are as many as its uids known to be distinct
    (``restriction.distinct``): then every uid was found once (table uids are unique; a
    repeated one would repeat a decision, which the decisions write refuses)."""
    if uids is None:
        return None
    if found is not None and restriction is not None and found == restriction.distinct:
        return None
    present = executor.frame_read([str(p) for p in ds.shards(table)], UID_SCHEMA)
    return absent_decisions(executor, ds, uids.anti_join(present), stage, reason)


NOT_IN_POOL = "not_in_pool"


def absent_decisions(executor, ds: Dataset, absent, stage: str, reason: str):
    """Decisions (removed) for restriction uids with no row in the table a job reads: ``reason``
    for the pool's samples, ``not_in_pool`` for uids that are no sample at all (a subset file of
    another pool passed as "mostly not downloaded"). Runs only when some uid was not found."""
    if not ds.has_table("samples"):
        return uniform_decisions(absent, stage, False, reason)
    samples = executor.frame_read([str(p) for p in ds.shards("samples")], UID_SCHEMA)
    return uniform_decisions(absent.semi_join(samples), stage, False, reason).union(
        uniform_decisions(absent.anti_join(samples), stage, False, NOT_IN_POOL))


def samples_left_out(ds: Dataset, table: str, restricted: bool) -> list[str]:
    """Without ``--subset`` a job's input is ``table``'s rows, so the pool's samples with no row
    there get no decision and are not in its subset: said in one warning (counted from the
    tables' footers), never left out in silence."""
    if restricted or not ds.has_table("samples"):
        return []
    total = ds.count("samples")
    left = total - ds.count(table)
    if left <= 0:
        return []
    said = (f"{left:,} of the pool's {total:,} samples have no row in {table}: they are not this job's input "
            "and not in its subset (to decide them as no_embedding, pass --subset with every sample: "
            f"curate select {ds.root} --sql 'SELECT uid FROM samples' --name all)")
    return [said]


def with_missing(decisions, missing):
    decisions = decisions.select(DECISIONS.names)
    return decisions.union(missing) if missing is not None else decisions


# ---------------------------------------------------------------- checks (before any engine starts)
def check_dataset(ds: Dataset) -> Dataset:
    if not ds.exists():
        raise DatasetError(f"dataset folder {ds.root} does not exist")
    return ds


def check_clustering(ds: Dataset, clusters: str, current: bool = False) -> dict:
    """The clustering's metadata; an error if it or the embeddings table it was made from is
    missing, and with ``current`` (jobs that use its assignments and distances with the vectors)
    if that table has changed since: the same uids with new vectors would be judged by a
    clustering of the old ones."""
    check_dataset(ds)
    _, meta = load_clustering(ds, clusters)
    table = meta["embeddings_table"]
    if not ds.has_table(table):
        raise DatasetError(f"clustering {clusters!r} was made from {table}, which is missing in {ds.root}")
    then = meta.get("embeddings_fingerprint")  # recorded since 2026-12-05; older clusterings are trusted
    if current and then is not None:
        from curate.tables.fingerprint import table_fingerprint

        now = table_fingerprint(ds, table)
        if now != then:
            was = {s[0]: s for s in then["shards"]}
            changed = [s[0] for s in now["shards"] if was.pop(s[0], None) != s] + sorted(was)
            raise DatasetError(f"clustering {clusters!r} was made from {table} as it was before it changed "
                               f"({len(changed)} shard(s) differ, first {changed[0]}); rerun `curate cluster`")
    return meta
