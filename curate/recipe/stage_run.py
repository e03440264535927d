"""One recipe stage run for real: the job's decisions restricted to the stage's input,
checked and counted by the engine, written into the stage's cache entry by the workers, and
the uid table the next stage gets.

Two interfaces: a converted stage (``frames=True``) takes its input as a uid table and
returns its decisions as a table or frame; the legacy one (``sample``) takes a uid array and
returns driver-side decisions, through a bounded adapter (``LEGACY_MAX_ROWS``).
"""

from __future__ import annotations

from typing import NamedTuple

import pyarrow as pa
import pyarrow.compute as pc

from curate.decisions import KEPT, reason_counts
from curate.engine.frame import RepeatedKeys, TooManyRows
from curate.errors import DatasetError, RecipeError
from curate.recipe.cache import StageCache
from curate.recipe.registry import StageContext, StageOutput, StageResult
from curate.recipe.uid_tables import UidTable, write_uid_table
from curate.selection import DECISIONS, count_decisions, write_decisions_table
from curate.storage import remove_tree
from curate.tables import Dataset, load_schema

LEGACY_MAX_ROWS = 20_000_000  # input rows a stage not converted to tables may take on the driver


class StageRun(NamedTuple):
    """What a stage run wrote and counted."""

    decisions: str  # the decisions table in the cache entry
    uids: UidTable  # the stage's output (its input table itself when it removed nothing)
    stats: dict
    reasons: dict[str, int]  # decision rows per reason
    kept: int


def with_stage(decisions, stage: str):
    """A decisions frame with every row's ``stage`` set to ``stage`` (in the JVM on Spark: no
    pass of the rows through Python)."""
    others = [n for n in DECISIONS.names if n != "stage"]
    return decisions.select(others).with_constant("stage", stage, pa.string()).select(DECISIONS.names)


def _one_decision_each(stage: str, n: int, inp: UidTable, repeats: int = 0) -> DatasetError:
    twice = f", {repeats} of them for a uid decided already" if repeats else ""
    return DatasetError(f"stage {stage!r} returned {n} decision rows for {inp.distinct} distinct "
                        f"input uids{twice} (each input uid needs exactly one decision)")


def check_stage_decisions(dec, inp: UidTable, stage: str) -> tuple[dict[str, int], int]:
    """The engine's checks of a stage's decisions frame (already restricted to its input):
    as many decisions as distinct input uids, ``reason == kept`` exactly where kept (that no
    uid has two is checked by the sorted write: ``write_stage_decisions``). Returns the (rows
    per reason, rows kept) counts; O(reasons) rows reach the driver."""
    reasons, n_kept, inconsistent = count_decisions(dec)
    n = sum(reasons.values())
    if n != inp.distinct:
        raise _one_decision_each(stage, n, inp)
    if inconsistent:
        raise DatasetError(f"stage {stage!r}: reason must be 'kept' exactly where kept is true")
    return reasons, n_kept


def write_stage_decisions(dataset: Dataset, table: str, dec, inp: UidTable, stage: str) -> dict:
    """A checked stage's decisions written sorted; a uid with two decisions (so another input
    uid has none) fails before any shard is written, found by the sort itself."""
    try:
        return write_decisions_table(dataset, table, dec, unique=True)
    except RepeatedKeys as e:
        raise _one_decision_each(stage, inp.distinct, inp, e.count) from None


def _check_legacy_decisions(decisions: pa.Table, uids: pa.Array, stage: str) -> pa.Table:
    """Legacy adapter: conform a stage's driver-side decisions and check them (one row per
    distinct input uid, reasons consistent)."""
    schema = load_schema("decisions")
    n = decisions.num_rows
    decisions = decisions.set_column(decisions.schema.get_field_index("stage"), "stage",
                                     pa.array([stage] * n, pa.string()))
    decisions = schema.conform(decisions)
    distinct_in = pc.unique(uids)
    if n == 0 and len(distinct_in) == 0:
        return decisions
    if n != len(distinct_in) or pc.count_distinct(decisions.column("uid")).as_py() != n:
        raise DatasetError(f"stage {stage!r} returned {n} decision rows for {len(distinct_in)} distinct "
                           f"input uids (each input uid needs exactly one decision)")
    if not pc.all(pc.is_in(decisions.column("uid"), value_set=distinct_in)).as_py():
        raise DatasetError(f"stage {stage!r} returned decisions for uids that were not in its input")
    is_kept_reason = pc.equal(decisions.column("reason"), KEPT)
    if not pc.all(pc.equal(is_kept_reason, decisions.column("kept"))).as_py():
        raise DatasetError(f"stage {stage!r}: reason must be 'kept' exactly where kept is true")
    return decisions


