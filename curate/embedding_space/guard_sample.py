"""The guards' embedding sample (``guards.embedding_sample``) as engine operations: the workers
read the uid columns and the picked rows; the driver gets a number of rows bounded by a
constant, whatever the pool.

The sample is the ``limit`` rows with the smallest seed-``seed`` uid hash, ties broken by
earlier shard, then earlier row: the same rows, in the same order, as the driver-side read it
replaces. How it is found without the uid columns on the driver:

1. **Hash threshold.** Every shard task keeps its rows whose hash is at most ``t`` (at most its
   ``limit`` smallest: rows past a shard's ``limit``-th can never be among the pool's ``limit``
   smallest), as (hash, shard, row) triples. ``t`` is chosen so that about
   ``OVERSAMPLE x limit`` rows of a pool of ``N`` rows fall below it when hashes are uniform
   (the uid hash is splitmix64). If fewer than ``min(limit, N)`` come back (an unlucky draw, a
   small pool, or uids whose hashes bunch) ``t`` grows ``WIDEN``-fold and the pass is redone;
   at its top every row qualifies, so the loop ends.
2. **Bounded reduction.** If more than ``max_picks(limit)`` triples qualified (hashes that bunch: many
   equal or nearly equal hashes), they are cut in the engine: groups of ``FAN`` consecutive
   shards keep their ``limit`` smallest, repeated until at most that many remain (each level
   divides the bound by ``FAN``).
3. **Rank** the (at most ``MAX_PICKS``) triples left in one group on a worker: sorted by
   (hash, shard, row), the first ``limit`` numbered in sample order.
4. **Read the picks** on the workers: a group per shard that holds a pick decodes only the row
   groups holding them and yields the picks' normalised vectors.

The driver sees one count per pass and per reduction level, then the ``limit`` vectors: with
uniform hashes one pass, so 1 + ``limit`` rows (257 for the guards), whatever the pool.

Steps 1-3 (``smallest_picks``) take any frame of (hash, shard, tie-breaking columns): the
``image_based`` filter draws its bounded k-means input with them from the caption-filtered
pool, ties broken by uid as ``curate cluster``'s sample does (``curate.filters.image_based``).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

OVERSAMPLE = 2  # expected rows below the first threshold, in multiples of the sample
WIDEN = 16  # the threshold's growth when a pass comes back short
FAN = 16  # shards (then groups) merged per reduction level
MAX_HASH = 2**63 - 1  # uid_hash is a non-negative int64

PICKS = pa.schema([("hash", pa.int64()), ("shard", pa.int32()), ("row", pa.int64())])
VECTORS = pa.schema([("pos", pa.int32()), ("dtype", pa.string()), ("x", pa.binary())])


def max_picks(limit: int) -> int:
    """The most (hash, shard, row) triples the driver collects for a sample of ``limit``."""
    return 8 * max(limit, 1)


def first_threshold(total_rows: int, limit: int) -> int:
    if total_rows <= 0 or OVERSAMPLE * limit >= total_rows:
        return MAX_HASH
    return min(MAX_HASH, -(-(MAX_HASH + 1) * OVERSAMPLE * limit // total_rows))


def _smallest(h: np.ndarray, rows: np.ndarray, limit: int) -> np.ndarray:
    """Positions of the ``limit`` smallest (hash, row) pairs."""
    order = np.lexsort((rows, h))
    return order[:limit]


def pick_task(task: dict):
    """One shard's rows with hash <= threshold: its ``limit`` smallest (hash, row)."""
    from curate.embedding_space.sampling import uid_hash_array
    from curate.storage import read_parquet

    u = read_parquet(task["path"], columns=["uid"]).column("uid")
    if len(u) == 0:
        return
    h = uid_hash_array(u, task["seed"])
    rows = np.flatnonzero(h <= task["threshold"])
    keep = _smallest(h[rows], rows, task["limit"])
    rows = rows[keep]
    yield pa.record_batch([pa.array(h[rows], pa.int64()), pa.array(np.full(len(rows), task["index"], np.int32)),
                           pa.array(rows.astype(np.int64))], schema=PICKS)


ORDER = ("hash", "shard", "row")  # the guards' sample order: ties by earlier shard, then earlier row


def grouped_schema(schema: pa.Schema) -> pa.Schema:
    return pa.schema([("group", pa.int64()), *schema])


def ranked_schema(schema: pa.Schema) -> pa.Schema:
    """A pick's columns but its hash, then its place in sample order."""
    return pa.schema([*(f for f in schema if f.name != "hash"), ("pos", pa.int32())])


