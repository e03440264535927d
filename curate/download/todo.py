"""The uids a download fetches: ``samples`` anti-joined with the uids every complete image shard
attempted (less the failed ones a retry re-attempts), with the pool's face boxes, written by the
workers to ``_download/input/`` in the samples table's order, one part per image shard: part
``i`` is the input of the run's ``i``-th shard, read by the task that downloads it."""

from __future__ import annotations

import functools

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.download.faces import FACE_BBOXES, TODO, WITH_BOXES, face_source, with_face_bboxes
from curate.download.job import WORK
from curate.tables import Dataset

TODO_TABLE = f"{WORK}/input"  # the uids to fetch, written by the workers
POSITION = pa.field("position", pa.int64())  # (samples shard, row): img2dataset gets the samples in table order


def samples_frame(dataset: Dataset, executor):
    """(uid, url, text, the column holding face boxes when there is one, position) of every sample."""
    schema = TODO
    source = face_source(dataset)
    if source is not None:
        schema = schema.append(source[0])
    tasks = [{"path": str(p), "index": i, "columns": schema.names} for i, p in enumerate(dataset.shards("samples"))]
    return executor.frame_from_tasks(tasks, _read_samples, schema.append(POSITION))


def _read_samples(task: dict):
    t = storage.read_parquet(task["path"], columns=task["columns"])
    pos = (np.int64(task["index"]) << np.int64(32)) + np.arange(t.num_rows, dtype=np.int64)
    yield from t.append_column(POSITION, pa.array(pos)).to_batches()


def write_todo(dataset: Dataset, executor, samples, retry_failed: bool, retry_classes: list[str] | None,
               samples_per_shard: int) -> tuple[int, int, list[str]]:
    """Write the samples to fetch (no complete shard holds them, or, with ``retry_failed``, their
    latest attempt failed) to ``TODO_TABLE`` in the samples table's order, with the pool's face
    boxes when it has any; returns (rows, retried, columns img2dataset carries besides url and text)."""
    from curate.download.results import UIDS, results_frame, valid_uids

    attempted = results_frame(dataset, executor).map_batches(valid_uids, UIDS)
    retried = 0
    if retry_failed and dataset.has_table("downloads"):
        def failed(batch: pa.RecordBatch) -> pa.Table:
            wanted = pc.equal(batch.column("status"), "failed")
            if retry_classes:
                wanted = pc.and_(wanted, pc.is_in(batch.column("error_class"),
                                                  value_set=pa.array(retry_classes, pa.string())))
            return pa.table([batch.column("uid")], schema=UIDS).filter(pc.fill_null(wanted, False))

        dl = executor.frame_read([str(p) for p in dataset.shards("downloads")],
                                 pa.schema([("uid", pa.string()), ("status", pa.string()), ("error_class", pa.string())]))
        retry = dl.map_batches(failed, UIDS)
        retried = attempted.semi_join(retry).distinct().semi_join(samples.select(["uid"])).count()
        attempted = attempted.anti_join(retry)
    todo = samples.anti_join(attempted)
    carried = ["uid"]
    source = face_source(dataset)
    if source is not None:
        fn = functools.partial(with_face_bboxes, expr=source[1], where=source[2],
                               samples_dir=str(dataset.table_dir("samples")))
        todo = todo.map_batches(fn, WITH_BOXES).cache()  # read twice: the boxes' presence, then the write
    try:
        if source is not None and todo.filter_true("has_raw").count():
            carried.append(FACE_BBOXES)  # else: the shards' Parquet stays as img2dataset writes it
        schema = pa.schema([WITH_BOXES.field(c) for c in ["uid", "url", "text"] + carried[1:]] + [POSITION])
        written = todo.select(schema.names).write_sorted(dataset, TODO_TABLE, schema, [POSITION.name],
                                                         samples_per_shard)
    finally:
        if source is not None:
            todo.release()
    return written["rows"], retried, carried
