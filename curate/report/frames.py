"""The report's questions to the engine: histograms, stable samples and top-k rows, answered by
the workers over frames (``curate.engine.frame``) so that only bins, picks and counts reach the
driver, whatever the pool's size.

- ``value_histogram``: fixed bins shared by the series (pool, curated). Integer values (caption
  words, cluster sizes, matches per entry) come back as (value, count) rows and are binned on
  the driver; float values (CLIP scores) take two passes: their range, then partial
  histograms summed by bin. The bins and bar heights equal ``numpy.histogram`` of the whole
  column (``plots.bin_heights``'s rule).
- ``stable_sample``: per group (a stage's reason), the ``k`` rows with the smallest salted uid
  hash: varied, the same on every rebuild, on every engine and partitioning. Each group's rows
  are thinned on the workers to those under a hash threshold that leaves about ``2k + 32``
  rows; a group that kept fewer than ``k`` is asked again with a higher threshold.
- ``top_k``: the first ``k`` rows in an order, per group or overall: each batch's first ``k``
  on the workers, then a grouped pass over those; ``k`` rows per group reach the driver.
"""

from __future__ import annotations

import hashlib
from typing import Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.engine.frame import MAX_KEEP_VALUES, conform, first_of_runs

# distinct integer values a histogram series may have (cluster sizes, matches per entry: at most
# sqrt(2 * rows) distinct sums of rows, 45,000 at a billion); more is a bug
MAX_DISTINCT_VALUES = 4_000_000
SAMPLE_SLACK = 32  # rows kept under the threshold: about 2k + SAMPLE_SLACK a group
HASH = "_pick_hash"
VALUE = "v"


def table_frame(executor, dataset, table: str, columns: list[str]):
    """``table``'s ``columns`` as a frame (types from its first shard's footer)."""
    shards = [str(p) for p in dataset.shards(table)]
    schema = storage.parquet_file(shards[0]).schema_arrow
    return executor.frame_read(shards, pa.schema([schema.field(c) for c in columns]))


def rows_for_keys(frame, on: str, values: pa.Array):
    """``frame``'s rows whose ``on`` is one of ``values`` (the samples shown): filtered where read
    (``keep_values``: no shuffle) up to ``MAX_KEEP_VALUES`` keys, joined against them past that."""
    if len(values) <= MAX_KEEP_VALUES:
        return frame.keep_values(on, values)
    return frame.semi_join(frame.executor.frame_from_table(pa.table({on: values})), on=on)


# ------------------------------------------------------------------ histograms
def bin_edges(lo: float, hi: float, bins: int, integer: bool) -> np.ndarray:
    """Integers spanning at most ``bins`` values: one bar each; otherwise ``bins`` equal bins."""
    if integer and hi - lo <= bins:
        return np.arange(lo - 0.5, hi + 1.5)
    return np.linspace(lo, hi if hi > lo else lo + 1, bins + 1)


SIDE = "side"


def values_of(frame, fn: Callable[[pa.RecordBatch], pa.Array], integer: bool):
    """``frame`` (with a ``side`` column) mapped to (``side``, ``v``): ``fn``'s values per batch
    as int64 or float64, nulls and NaN dropped."""
    typ = pa.int64() if integer else pa.float64()
    schema = pa.schema([(SIDE, pa.string()), (VALUE, typ)])

    def run(batch: pa.RecordBatch) -> pa.Table:
        v = fn(batch)
        v = v.combine_chunks() if isinstance(v, pa.ChunkedArray) else v
        keep = pc.is_valid(v)
        if pa.types.is_floating(v.type):
            keep = pc.and_(keep, pc.invert(pc.is_nan(v)))
        keep = pc.fill_null(keep, False)
        return pa.table([batch.column(SIDE).filter(keep), v.filter(keep).cast(typ)], schema=schema)

    return frame.map_batches(run, schema)


def _empty(sides: list[str]) -> dict:
    return {"edges": np.array([0.0, 1.0]), "counts": {}, "n": {k: 0 for k in sides}, "total": {k: 0.0 for k in sides}}


