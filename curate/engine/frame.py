"""Frames: lazy distributed tables that jobs build, transform and write without the rows ever
reaching the driver.

An executor makes frames (``frame_from_tasks``, ``frame_read``, ``frame_from_table``); a frame
is transformed (``map_batches``, ``group_apply`` / ``group_apply_many``, ``semi_join`` / ``anti_join`` / ``join`` on a
key, ``keep_values`` (a few keys the driver holds), ``with_constant``, ``distinct``, ``union``, ``aggregate``,
``partition_by``) and consumed in one of three ways:

- ``write_sorted``: range-partitioned sort and exact-size shards written by the workers;
- ``count`` / ``aggregate(...).collect_small(limit)``: numbers and per-key summaries for the
  driver (small by construction; ``collect_small`` refuses more than ``limit`` rows).

An output that must be one file (a subset's ``uids.parquet`` / DataComp ``uids.npy``) is
streamed from the sorted shards ``write_sorted`` left (``curate.subset``), never collected.

``LocalFrame`` here is the in-process reference: an Arrow table, each operation the plain
pyarrow equivalent. ``curate.engine.spark_frame.SparkFrame`` runs the same operations on a
Spark DataFrame; both give the same rows (row order is never part of the contract: sort on
write). Every value that comes back to the driver through a frame is counted in
``executor.driver_rows`` (rows of summaries, counts, written-shard records), so a test can prove a
job's driver sees O(reasons + shards + clusters) rows, not O(rows).
"""

from __future__ import annotations

from typing import Callable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

BatchFn = Callable[[pa.RecordBatch], "pa.RecordBatch | pa.Table"]
TaskBatchesFn = Callable[[dict], Iterator[pa.RecordBatch]]
GroupFn = Callable[[pa.Table], pa.Table]

# group_apply_many() hands its function about this many rows a call (whole groups)
MANY_GROUPS_ROWS = 1 << 18

# keep_values() takes at most this many keys: they travel inside the plan to every task, and
# past ~1,000 string keys Spark's IN filter costs more than a join (1M rows: 0.5 s either way
# at 1,000 keys, 1.3 s against 0.6 s at 3,000, 4.2 s against 0.6 s at 10,000)
MAX_KEEP_VALUES = 1_000

# aggregate() specs: {output column: (input column, how)}; "count" ignores its column.
AGGREGATIONS = ("sum", "count", "min", "max")


class TooManyRows(RuntimeError):
    """A driver-side result larger than its declared bound: a job asked for per-row data."""


class RepeatedKeys(ValueError):
    """``write_sorted(..., unique=column)`` found rows sharing a value of ``column``; nothing
    was written. ``count``: rows equal to the row before them in the sort order."""

    def __init__(self, column: str, count: int):
        super().__init__(f"{count} rows repeat a {column} of the row before them")
        self.column, self.count = column, count


def adjacent_repeats(values: pa.Array | pa.ChunkedArray) -> int:
    """Rows of a sorted column equal to the row before them (nulls equal nulls)."""
    n = len(values)
    if n < 2:
        return 0
    a, b = values.slice(1), values.slice(0, n - 1)
    same = pc.fill_null(pc.equal(a, b), False)
    both_null = pc.and_(pc.is_null(a), pc.is_null(b))
    return int(pc.sum(pc.or_(same, both_null)).as_py() or 0)


def conform(t: pa.Table | pa.RecordBatch, schema: pa.Schema) -> pa.Table:
    """``t`` with exactly the columns of ``schema``, in order, cast to its types."""
    if isinstance(t, pa.RecordBatch):
        t = pa.Table.from_batches([t])
    cols = []
    for f in schema:
        c = t.column(f.name)
        cols.append(c.cast(f.type) if c.type != f.type else c)
    return pa.Table.from_arrays(cols, schema=schema)


