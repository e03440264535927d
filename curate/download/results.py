"""The downloads table: one row per samples uid from img2dataset's per-shard results of every
complete image shard (a uid's latest attempt wins; ``attempts`` counts them), each failure
with its error class.

Built by the engine: the samples' uids and every shard's result rows meet in groups of a uid
prefix (uids are hashes, so the groups are even), each group decides its uids' rows, and the
workers write the table sorted by uid. The prefix is as long as it takes for groups of about
``GROUP_ROWS`` samples (one hex digit more multiplies the groups by 16): each group is a call
with a fixed cost, so 65,536 groups of a small pool cost half a minute and those of 12.8B
samples need five digits. The driver gets counts per status and error class, never a row."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.download.error_classes import classify_error
from curate.download.job import IMAGES, complete_shards, shard_digits, shard_name
from curate.errors import DatasetError
from curate.tables import Dataset, load_schema
from curate.uid import hex_prefix_chars

RESULTS = pa.schema([("uid", pa.string()), ("key", pa.string()), ("status", pa.string()),
                     ("error_message", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                     ("original_width", pa.int32()), ("original_height", pa.int32()),
                     ("sha256", pa.string()), ("shard_id", pa.int32())])
_RESULT_COLUMNS = RESULTS.names[:-1]
GROUP_ROWS = 100_000  # samples per uid-prefix group, at most about (rows of a group: these and their attempts)
_ROWS = RESULTS.append(pa.field("bucket", pa.string())).append(pa.field("is_sample", pa.bool_()))
DOWNLOADS_SHARD_ROWS = 1_000_000


def shard_results_path(dataset: Dataset, shard_id: int, digits: int) -> str:
    return str(dataset.path(f"{IMAGES}/{shard_name(shard_id, digits)}.parquet"))


def image_results_files(dataset: Dataset) -> list[str]:
    """img2dataset's per-shard results Parquet of every complete shard (its stats file is
    written last): what ``images`` holds, found the same way in a folder and in a bucket, where
    img2dataset's objects have no commit markers."""
    from curate.download.job import complete_shards, shard_digits

    digits = shard_digits(dataset)
    return [shard_results_path(dataset, i, digits) for i in complete_shards(dataset)]