def value_histogram(frame, sides: list[str], bins: int, integer: bool,
                    transform: Callable[[np.ndarray], np.ndarray] | None = None) -> dict:
    """Bins shared by the sides (pool, curated) of a (``side``, ``v``) frame (``values_of``):
    ``{"edges", "counts": {side: rows per bin}, "n": {side: rows}, "total": {side: sum of v}}``;
    a side without rows has no counts. ``transform`` (integer values only) maps the values
    before binning (log10)."""
    if integer:
        return _integer_histogram(frame, sides, bins, transform)
    frame = frame.cache()  # two passes (range, then bins): the join behind the values computed once
    try:
        return _float_histogram(frame, sides, bins)
    finally:
        frame.release()


def _float_histogram(frame, sides: list[str], bins: int) -> dict:
    t = frame.aggregate([SIDE], {"lo": (VALUE, "min"), "hi": (VALUE, "max"), "n": (VALUE, "count"),
                                 "total": (VALUE, "sum")}).collect_small(len(sides))
    stats = {r[SIDE]: r for r in t.to_pylist() if r["n"]}
    if not stats:
        return _empty(sides)
    edges = bin_edges(min(r["lo"] for r in stats.values()), max(r["hi"] for r in stats.values()), bins, False)
    got = (frame.map_batches(_partial_histogram(edges), PARTIAL)
           .aggregate([SIDE, "bin"], {"n": ("n", "sum")}).collect_small(len(sides) * len(edges)))
    counts = {k: np.zeros(len(edges) - 1, np.int64) for k in sides if k in stats}
    for side, b, n in zip(got.column(SIDE).to_pylist(), got.column("bin").to_pylist(), got.column("n").to_pylist()):
        counts[side][b] += n
    return {"edges": edges, "counts": counts, "n": {k: int(stats[k]["n"]) if k in stats else 0 for k in sides},
            "total": {k: float(stats[k]["total"]) if k in stats else 0.0 for k in sides}}


PARTIAL = pa.schema([(SIDE, pa.string()), ("bin", pa.int32()), ("n", pa.int64())])


def _partial_histogram(edges: np.ndarray):
    def run(batch: pa.RecordBatch) -> pa.Table:
        side = batch.column(SIDE).to_numpy(zero_copy_only=False)
        v = batch.column(VALUE).to_numpy(zero_copy_only=False)
        parts = []
        for name in np.unique(side):
            h, _ = np.histogram(v[side == name], bins=edges)
            nz = np.flatnonzero(h)
            parts.append(pa.table([pa.array([name] * len(nz), pa.string()), pa.array(nz.astype(np.int32)),
                                   pa.array(h[nz].astype(np.int64))], schema=PARTIAL))
        return pa.concat_tables(parts) if parts else PARTIAL.empty_table()

    return run


def _integer_histogram(frame, sides: list[str], bins: int, transform) -> dict:
    t = frame.aggregate([SIDE, VALUE], {"n": (VALUE, "count")}).collect_small(len(sides) * MAX_DISTINCT_VALUES)
    found = {}
    for k in sides:
        mine = t.filter(pc.equal(t.column(SIDE), k))
        found[k] = (mine.column(VALUE).to_numpy(zero_copy_only=False).astype(np.float64),
                    mine.column("n").to_numpy(zero_copy_only=False).astype(np.int64))
    n = {k: int(c.sum()) for k, (_, c) in found.items()}
    total = {k: float((v * c).sum()) for k, (v, c) in found.items()}
    shown = {k: (transform(v) if transform else v, c) for k, (v, c) in found.items() if len(v)}
    if not shown:
        return {**_empty(sides), "n": n, "total": total}
    lo = min(float(v.min()) for v, _ in shown.values())
    hi = max(float(v.max()) for v, _ in shown.values())
    edges = bin_edges(lo, hi, bins, transform is None)
    counts = {k: np.histogram(v, bins=edges, weights=c)[0].round().astype(np.int64) for k, (v, c) in shown.items()}
    return {"edges": edges, "counts": counts, "n": n, "total": total}


# ------------------------------------------------------------------ stable samples
def salt_seed(salt: str) -> int:
    return int.from_bytes(hashlib.blake2b(salt.encode("utf-8"), digest_size=8).digest(), "little")


