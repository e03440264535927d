"""The one selection finish: a step's decisions become ``decisions/<run>``, ``subsets/<name>``
and the run manifest, written by the workers.

The contract (docs/ARCHITECTURE.md, "Selection steps"): a selection step builds a frame of
decision rows with the ``decisions`` schema (uid, stage, kept, reason, value, detail), one row
per input uid and stage, ``reason == "kept"`` exactly where ``kept``; it never collects them.
``finish_selection`` then

1. counts rows per (reason, kept) with the engine (a distributed count, not a driver-side
   tally);
2. sums the per-task partial histograms of the decision ``value`` (the guards' "acted on"
   distribution) when the step asks for one;
3. writes ``decisions/<run>`` sorted by (uid, stage) in shards of exactly
   ``DECISIONS_SHARD_ROWS`` rows (range-partitioned sort, written by the workers), and fails
   before writing any shard if an input uid got more than one decision (equal uids are side by
   side once sorted: the sort's own pass counts them, no distinct-count shuffle);
4. writes the kept uids of those sorted shards into ``subsets/<name>`` (``uids.parquet``
   and DataComp's ``uids.npy``): from parts the workers make of each shard where the executor
   runs at least 8 tasks at once (``subset_parts``), else streamed by the driver, one batch in
   memory at a time;
5. writes the manifest with one set of count keys: ``input``, ``kept``, ``removed`` and
   ``reasons`` (rows per reason), plus what the step adds.

Only the per-reason counts, the histogram bins and one record per written shard reach the
driver. The bytes equal the driver-side finish this replaces.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pyarrow as pa

from curate.decisions import KEPT
from curate.engine.frame import RepeatedKeys
from curate.errors import DatasetError
from curate.manifest import RunManifest
from curate.names import check_name
from curate.subset_parts import write_subset_from_table
from curate.tables import Dataset, load_schema

DECISIONS_SHARD_ROWS = 2_000_000
MAX_REASONS = 10_000  # distinct (reason, kept) pairs a step may produce; more is a bug
DECISIONS = load_schema("decisions").arrow()


def uniform_decisions(uids, stage: str, kept: bool, reason: str):
    """A decision for every row of the uid frame ``uids``, all alike (kept, or removed with
    ``reason``; no value, no detail): the samples a job leaves alone or cannot judge. Built from
    constant columns, in the JVM on Spark (no pass of the uids through Python)."""
    if kept != (reason == KEPT):
        raise ValueError(f"reason {reason!r} with kept={kept}: 'kept' exactly where kept")
    return (uids.select(["uid"]).with_constant("stage", stage, pa.string()).with_constant("kept", kept, pa.bool_())
            .with_constant("reason", reason, pa.string()).with_constant("value", None, pa.float64())
            .with_constant("detail", None, pa.string()).select(DECISIONS.names))


def count_reasons(decisions) -> tuple[dict[str, int], int]:
    """(rows per reason sorted by reason, rows kept) of a decisions frame, counted by the engine."""
    reasons, kept, _ = count_decisions(decisions)
    return reasons, kept


def count_decisions(decisions) -> tuple[dict[str, int], int, int]:
    """``count_reasons`` and the rows whose ``kept`` disagrees with their reason (kept is true
    exactly where the reason is ``kept``; a null flag is false, a null reason disagrees), all
    from one count per (reason, kept) pair."""
    t = decisions.aggregate(["reason", "kept"], {"n": ("uid", "count")}).collect_small(MAX_REASONS)
    reasons: dict[str, int] = {}
    kept = inconsistent = 0
    for r, k, n in zip(t.column("reason").to_pylist(), t.column("kept").to_pylist(), t.column("n").to_pylist()):
        reasons[r] = reasons.get(r, 0) + int(n)
        kept += int(n) if k else 0
        inconsistent += int(n) if r is None or (r == KEPT) != bool(k) else 0
    return dict(sorted(reasons.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))), kept, inconsistent


def value_histogram(decisions, transform: Callable[[np.ndarray], np.ndarray] | None = None) -> np.ndarray:
    """The guards' fixed-bin histogram of the decisions' ``value`` column: a partial histogram
    per batch on the workers, summed by bin by the engine (at most ``guards.BINS`` rows back)."""
    from curate.embedding_space import guards
    from curate.engine.frame import HISTOGRAM_SCHEMA

    def partial(batch: pa.RecordBatch) -> pa.Table:
        v = batch.column("value").to_numpy(zero_copy_only=False)
        v = np.asarray([np.nan if x is None else x for x in v], dtype=np.float64) if v.dtype == object else v
        h = guards.histogram(transform(v) if transform else v)
        nz = np.flatnonzero(h)
        return pa.table([pa.array(nz.astype(np.int32)), pa.array(h[nz])], schema=HISTOGRAM_SCHEMA)

    bins = (decisions.select(["value"]).map_batches(partial, HISTOGRAM_SCHEMA)
            .aggregate(["bin"], {"n": ("n", "sum")}).collect_small(guards.BINS))
    h = np.zeros(guards.BINS, dtype=np.int64)
    np.add.at(h, bins.column("bin").to_numpy(), bins.column("n").to_numpy().astype(np.int64))
    return h


def write_decisions_table(dataset: Dataset, table: str, decisions, unique: bool = False) -> dict:
    """A decisions frame as ``table``: sorted by (uid, stage), exact-size shards, by the workers.
    ``unique``: one row per uid (a one-stage step), else ``RepeatedKeys`` and nothing written."""
    return decisions.write_sorted(dataset, table, "decisions", ["uid", "stage"], DECISIONS_SHARD_ROWS,
                                  unique="uid" if unique else None)


def write_decisions_frame(dataset: Dataset, run: str, decisions, unique: bool = False) -> dict:
    """``decisions/<run>`` from a frame (``write_decisions_table``)."""
    check_name(run, "decisions run name", reserved=False)
    return write_decisions_table(dataset, f"decisions/{run}", decisions, unique)


def write_kept_subset(dataset: Dataset, run: str, name: str, kept: int, manifest: dict, stages: int = 1,
                      executor=None):
    """``subsets/<name>`` from the sorted ``decisions/<run>``: uids every one of the ``stages``
    decisions kept; read, checked and converted by ``executor``'s tasks where it runs at least 8
    at once (``subset_parts``), else streamed by the driver."""
    return write_subset_from_table(executor, dataset, name, f"decisions/{run}", "kept", kept, manifest, stages)


SUBSET_TMP_ROWS = 1_000_000


def write_subset_frame(dataset: Dataset, name: str, uids, manifest: dict, executor=None):
    """``subsets/<name>`` from a frame of uids in any order: the workers sort it into temporary
    shards (``_tmp/subset-<name>``), which become the subset's files (``write_subset_from_table``)."""
    from curate.storage import remove_tree

    tmp = f"_tmp/subset-{name}"
    try:
        written = uids.select(["uid"]).write_sorted(dataset, tmp, load_schema("subset"), ["uid"], SUBSET_TMP_ROWS)
        return write_subset_from_table(executor, dataset, name, tmp, None, written["rows"], manifest)
    finally:
        remove_tree(dataset.table_dir(tmp))