def histogram_rows(values: np.ndarray, bins: int, lo: float, hi: float) -> pa.RecordBatch:
    """A partial fixed-bin histogram as (bin, n) rows, to be summed by ``aggregate``."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = np.clip(v[~np.isnan(v)], lo, hi)
    idx = np.minimum(((v - lo) * (bins / (hi - lo))).astype(np.int64), bins - 1)
    h = np.bincount(idx, minlength=bins)
    nz = np.flatnonzero(h)
    return pa.record_batch([pa.array(nz.astype(np.int32)), pa.array(h[nz].astype(np.int64))],
                           names=["bin", "n"])


HISTOGRAM_SCHEMA = pa.schema([("bin", pa.int32()), ("n", pa.int64())])


JOINS = ("inner", "left")


def joined_schema(left: pa.Schema, right: pa.Schema, on: str, how: str = "inner") -> pa.Schema:
    """The columns of ``left.join(right, on, how)``: the left's, then the right's but the key
    (nullable after a left join: a left row without a match gets nulls)."""
    if how not in JOINS:
        raise ValueError(f"join how={how!r} not in {JOINS}")
    clash = (set(left.names) & set(right.names)) - {on}
    if clash:
        raise ValueError(f"join on {on!r}: both sides have {sorted(clash)}")
    return pa.schema(list(left) + [f.with_nullable(True) if how == "left" else f for f in right if f.name != on])


class DriverCounter:
    """What came back to the driver through the executor interface, in rows (instrumentation)."""

    def __init__(self):
        self.driver_rows = 0
        self.by_call: dict[str, int] = {}

    def note(self, call: str, rows: int) -> None:
        self.driver_rows += int(rows)
        self.by_call[call] = self.by_call.get(call, 0) + int(rows)


def first_of_runs(values) -> np.ndarray:
    """For each row of a column sorted into runs of equal values, the index of its run's first row
    (a ``group_apply_many`` function finds its groups with it)."""
    v = values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values
    n = len(v)
    if n == 0:
        return np.zeros(0, np.int64)
    first = np.ones(n, bool)
    if n > 1:
        first[1:] = pc.not_equal(v.slice(1), v.slice(0, n - 1)).to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(first)
    return starts[np.cumsum(first) - 1]


class LocalFrame:
    """A frame held as one Arrow table in this process (the reference implementation)."""

    def __init__(self, executor, table: pa.Table):
        self.executor = executor
        self.table = table

    @property
    def schema(self) -> pa.Schema:
        return self.table.schema

    def _new(self, table: pa.Table) -> "LocalFrame":
        return LocalFrame(self.executor, table)

    # ---- transformations
    def map_batches(self, fn: BatchFn, schema: pa.Schema) -> "LocalFrame":
        parts = []
        for b in self.table.combine_chunks().to_batches(max_chunksize=65536):
            out = fn(b)
            if out.num_rows:
                parts.append(conform(out, schema))
        return self._new(pa.concat_tables(parts) if parts else schema.empty_table())

    def select(self, names: list[str]) -> "LocalFrame":
        return self._new(self.table.select(names))

    def select_as(self, columns: list[tuple[str, str]]) -> "LocalFrame":
        """Columns ``out`` taken from columns ``src`` for each (out, src): renames and copies
        without a pass over the rows in Python on Spark."""
        return self._new(pa.Table.from_arrays([self.table.column(src) for _, src in columns],
                                              names=[out for out, _ in columns]))

    def with_constant(self, column: str, value, type: pa.DataType) -> "LocalFrame":
        """A column ``column`` of ``type`` holding ``value`` on every row, appended (in the JVM on
        Spark: no pass over the rows in Python)."""
        return self._new(self.table.append_column(pa.field(column, type),
                                                  pa.array([value] * self.table.num_rows, type)))

    def filter_true(self, column: str) -> "LocalFrame":
        """Rows where boolean ``column`` is true."""
        return self._new(self.table.filter(pc.fill_null(self.table.column(column), False)))

    def semi_join(self, keys: "LocalFrame", on: str = "uid") -> "LocalFrame":
        """Rows whose ``on`` value occurs in ``keys`` (each row at most once)."""
        value_set = pc.unique(keys.table.column(on).combine_chunks())
        return self._new(self.table.filter(pc.is_in(self.table.column(on), value_set=value_set)))

    def keep_values(self, on: str, values: pa.Array) -> "LocalFrame":
        """Rows whose ``on`` value is one of ``values``: a few keys the driver holds (the
        samples a report shows), sent with the plan, so on Spark the table is filtered where it
        is read, with no shuffle (``semi_join`` against a frame moves both sides by key)."""
        return self._new(self.table.filter(pc.is_in(self.table.column(on), value_set=keep_value_set(values))))

    def anti_join(self, keys: "LocalFrame", on: str = "uid") -> "LocalFrame":
        """Rows whose ``on`` value does not occur in ``keys``."""
        value_set = pc.unique(keys.table.column(on).combine_chunks())
        return self._new(self.table.filter(pc.invert(pc.is_in(self.table.column(on), value_set=value_set))))

    def join(self, other: "LocalFrame", on: str, how: str = "inner") -> "LocalFrame":
        """Join on ``on``: each row of this frame with the other columns of every row of
        ``other`` with the same key (columns: this frame's, then ``other``'s but ``on``);
        ``how="left"`` also keeps this frame's rows without a match, with nulls."""
        schema = joined_schema(self.schema, other.schema, on, how)
        if self.table.num_rows == 0 or (other.table.num_rows == 0 and how == "inner"):
            return self._new(schema.empty_table())
        join_type = {"inner": "inner", "left": "left outer"}[how]
        t = self.table.join(other.table, keys=on, join_type=join_type, use_threads=False)
        return self._new(conform(t, schema))

    def distinct(self) -> "LocalFrame":
        t = self.table
        if t.num_rows == 0:
            return self
        return self._new(t.group_by(t.column_names, use_threads=False).aggregate([]).select(t.column_names))

    def union(self, other: "LocalFrame") -> "LocalFrame":
        return self._new(pa.concat_tables([self.table, conform(other.table, self.schema)]))

    def group_apply(self, key: str, fn: GroupFn, schema: pa.Schema) -> "LocalFrame":
        """``fn`` once per distinct ``key`` value with that group's rows (sort and slice)."""
        rows = self.table
        if rows.num_rows == 0:
            return self._new(schema.empty_table())
        rows = rows.sort_by([(key, "ascending")])
        keys = rows.column(key).to_numpy()
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        ends = np.r_[starts[1:], len(keys)]
        outs = [conform(o, schema) for o in (fn(rows.slice(s, e - s)) for s, e in zip(starts, ends)) if o.num_rows]
        return self._new(pa.concat_tables(outs) if outs else schema.empty_table())

    def group_apply_many(self, key: str, fn: GroupFn, schema: pa.Schema) -> "LocalFrame":
        """``fn`` on tables of several whole groups of ``key`` (rows sorted by ``key``), for many
        small groups (duplicate components) where a call per group costs more than its work.
        ``fn`` decides each group on its own: which groups share a call is not part of the
        contract. Here: calls of about ``MANY_GROUPS_ROWS`` rows, cut between groups."""
        rows = self.table
        if rows.num_rows == 0:
            return self._new(schema.empty_table())
        rows = rows.sort_by([(key, "ascending")])
        keys = rows.column(key).to_numpy(zero_copy_only=False)
        starts = np.flatnonzero(np.r_[True, keys[1:] != keys[:-1]])
        cuts = [0]
        for s in starts:
            if s - cuts[-1] >= MANY_GROUPS_ROWS:
                cuts.append(int(s))
        cuts.append(rows.num_rows)
        outs = [conform(o, schema) for o in (fn(rows.slice(a, b - a)) for a, b in zip(cuts, cuts[1:])) if o.num_rows]
        return self._new(pa.concat_tables(outs) if outs else schema.empty_table())

    def aggregate(self, keys: list[str], aggs: dict[str, tuple[str, str]]) -> "LocalFrame":
        """One row per distinct ``keys``: {out: (column, sum|count|min|max)} (any row order).

        A float ``sum`` adds in whatever order rows arrive, so its last bit may depend on the
        partitioning unless the values add exactly; a sum that must be the same float
        everywhere is computed inside ``group_apply`` in a fixed row order instead."""
        t = self.table
        specs, produced = [], []
        for out, (col, how) in aggs.items():
            if how not in AGGREGATIONS:
                raise ValueError(f"aggregation {how!r} not in {AGGREGATIONS}")
            specs.append(([], "count_all") if how == "count" else (col, how))
            produced.append("count_all" if how == "count" else f"{col}_{how}")
        if len(set(produced)) != len(produced):
            raise ValueError(f"aggregate: one aggregation per column and kind ({aggs})")
        g = t.group_by(keys, use_threads=False).aggregate(specs)
        g = pa.Table.from_arrays([g.column(k) for k in keys] + [g.column(p) for p in produced],
                                 names=[*keys, *aggs])
        for out, (_, how) in aggs.items():
            if how == "count":
                g = g.set_column(g.schema.get_field_index(out), out, g.column(out).cast(pa.int64()))
        return self._new(g)

    def partition_by(self, key: str) -> "LocalFrame":
        """Rows placed by ``key`` (one hash partition per key value) so that the next
        ``group_apply`` / ``aggregate`` on ``key`` of this frame (cache it first) need not move
        them again; in-process a no-op."""
        return self

    def cache(self) -> "LocalFrame":
        return self

    def release(self) -> None:
        return None

    def checkpoint(self) -> "LocalFrame":
        """The frame computed now, its lineage cut (iterations whose plans would otherwise
        grow round by round); an in-process table already is."""
        return self

    # ---- results for the driver
    def count(self) -> int:
        self.executor.driver_counter.note("count", 1)
        return self.table.num_rows

    def collect_small(self, limit: int, sort_by: list[str] | None = None) -> pa.Table:
        """The whole frame on the driver; ``TooManyRows`` if it has more than ``limit`` rows."""
        if self.table.num_rows > limit:
            raise TooManyRows(f"{self.table.num_rows} rows for the driver, more than the bound {limit}")
        self.executor.driver_counter.note("collect_small", self.table.num_rows)
        t = self.table
        return t.sort_by([(k, "ascending") for k in sort_by]) if sort_by and t.num_rows else t

    def write_sorted(self, dataset, table: str, schema, sort_by: list[str], rows_per_shard: int,
                     unique: str | None = None) -> dict:
        """``table`` sorted by ``sort_by`` in shards of exactly ``rows_per_shard`` rows (last
        smaller), each committed atomically; the bytes equal ``SparkFrame.write_sorted``'s.
        ``unique`` (the first sort column): raise ``RepeatedKeys`` before writing anything if
        two rows share its value (found in the sort itself: no extra shuffle on Spark)."""
        from curate.tables import load_schema

        ts = load_schema(schema) if isinstance(schema, str) else schema
        t = self.table.sort_by([(c, "ascending") for c in sort_by]) if self.table.num_rows else self.table
        if unique is not None:
            _check_unique(t.column(unique), unique, sort_by)
        t = conform(t, ts.arrow() if hasattr(ts, "arrow") else ts)
        paths = dataset.write_table(table, t, schema=ts if hasattr(ts, "arrow") else None,
                                    rows_per_shard=rows_per_shard)
        self.executor.driver_counter.note("write_sorted", len(paths))
        return {"rows": t.num_rows, "shards": len(paths)}