def pick_hash(uids, salt: str) -> np.ndarray:
    """The salted 63-bit hash a stable pick orders uids by (splitmix64 of the uid's bits)."""
    from curate.embedding_space.sampling import uid_hash_array

    return uid_hash_array(uids, salt_seed(salt))


def stable_sample(frame, k: int, counts: dict[tuple, int], salt: Callable[[tuple], str],
                  groups: tuple[str, ...] = ()) -> dict[tuple, pa.Table]:
    """Per group (values of ``groups``; ``()`` is the whole frame) its ``k`` rows with the
    smallest ``pick_hash(uid, salt(group))``, in that order. ``counts``: rows per group (from
    an ``aggregate``), which sets each group's threshold; groups not in it are not sampled."""
    want = {g: min(k, n) for g, n in counts.items() if n}
    scale = {g: 1.0 for g in want}
    picked: dict[tuple, pa.Table] = {}
    todo = set(want)
    schema = frame.schema.append(pa.field(HASH, pa.int64()))
    while todo:
        limits = {}
        for g in todo:
            share = scale[g] * (2 * k + SAMPLE_SLACK) / counts[g]
            limits[g] = None if share >= 1 else int(share * 2**63)
        got = (frame.map_batches(_under_threshold(limits, salt, groups, schema), schema)
               .collect_small(sum(counts[g] if limits[g] is None else 8 * k + 16 * SAMPLE_SLACK for g in todo)))
        for g in list(todo):
            rows = got
            for col, value in zip(groups, g):
                rows = rows.filter(pc.equal(rows.column(col), value))
            if rows.num_rows >= want[g] or limits[g] is None:
                rows = rows.sort_by([(HASH, "ascending"), ("uid", "ascending")])
                picked[g] = rows.slice(0, want[g]).drop_columns([HASH])
                todo.discard(g)
            else:
                scale[g] *= 4  # unlucky: fewer than k under the threshold
    return picked


def _under_threshold(limits: dict[tuple, int | None], salt, groups: tuple[str, ...], schema: pa.Schema):
    def run(batch: pa.RecordBatch) -> pa.Table:
        t = pa.Table.from_batches([batch])
        parts = []
        for g, limit in limits.items():
            rows = t
            for col, value in zip(groups, g):
                rows = rows.filter(pc.equal(rows.column(col), value))
            if rows.num_rows == 0:
                continue
            h = pick_hash(rows.column("uid"), salt(g))
            keep = np.ones(len(h), bool) if limit is None else h < limit
            parts.append(rows.filter(pa.array(keep)).append_column(HASH, pa.array(h[keep], pa.int64())))
        return conform(pa.concat_tables(parts), schema) if parts else schema.empty_table()

    return run


# ------------------------------------------------------------------ top k
GROUP = "_top_group"


def top_k(frame, order: list[tuple[str, str]], k: int, by: str | None = None, groups: int = 1) -> pa.Table:
    """The first ``k`` rows of ``frame`` in ``order`` ([(column, "ascending"|"descending")]),
    per value of ``by`` (or overall), sorted by ``by`` then ``order``. ``groups``: how many
    values of ``by`` there can be (the bound on what reaches the driver)."""
    key = by or GROUP
    schema = frame.schema if by else frame.schema.append(pa.field(GROUP, pa.int32()))
    sort = [(key, "ascending"), *order]

    def first_k(t: pa.Table | pa.RecordBatch) -> pa.Table:
        t = pa.Table.from_batches([t]) if isinstance(t, pa.RecordBatch) else t
        if not by and GROUP not in t.column_names:
            t = t.append_column(GROUP, pa.array(np.zeros(t.num_rows, np.int32)))
        if t.num_rows == 0:
            return schema.empty_table()
        t = t.sort_by(sort)
        rank = np.arange(t.num_rows) - first_of_runs(t.column(key))
        return conform(t.filter(pa.array(rank < k)), schema)

    out = frame.map_batches(first_k, schema).group_apply_many(key, first_k, schema).collect_small(k * groups)
    out = out.sort_by(sort) if out.num_rows else out
    return out if by else out.drop_columns([GROUP])