def _grouped(width: int, schema: pa.Schema = PICKS):
    out = grouped_schema(schema)

    def fn(batch: pa.RecordBatch) -> pa.RecordBatch:
        shard = batch.column("shard").to_numpy()
        return pa.record_batch([pa.array(shard.astype(np.int64) // width),
                                *(batch.column(f.name) for f in schema)], schema=out)

    return fn


def _group_smallest(limit: int, order=ORDER, schema: pa.Schema = PICKS):
    def fn(t: pa.Table) -> pa.Table:
        t = t.sort_by([(c, "ascending") for c in order])
        return t.slice(0, limit).select(schema.names)

    return fn


def _read_picks(paths: list[str], embedding: str):
    """Group function (one shard's picks): their normalised vectors, decoding only the row
    groups that hold them."""

    def fn(t: pa.Table) -> pa.Table:
        from curate.embedding_space.vectors import embedding_columns, embedding_matrix
        from curate.storage import parquet_file

        path = paths[t.column("shard")[0].as_py()]
        rows, pos = t.column("row").to_numpy(), t.column("pos").to_numpy().astype(np.int32)
        f = parquet_file(path)
        starts = np.cumsum([0] + [f.metadata.row_group(g).num_rows for g in range(f.num_row_groups)])
        parts = []
        for g in np.unique(np.searchsorted(starts, rows, side="right") - 1):
            in_g = (rows >= starts[g]) & (rows < starts[g + 1])
            rg = f.read_row_group(int(g), columns=["uid", *embedding_columns(embedding)])
            x = np.ascontiguousarray(embedding_matrix(rg.take(pa.array(rows[in_g] - starts[g])), embedding,
                                                      where=f"{path}: "))
            parts.append(pa.table([pa.array(pos[in_g]), pa.array([x.dtype.str] * len(x)),
                                   pa.array([r.tobytes() for r in x], pa.binary())], schema=VECTORS))
        return pa.concat_tables(parts)

    return fn


def _ranked(limit: int, order=ORDER, schema: pa.Schema = PICKS):
    out = ranked_schema(schema)

    def fn(t: pa.Table) -> pa.Table:
        t = t.sort_by([(c, "ascending") for c in order]).slice(0, limit)
        return pa.table([*(t.column(f.name) for f in out if f.name != "pos"),
                         pa.array(np.arange(t.num_rows, dtype=np.int32))], schema=out)

    return fn


def smallest_picks(candidates, total: int, limit: int, schema: pa.Schema = PICKS, order=ORDER):
    """Steps 1-3 above over any frame of picks: ``candidates(threshold)`` makes the frame of
    rows (``schema``: at least ``hash`` and ``shard``, plus what breaks ties) whose hash is at
    most ``threshold``, ``total`` rows in all; returns (the cached frame the caller releases
    when done, a frame of the ``limit`` smallest by ``order`` numbered ``pos`` in that order),
    or None when ``total`` is 0. The driver sees one count per pass and per level."""
    want = min(limit, total)
    if want == 0:
        return None
    threshold = first_threshold(total, limit)
    while True:
        frame = candidates(threshold).cache()
        n = frame.count()
        if n >= want or threshold >= MAX_HASH:
            break
        frame.release()
        threshold = MAX_HASH if threshold > MAX_HASH // WIDEN else threshold * WIDEN
    width = 1
    while n > max_picks(limit):
        width *= FAN
        cut = (frame.map_batches(_grouped(width, schema), grouped_schema(schema))
               .group_apply("group", _group_smallest(limit, order, schema), schema).cache())
        n = cut.count()
        frame.release()
        frame = cut
    # at most max_picks(limit) rows left: one group ranks them
    ranked = (frame.map_batches(_grouped(1 << 62, schema), grouped_schema(schema))
              .group_apply("group", _ranked(limit, order, schema), ranked_schema(schema)))
    return frame, ranked


def sample_picks(executor, paths: list[str], limit: int, seed: int = 0):
    """A frame of (shard, row, pos) of the sample, ``pos`` its place in sample order (the
    workers' passes above); None for an empty table."""
    from curate.storage import parquet_file

    paths = [str(p) for p in paths]
    total = sum(parquet_file(p).metadata.num_rows for p in paths)  # footers only

    def candidates(threshold: int):
        tasks = [dict(path=p, index=i, seed=seed, threshold=threshold, limit=limit) for i, p in enumerate(paths)]
        return executor.frame_from_tasks(tasks, pick_task, PICKS)

    return smallest_picks(candidates, total, limit)


def embedding_sample(executor, paths, embedding: str = "image", limit: int = 256, seed: int = 0) -> np.ndarray:
    """``guards.embedding_sample``: the picks' normalised vectors in sample order (float32,
    ``(0, 1)`` when the table is empty). The driver collects the ``limit`` vectors only."""
    paths = [str(p) for p in paths]
    picked = sample_picks(executor, paths, limit, seed)
    if picked is None:
        return np.zeros((0, 1), np.float32)
    cached, ranked = picked
    try:
        got = ranked.group_apply("shard", _read_picks(paths, embedding), VECTORS).collect_small(limit)
    finally:
        cached.release()
    dtype = np.dtype(got.column("dtype")[0].as_py())
    x = np.stack([np.frombuffer(b, dtype) for b in got.column("x").to_pylist()])
    out = np.zeros_like(x)
    out[got.column("pos").to_numpy()] = x
    return out