def _decisions_frame(ctx: StageContext, executor, out: StageOutput):
    if isinstance(out.decisions, str):
        paths = [str(p) for p in ctx.dataset.shards(out.decisions)]
        return executor.frame_read(paths, DECISIONS) if paths else executor.frame_from_table(DECISIONS.empty_table())
    return out.decisions


def _job_input(dataset: Dataset, executor, inp: UidTable, work: str) -> UidTable:
    """The input as the jobs take it: distinct uids (a table with repeats is deduplicated once)."""
    if inp.rows == inp.distinct:
        return inp
    return write_uid_table(dataset, work, inp.frame(dataset, executor).distinct(), inp.distinct)


def run_table_stage(ctx: StageContext, kind, params, inp: UidTable, cache: StageCache, key: str,
                    stage: str) -> StageRun:
    """A converted stage: the job's decisions restricted to the input by a semi-join, checked,
    counted and written into the cache entry by the workers; the kept uids (input repeats
    preserved) likewise."""
    ex = ctx.executor()
    ds = ctx.dataset
    job_in = _job_input(ds, ex, inp, f"_tmp/{ctx.run_name}/input")
    out: StageOutput = kind.run(ctx, job_in, params)
    in_frame = inp.frame(ds, ex)
    dec = with_stage(_decisions_frame(ctx, ex, out).semi_join(job_in.frame(ds, ex)), stage)
    dec = dec.cache()
    try:
        reasons, n_kept = check_stage_decisions(dec, inp, stage)
        cache.begin(key)
        dec_table = cache.table(key, "decisions")
        write_stage_decisions(ds, dec_table, dec, inp, stage)
        if n_kept == inp.distinct:  # removed nothing: the output is the input table
            out_uids = inp
        else:
            out_uids = write_uid_table(ds, cache.table(key, "uids"), in_frame.semi_join(dec.filter_true("kept")),
                                       distinct=n_kept)
    finally:
        dec.release()
        remove_tree(ds.table_dir(f"_tmp/{ctx.run_name}"))
    return StageRun(dec_table, out_uids, out.stats, reasons, n_kept)


def run_legacy_stage(ctx: StageContext, kind, params, inp: UidTable, cache: StageCache, key: str,
                     stage: str) -> StageRun:
    """A stage not converted yet: its input uids come to the driver (at most
    ``LEGACY_MAX_ROWS``, counted in ``executor.driver_counter``), its decisions go back to
    the workers through a frame."""
    ex = ctx.executor()
    try:
        uids = inp.frame(ctx.dataset, ex).collect_small(LEGACY_MAX_ROWS).column("uid").combine_chunks()
    except TooManyRows:
        raise RecipeError(f"stage {stage!r} (kind {kind.kind}) still takes its input on the driver and the "
                          f"input has more than {LEGACY_MAX_ROWS:,} rows; run its command as a job instead") from None
    uids = uids.cast(pa.string())
    result = kind.run(ctx, uids, params)
    if not isinstance(result, StageResult):
        result = StageResult(decisions=result)
    decisions = _check_legacy_decisions(result.decisions, uids, stage)
    ex.driver_counter.note("legacy_stage_decisions", decisions.num_rows)
    cache.begin(key)
    dec_table = cache.table(key, "decisions")
    write_decisions_table(ctx.dataset, dec_table, ex.frame_from_table(decisions.cast(DECISIONS)))
    reasons = reason_counts(decisions)
    n_kept = int(reasons.get(KEPT, 0))
    if result.uids is None and n_kept == inp.distinct:
        out_uids = inp
    elif result.uids is None:
        kept = ex.frame_from_table(decisions.select(["uid", "kept"])).filter_true("kept")
        out_uids = write_uid_table(ctx.dataset, cache.table(key, "uids"), inp.frame(ctx.dataset, ex).semi_join(kept),
                                   distinct=n_kept)
    else:  # an upsampling stage names its output uids (repeats) itself
        out_uids = write_uid_table(ctx.dataset, cache.table(key, "uids"),
                                   ex.frame_from_table(pa.table({"uid": result.uids.cast(pa.string())})))
    return StageRun(dec_table, out_uids, result.stats, reasons, n_kept)
