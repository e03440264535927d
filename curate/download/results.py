"""The downloads table: one row per samples uid from img2dataset's per-shard results of every
complete image shard (a uid's latest attempt wins; ``attempts`` counts them), each failure
with its error class."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.download.fetch import classify_error
from curate.download.job import IMAGES, complete_shards, shard_digits, shard_name
from curate.errors import DatasetError
from curate.tables import Dataset, load_schema


_RESULT_COLUMNS = ["uid", "key", "status", "error_message", "width", "height", "original_width",
                   "original_height", "sha256"]


def shard_results(dataset: Dataset, shard_id: int, digits: int | None = None) -> pa.Table:
    """img2dataset's per-shard parquet, normalised, with the shard's id."""
    digits = digits or shard_digits(dataset)
    path = dataset.root / IMAGES / f"{shard_name(shard_id, digits)}.parquet"
    try:
        t = pq.read_table(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise DatasetError(f"{path}: cannot read img2dataset shard results ({e})") from e
    for c in _RESULT_COLUMNS:
        if c not in t.column_names:
            raise DatasetError(f"{path}: img2dataset shard results lack column {c!r}")
    t = t.select(_RESULT_COLUMNS)
    return t.append_column("shard_id", pa.array([shard_id] * t.num_rows, pa.int32()))


def all_results(dataset: Dataset) -> pa.Table:
    ids = complete_shards(dataset)
    if not ids:
        schema = pa.schema([("uid", pa.string()), ("key", pa.string()), ("status", pa.string()),
                            ("error_message", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
                            ("original_width", pa.int32()), ("original_height", pa.int32()),
                            ("sha256", pa.string()), ("shard_id", pa.int32())])
        return schema.empty_table()
    digits = shard_digits(dataset)
    return pa.concat_tables([shard_results(dataset, i, digits) for i in ids], promote_options="permissive")


# ---------------------------------------------------------------- the downloads table
def build_downloads_table(dataset: Dataset, samples_uids: pa.Array) -> tuple[pa.Table, dict]:
    """One row per samples uid from every complete shard (latest attempt wins)."""
    import duckdb

    results = all_results(dataset)
    digits = shard_digits(dataset)
    uids = pa.table({"uid": samples_uids})
    con = duckdb.connect()
    con.register("results", results)
    con.register("samples", uids)
    rel = con.sql(f"""
        WITH ranked AS (
            SELECT *, row_number() OVER (PARTITION BY uid ORDER BY shard_id DESC) AS rn,
                   count(*) OVER (PARTITION BY uid) AS n
            FROM results WHERE uid IS NOT NULL
        )
        SELECT s.uid,
               CASE WHEN r.status = 'success' THEN 'success' ELSE 'failed' END AS status,
               r.error_message, r.sha256,
               r.width::INTEGER AS width, r.height::INTEGER AS height,
               r.original_width::INTEGER AS original_width, r.original_height::INTEGER AS original_height,
               CASE WHEN r.status = 'success'
                    THEN '{IMAGES}/' || printf('%0{digits}d', r.shard_id) || '.tar' END AS shard,
               CASE WHEN r.status = 'success' THEN r.key END AS key,
               coalesce(r.n, 0)::INTEGER AS attempts,
               r.status AS raw_status
        FROM samples s LEFT JOIN (SELECT * FROM ranked WHERE rn = 1) r USING (uid)
        ORDER BY s.uid
    """)
    table = rel.to_arrow_table() if hasattr(rel, "to_arrow_table") else rel.arrow()
    stale = con.execute("SELECT count(DISTINCT uid) FROM results WHERE uid NOT IN (SELECT uid FROM samples)").fetchone()[0]
    con.close()

    classes, messages = _errors(table.column("raw_status").to_pylist(), table.column("error_message").to_pylist())
    table = table.drop_columns(["raw_status", "error_message"])
    table = table.append_column("error_class", pa.array(classes, pa.string()))
    table = table.append_column("error_message", pa.array(messages, pa.string()))
    schema = load_schema("downloads")
    table = pa.Table.from_arrays([table.column(n).cast(schema.arrow().field(n).type) for n in schema.names],
                                 schema=schema.arrow())
    counts = {"samples": table.num_rows,
              "success": int(pc.sum(pc.equal(table.column("status"), "success")).as_py() or 0),
              "stale_uids_in_shards": int(stale)}
    counts["failed"] = counts["samples"] - counts["success"]
    by_class: dict[str, int] = {}
    for c in classes:
        if c is not None:
            by_class[c] = by_class.get(c, 0) + 1
    counts["failed_by_class"] = dict(sorted(by_class.items()))
    return table, counts


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