def shard_results(path: str, shard_id: int) -> pa.Table:
    """img2dataset's per-shard parquet, normalised (one type per column), with the shard's id."""
    try:
        t = storage.read_parquet(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DatasetError(f"{path}: cannot read img2dataset shard results ({e})") from e
    for c in _RESULT_COLUMNS:
        if c not in t.column_names:
            raise DatasetError(f"{path}: img2dataset shard results lack column {c!r}")
    cols = [t.column(c).cast(RESULTS.field(c).type) for c in _RESULT_COLUMNS]
    return pa.Table.from_arrays(cols + [pa.array(np.full(t.num_rows, shard_id, np.int32))], schema=RESULTS)


def _results_task(task: dict):
    yield from shard_results(task["path"], task["shard_id"]).to_batches()


def results_frame(dataset: Dataset, executor):
    """Every complete shard's result rows (one task per shard)."""
    digits = shard_digits(dataset)
    tasks = [{"path": shard_results_path(dataset, i, digits), "shard_id": i} for i in complete_shards(dataset)]
    return executor.frame_from_tasks(tasks, _results_task, RESULTS)


# ---------------------------------------------------------------- the downloads table
def _bucketed(batch: pa.RecordBatch, is_sample: bool, chars: int) -> pa.Table:
    t = pa.Table.from_batches([batch])
    if not is_sample:
        t = t.filter(pc.is_valid(t.column("uid")))
    n = t.num_rows
    cols = [t.column(f.name) if f.name in t.column_names else pa.nulls(n, f.type) for f in RESULTS]
    bucket = pc.utf8_slice_codeunits(t.column("uid"), 0, chars)
    return pa.Table.from_arrays(cols + [bucket, pa.array(np.full(n, is_sample))], schema=_ROWS)


def _latest_attempts(results: pa.Table) -> tuple[pa.Table, np.ndarray]:
    """Each uid's latest attempt (the highest shard id) and its number of attempts."""
    r = results.sort_by([("uid", "ascending"), ("shard_id", "descending")])
    uids = r.column("uid").to_numpy(zero_copy_only=False)
    first = np.ones(len(uids), bool)
    first[1:] = uids[1:] != uids[:-1]
    starts = np.flatnonzero(first)
    return r.filter(pa.array(first)), np.diff(np.append(starts, len(uids)))


def downloads_rows(group: pa.Table, digits: int) -> pa.Table:
    """The downloads rows of one group's sample uids (sorted by uid) from its result rows."""
    is_sample = group.column("is_sample").combine_chunks()
    sample_uids = group.filter(is_sample).column("uid").combine_chunks()
    uids = sample_uids.take(pc.array_sort_indices(sample_uids))
    latest, attempts = _latest_attempts(group.filter(pc.invert(is_sample)).select(RESULTS.names))
    at = pc.index_in(uids, value_set=latest.column("uid").combine_chunks())
    r = latest.take(at)  # null where a uid has no attempt
    raw = r.column("status").combine_chunks()
    ok = pc.fill_null(pc.equal(raw, "success"), False)
    found = at.is_valid().to_numpy(zero_copy_only=False)
    n_attempts = np.zeros(len(uids), np.int32)
    n_attempts[found] = attempts[at.to_numpy(zero_copy_only=False)[found].astype(np.int64)]
    number = pc.utf8_lpad(pc.cast(r.column("shard_id"), pa.string()), digits, "0")  # longer ids stay whole
    shard = pc.if_else(ok, pc.binary_join_element_wise(f"{IMAGES}/", number, ".tar", ""), pa.scalar(None, pa.string()))
    classes, messages = _errors(raw.to_pylist(), r.column("error_message").to_pylist())
    cols = {"uid": uids, "status": pc.if_else(ok, "success", "failed"), "sha256": r.column("sha256"),
            "width": r.column("width"), "height": r.column("height"), "original_width": r.column("original_width"),
            "original_height": r.column("original_height"), "shard": shard,
            "key": pc.if_else(ok, r.column("key"), pa.scalar(None, pa.string())),
            "attempts": pa.array(n_attempts), "error_class": pa.array(classes, pa.string()),
            "error_message": pa.array(messages, pa.string())}
    schema = load_schema("downloads").arrow()
    return pa.Table.from_arrays([_array(cols[f.name]).cast(f.type) for f in schema], schema=schema)


def _array(x) -> pa.Array:
    return x.combine_chunks() if isinstance(x, pa.ChunkedArray) else x


def write_downloads_table(dataset: Dataset, executor, samples, n_samples: int) -> dict:
    """Write ``downloads`` (one row per samples uid, from every complete shard; latest attempt
    wins) from ``samples`` (a frame with a ``uid`` column, ``n_samples`` rows: they size the uid
    groups); returns its counts."""
    import functools

    digits = shard_digits(dataset)
    results = results_frame(dataset, executor).cache()  # read once: for the table and the stale count
    uids = samples.select(["uid"])
    chars = hex_prefix_chars(n_samples, GROUP_ROWS)
    try:
        rows = (uids.map_batches(functools.partial(_bucketed, is_sample=True, chars=chars), _ROWS)
                .union(results.map_batches(functools.partial(_bucketed, is_sample=False, chars=chars), _ROWS)))
        schema = load_schema("downloads").arrow()
        table = rows.group_apply("bucket", functools.partial(downloads_rows, digits=digits), schema).cache()
        try:
            per_class = table.aggregate(["status", "error_class"], {"n": ("uid", "count")}).collect_small(10_000)
            table.write_sorted(dataset, "downloads", "downloads", ["uid"], DOWNLOADS_SHARD_ROWS, unique="uid")
        finally:
            table.release()
        stale_uids = results.map_batches(valid_uids, UIDS).anti_join(uids).distinct().count()
    finally:
        results.release()
    counts = {"samples": 0, "success": 0, "stale_uids_in_shards": int(stale_uids)}
    by_class: dict[str, int] = {}
    for status, cls, n in zip(per_class.column("status").to_pylist(), per_class.column("error_class").to_pylist(),
                              per_class.column("n").to_pylist()):
        counts["samples"] += n
        counts["success"] += n if status == "success" else 0
        if cls is not None:
            by_class[cls] = by_class.get(cls, 0) + n
    counts["failed"] = counts["samples"] - counts["success"]
    counts["failed_by_class"] = dict(sorted(by_class.items()))
    return counts


UIDS = pa.schema([("uid", pa.string())])


def valid_uids(batch: pa.RecordBatch) -> pa.Table:
    return pa.table([batch.column("uid")], schema=UIDS).filter(pc.is_valid(batch.column("uid")))


def _errors(raw: list, msgs: list) -> tuple[list, list]:
    """Each uid's error class and message from its latest attempt (None for a success)."""
    classes, messages = [], []
    for status, msg in zip(raw, msgs):
        if status == "success":
            classes.append(None)
            messages.append(None)
        elif status is None:  # its shard never completed (the task failed after its retries)
            classes.append("not_downloaded")
            messages.append("no complete image shard holds this uid; rerun download to retry it")
        else:
            msg = msg or status
            classes.append(classify_error(msg))
            messages.append(msg)
    return classes, messages