class RunResult(dict):
    """A finished run: counts, guards, timings. ``result["decisions"]`` reads the written
    decisions table on demand (tests and recipe stages), so nothing per row is held before."""

    def __init__(self, dataset: Dataset, decisions_run: str, **items):
        super().__init__(**items)
        self._dataset, self._run = dataset, decisions_run

    def __missing__(self, key):
        if key == "decisions":
            return self._dataset.read(f"decisions/{self._run}", schema="decisions")
        raise KeyError(key)

    def get(self, key, default=None):
        return self[key] if key == "decisions" or key in self else default


def finish_selection(executor, dataset: Dataset, run: str, stage: str, decisions, manifest: RunManifest,
                     output: str | None = None, extra_counts: dict | None = None,
                     guards: tuple[dict, list[str]] | None = None, acted_on: tuple[str, Callable | None] | None = None,
                     removal_guard: bool = True, cleanup: Callable[[], None] | None = None,
                     input_rows: tuple[str, int] | None = None) -> RunResult:
    """Check, count and write a selection step's decisions frame (module docstring).

    ``input_rows``: (table, its rows) when every row of that table is an input that must get a
    decision of its own; fewer decisions mean repeated uids in it, which a step that groups by
    uid would otherwise fold into one in silence.

    ``guards``: (distributions, warnings) the step measured itself; ``acted_on``: (what,
    transform) asks for the histogram of the decisions' values under ``distributions["acted_on"]``;
    the removal guard (most of the input removed) is added unless ``removal_guard`` is False.
    """
    from curate.embedding_space import guards as _guards

    clash = {"input", "kept", "removed", "reasons"} & set(extra_counts or {})
    if clash:  # a stage's own figures never stand in for the counts of its decisions (a bug: before any write)
        raise ValueError(f"{stage}: extra counts {sorted(clash)} would replace the decisions' counts")
    dec = decisions.cache()
    try:
        reasons, n_kept = count_reasons(dec)
        n = sum(reasons.values())
        if input_rows is not None and n != input_rows[1]:
            raise DatasetError(f"{input_rows[0]} has {input_rows[1]:,} rows, {stage} made {n:,} decisions: a uid must "
                               "have one row (duplicate uids in the table?)")
        dists, warns = guards or ({}, [])
        dists = dict(dists)
        if acted_on is not None:
            what, transform = acted_on
            dists["acted_on"] = _guards.distribution(value_histogram(dec, transform), what)
        if removal_guard:
            warns = list(warns) + _guards.removal_warning(stage, n, n - n_kept)
        g = _guards.guards_record(dists, warns)
        with manifest.stage("write"):
            try:  # one decision per uid: checked by the sort of the write, before any shard is written
                write_decisions_frame(dataset, run, dec, unique=True)
            except RepeatedKeys as e:
                raise DatasetError(f"{run}: {e.count} input uids got more than one decision (duplicate uids in "
                                   f"input?)") from None
            name = output or run
            write_kept_subset(dataset, run, name, n_kept,
                              {"stage": stage, "run": run, "params": manifest["params"], "input_count": n,
                               "reasons": reasons, "guards": g}, executor=executor)
    finally:
        dec.release()
    c = {"input": n, "kept": int(reasons.get("kept", 0)), "removed": n - int(reasons.get("kept", 0)),
         "reasons": reasons}
    c.update(extra_counts or {})
    manifest["counts"] = c
    manifest["guards"] = g
    manifest["outputs"] = {"decisions": f"decisions/{run}", "subset": f"subsets/{name}"}
    manifest.write(dataset, run)
    if cleanup is not None:
        cleanup()
    return RunResult(dataset, run, run=run, subset=name, counts=c, timings_s=manifest["timings_s"], guards=g)
