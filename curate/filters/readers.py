"""The filter job's frames: readers run in tasks (samples beside text_stats, embeddings scores
and vectors, download sizes), the per-batch decision and k-means caption pass, and the
task lists and exact fraction thresholds the driver builds them from."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.decisions import decisions_table
from curate.errors import DatasetError, InputFileError
from curate.filters import stages
from curate.filters.stages import FilterSpec
from curate.filters.threshold import top_fraction_threshold
from curate.tables import Dataset, load_schema


SAMPLE_COLUMNS = ["uid", "original_width", "original_height"]
STAT_COLUMNS = ["language", "language_score", "word_count", "char_count", "token_count"]


# ---------------------------------------------------------------- frame readers (run in tasks)
def base_schema(with_text: bool, with_stats: bool = True) -> pa.Schema:
    fields = [pa.field("uid", pa.string()), pa.field("original_width", pa.int32()),
              pa.field("original_height", pa.int32())]
    if with_text:
        fields.append(pa.field("text", pa.string()))
    if not with_stats:
        return pa.schema(fields)
    ts = load_schema("text_stats").arrow()
    return pa.schema(fields + [ts.field(c).with_nullable(True) for c in STAT_COLUMNS])


def read_base(task: dict):
    """samples shard i beside text_stats shard i (same rows, same order); without text_stats
    when no filter of the run reads them (``stats_shard`` None)."""
    src, stats = task["samples_shard"], task["stats_shard"]
    cols = SAMPLE_COLUMNS + (["text"] if task["with_text"] else [])
    try:
        s = storage.read_parquet(src, columns=cols)
    except (pa.ArrowInvalid, OSError, KeyError) as e:
        raise InputFileError(src, f"cannot read columns {', '.join(cols)} ({e})") from e
    schema = base_schema(task["with_text"], stats is not None)
    arrays = [s.column(c).cast(schema.field(c).type) for c in cols]
    if stats is not None:
        t = storage.read_parquet(stats, columns=["uid"] + STAT_COLUMNS)
        if t.num_rows != s.num_rows or not t.column("uid").equals(s.column("uid")):
            raise DatasetError(f"{stats} does not match {src} row for row; rerun with --recompute-stats")
        arrays += [t.column(c) for c in STAT_COLUMNS]
    yield from pa.Table.from_arrays(arrays, schema=schema).to_batches(max_chunksize=65536)


def emb_schema(j: int, with_embedding: bool) -> pa.Schema:
    fields = [pa.field("uid", pa.string()), pa.field(f"s{j}", pa.float32())]
    if with_embedding:
        fields.append(pa.field(f"e{j}", pa.binary()))
    return pa.schema(fields)


def read_embeddings(task: dict):
    """uid, clip_score (as s<j>) and optionally image_embedding as raw float16 bytes (e<j>)."""
    j, with_emb = task["j"], task["with_embedding"]
    cols = ["uid", "clip_score"] + (["image_embedding"] if with_emb else [])
    try:
        t = storage.read_parquet(task["path"], columns=cols)
    except (pa.ArrowInvalid, OSError, KeyError) as e:
        raise InputFileError(task["path"], f"cannot read columns {', '.join(cols)} ({e})") from e
    arrays = [t.column("uid"), t.column("clip_score").cast(pa.float32())]
    if with_emb:
        from curate.embedding_space.vectors import check_finite, list_to_matrix

        check_finite(list_to_matrix(t.column("image_embedding"), f"{task['path']}: "), t.column("uid"),
                     f"{task['path']}: ", "image_embedding")
        arrays.append(stages.embeddings_to_binary(t.column("image_embedding")))
    yield from pa.Table.from_arrays(arrays, schema=emb_schema(j, with_emb)).to_batches(max_chunksize=65536)


def read_downloads(task: dict):
    t = storage.read_parquet(task["path"], columns=["uid", "original_width", "original_height"])
    yield from pa.Table.from_arrays(
        [t.column("uid"), t.column("original_width").cast(pa.int32()), t.column("original_height").cast(pa.int32())],
        schema=DOWNLOAD_SCHEMA).to_batches(max_chunksize=65536)


DOWNLOAD_SCHEMA = pa.schema([pa.field("uid", pa.string()), pa.field("download_width", pa.int32()),
                             pa.field("download_height", pa.int32())])


def decide_all(batch: pa.RecordBatch, specs: list[FilterSpec], ctxs: list[dict]) -> pa.Table:
    """Decision rows of every filter for one batch of joined rows."""
    t = pa.Table.from_batches([batch])
    if "download_width" in t.column_names:  # input metadata first (DataComp's), download as fallback
        for side in ("width", "height"):
            i = t.column_names.index(f"original_{side}")
            t = t.set_column(i, f"original_{side}", pc.coalesce(t.column(f"original_{side}"), t.column(f"download_{side}")))
    uids = t.column("uid").combine_chunks()
    parts = []
    for spec, ctx in zip(specs, ctxs):
        d = stages.DECIDE[spec.name](t, spec.params, ctx)
        parts.append(decisions_table(uids, spec.name, *d.arrays()))
    return pa.concat_tables(parts)


def caption_pass(batch: pa.RecordBatch, params: dict, column: str, sample_ratio: float,
                 keep: tuple[str, ...] = ()) -> pa.Table:
    """Pool rows that pass the image-based caption filter (k-means input), uid-hash sampled:
    uid, ``column`` and the ``keep`` columns."""
    t = pa.Table.from_batches([batch])
    ok = t.column(column).is_valid().to_numpy(zero_copy_only=False).astype(bool)
    for _, mask, _, _ in stages.caption_rules(t, params):
        ok &= ~mask
    if sample_ratio > 0:  # deterministic: the uid's first 32 bits are uniform
        head = np.array([int(u[:8], 16) for u in t.column("uid").to_pylist()], dtype=np.uint64)
        ok &= head < np.uint64(int(sample_ratio * 2**32))
    return t.filter(pa.array(ok)).select(["uid", column, *keep])


def base_tasks(dataset: Dataset, shards: list[Path] | list[str], with_text: bool, with_stats: bool = True) -> list[dict]:
    return [{"samples_shard": str(p), "with_text": with_text,
             "stats_shard": str(dataset.shard_path("text_stats", i)) if with_stats else None}
            for i, p in enumerate(shards)]


def emb_frame(dataset: Dataset, executor, table: str, j: int, with_embedding: bool):
    tasks = [{"path": str(p), "j": j, "with_embedding": with_embedding} for p in dataset.shards(table)]
    return executor.frame_from_tasks(tasks, read_embeddings, emb_schema(j, with_embedding))


def fraction_threshold(dataset: Dataset, table: str, fraction: float, executor) -> dict:
    r = top_fraction_threshold([str(p) for p in dataset.shards(table)], "clip_score", fraction, executor)
    return {"fraction": fraction, "threshold": r["threshold"], "pool_rows": r["n"], "cut_index": r["index"]}


class ColumnPlan:
    """Columns to join: one s<j> (and maybe e<j>) per embeddings table used."""

    def __init__(self):
        self.models: list[str] = []
        self.with_embedding: dict[int, bool] = {}

    def index(self, table: str, embedding: bool) -> int:
        if table not in self.models:
            self.models.append(table)
            self.with_embedding[len(self.models) - 1] = False
        j = self.models.index(table)
        self.with_embedding[j] = self.with_embedding[j] or embedding
        return j
