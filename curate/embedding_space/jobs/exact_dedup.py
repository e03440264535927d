"""``curate dedup exact``: one sample per sha256 of the downloaded bytes (the smallest uid).
Rows group by a prefix of the hash in the engine, so no worker or driver holds the
downloads table; rows that were not downloaded are removed with ``not_downloaded``."""

from __future__ import annotations

import functools

import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.decisions import decisions_table
from curate.embedding_space.common import (cleanup_tmp, input_record, restricted_frame, shard_tasks, uid_frame,
                                           write_uid_filter)
from curate.embedding_space.jobs.shared import (DECISIONS, NOT_DOWNLOADED, as_dataset, check_dataset,
                                                missing_frame, with_missing)
from curate.engine import LocalExecutor
from curate.errors import DatasetError
from curate.manifest import RunManifest
from curate.selection import finish_selection
from curate.tables import Dataset
from curate.uid import hex_prefix_chars


def check_exact_dedup(ds: Dataset) -> None:
    check_dataset(ds)
    if not ds.has_table("downloads"):
        raise DatasetError(f"table downloads not found in {ds.root} (run `curate download` first)")


_DL_SCHEMA = pa.schema([("uid", pa.string()), ("status", pa.string()), ("sha256", pa.string())])


def _downloads_rows(task: dict):
    t = storage.read_parquet(task["path"], columns=["uid", "status", "sha256"])
    if t.num_rows:
        yield from t.to_batches()


_HASH_SCHEMA = pa.schema([("bucket", pa.string()), ("uid", pa.string()), ("sha256", pa.string())])
GROUP_ROWS = 100_000  # rows group by a prefix of the hash: whole hash groups of about this many rows at most


def _downloaded(batch: pa.RecordBatch):
    return pc.fill_null(pc.and_(pc.equal(batch.column("status"), "success"), pc.is_valid(batch.column("sha256"))), False)


def _hash_rows(batch: pa.RecordBatch, chars: int) -> pa.Table:
    b = batch.filter(_downloaded(batch))
    sha = b.column("sha256")
    return pa.table([pc.utf8_slice_codeunits(sha, 0, chars), b.column("uid"), sha], schema=_HASH_SCHEMA)


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
    ds = as_dataset(dataset)
    executor = executor or LocalExecutor()
    check_exact_dedup(ds)
    restriction = write_uid_filter(ds, run, input_uids)
    uids = uid_frame(executor, restriction)
    m = RunManifest(run, dict(stage="exact_dedup", restricted=input_uids is not None,
                              input_subset=input_record(input_uids), engine=executor.name))
    n_rows = ds.count("downloads")
    m["inputs"] = [{"table": "downloads", "rows": n_rows}]
    hash_rows = functools.partial(_hash_rows, chars=hex_prefix_chars(n_rows, GROUP_ROWS))
    with m.stage("read"):
        rows = restricted_frame(executor, shard_tasks(ds, "downloads"), _downloads_rows, _DL_SCHEMA, uids).cache()
        # with a restriction known to hold each uid once, a count of the rows found (of the
        # frame cached anyway) can spare the anti-join for uids without a downloads row
        found = rows.count() if restriction is not None and restriction.distinct is not None else None
    try:
        with m.stage("dedup"):
            dec = rows.map_batches(hash_rows, _HASH_SCHEMA).group_apply("bucket", _exact_group, DECISIONS)
        dec = dec.union(rows.map_batches(_not_downloaded, DECISIONS))
        miss = missing_frame(executor, ds, uids, "downloads", "exact_dedup", NOT_DOWNLOADED, restriction, found)
        return finish_selection(executor, ds, run, "exact_dedup", with_missing(dec, miss), m, output,
                                cleanup=lambda: cleanup_tmp(ds, run))
    finally:
        rows.release()