def keep_value_set(values) -> pa.Array:
    """``keep_values``'s keys, distinct and non-null; ``ValueError`` past ``MAX_KEEP_VALUES``."""
    values = pa.array(values) if not isinstance(values, (pa.Array, pa.ChunkedArray)) else values
    values = pc.unique(values.combine_chunks() if isinstance(values, pa.ChunkedArray) else values).drop_null()
    if len(values) > MAX_KEEP_VALUES:
        raise ValueError(f"keep_values: {len(values)} keys, more than {MAX_KEEP_VALUES} (semi_join a frame instead)")
    return values


def check_unique_sort(column: str, sort_by: list[str]) -> None:
    """Equal values are neighbours only when ``column`` is the first sort column."""
    if not sort_by or sort_by[0] != column:
        raise ValueError(f"unique={column!r} needs {column!r} as the first sort column (got {sort_by})")


def _check_unique(values, column: str, sort_by: list[str]) -> None:
    check_unique_sort(column, sort_by)
    repeats = adjacent_repeats(values)
    if repeats:
        raise RepeatedKeys(column, repeats)


class CountsDriverRows:
    """``executor.driver_counter``, made on first use (mixed into both executors' builders)."""

    @property
    def driver_counter(self) -> DriverCounter:
        c = self.__dict__.get("_driver_counter")
        if c is None:
            c = self.__dict__["_driver_counter"] = DriverCounter()
        return c


class LocalFrameBuilder(CountsDriverRows):
    """The frame constructors of the in-process executor (mixed into ``LocalExecutor``)."""

    def frame_from_tasks(self, tasks: list[dict], fn: TaskBatchesFn, schema: pa.Schema) -> LocalFrame:
        """The batches ``fn`` yields for every task (one partition per task on Spark)."""
        parts = [conform(b, schema) for t in tasks for b in fn(t) if b.num_rows]
        return LocalFrame(self, pa.concat_tables(parts) if parts else schema.empty_table())

    def frame_read(self, paths: list[str], schema: pa.Schema) -> LocalFrame:
        """Parquet files read with the columns of ``schema``."""
        from curate.storage import read_parquet

        parts = [conform(read_parquet(p, columns=schema.names), schema) for p in paths]
        return LocalFrame(self, pa.concat_tables(parts) if parts else schema.empty_table())

    def frame_from_table(self, table: pa.Table) -> LocalFrame:
        """A frame over a table the driver already holds (small tables, or a job whose rows
        are not distributed yet)."""
        return LocalFrame(self, table)
