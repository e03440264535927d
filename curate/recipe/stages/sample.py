"""``sample``: a seeded uniform random sample of the current subset (a fraction or a count).

Useful as the random baseline of an experiment (same size as a curated subset) and to cap a
subset's size. The draw is the ``k`` distinct uids with the smallest seeded hash
(``murmur3_x64_128`` of the uid, first 64 bits, ties by uid), where ``k = count`` or
``round(n x fraction)`` of the ``n`` distinct input uids (at most ``n``): a uniform draw
without replacement of exactly ``k`` uids that depends only on (seed, the set of uids), so it
is the same whatever the partitioning or engine.

It runs in the engine: the workers hash the distinct uids and write them sorted by (hash,
uid) in shards (``RANK_SHARD_ROWS`` rows), so a row's rank is the rows of the shards before
its own (their footers) plus its row; a task per shard writes its rows' decisions (kept when
the rank is below ``k``). The driver holds the counts and one row count per shard.

Before 2026-12-02 the draw was numpy's ``default_rng(seed).choice(n, k, replace=False)`` over
the sorted distinct uids on the driver (up to 20M of them); the same size, different uids.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.decisions import KEPT
from curate.params.sample import SampleParams
from curate.recipe.registry import StageContext, StageOutput, register
from curate.recipe.uid_tables import UidTable

NOT_SAMPLED = "not_sampled"
RANK_SHARD_ROWS = 1_000_000
RANKED = pa.schema([("hash", pa.int64()), ("uid", pa.string())])


def sample_size(n: int, fraction: float | None, count: int | None) -> int:
    return min(n, count if count is not None else int(round(n * fraction)))


def sample_hash(uids, seed: int) -> np.ndarray:
    """The draw's order: the first 64 bits of murmur3_x64_128(uid, seed), as non-negative int64
    (Spark has no unsigned type)."""
    import mmh3

    arr = uids.to_pylist() if hasattr(uids, "to_pylist") else list(uids)
    h = np.fromiter((mmh3.hash64(u, seed, signed=False)[0] for u in arr), np.uint64, count=len(arr))
    return (h >> np.uint64(1)).astype(np.int64)


def sample_uids(uids: pa.Array, fraction: float | None, count: int | None, seed: int) -> pa.Array:
    """The draw for an array the caller holds (the demo's random baseline; the same uids as
    the stage): the ``k`` distinct uids of smallest (hash, uid), sorted by uid."""
    import pyarrow.compute as pc

    distinct = pc.unique(uids.combine_chunks() if isinstance(uids, pa.ChunkedArray) else uids).cast(pa.string())
    k = sample_size(len(distinct), fraction, count)
    t = pa.table([pa.array(sample_hash(distinct, seed)), distinct], schema=RANKED)
    t = t.sort_by([("hash", "ascending"), ("uid", "ascending")]).slice(0, k)
    return t.column("uid").take(pc.array_sort_indices(t.column("uid"))).combine_chunks()


def _hashed(seed: int):
    def fn(batch: pa.RecordBatch) -> pa.Table:
        uids = batch.column("uid")
        return pa.table([pa.array(sample_hash(uids, seed)), uids], schema=RANKED)

    return fn


def _decide(task: dict):
    """One ranked shard's decisions: kept when the row's rank is below k."""
    from curate.decisions import decisions_table
    from curate.storage import read_parquet

    uids = read_parquet(task["path"], columns=["uid"]).column("uid").combine_chunks()
    kept = pa.array(task["start"] + np.arange(len(uids)) < task["k"])
    reason = pa.array(np.where(kept.to_numpy(zero_copy_only=False), KEPT, NOT_SAMPLED), pa.string())
    yield from decisions_table(uids, task["stage"], kept, reason).to_batches()


@register("sample", SampleParams, family="sample", frames=True, version="2")
def run_sample(ctx: StageContext, inp: UidTable, p: SampleParams) -> StageOutput:
    """Keep a seeded uniform random sample (fraction or count) of the current subset."""
    from curate import storage
    from curate.selection import DECISIONS, DECISIONS_SHARD_ROWS

    ds, ex = ctx.dataset, ctx.executor()
    k = sample_size(inp.distinct, p.fraction, p.count)
    tmp, out = f"_tmp/{ctx.run_name}/ranked", f"decisions/{ctx.run_name}"
    try:
        inp.frame(ds, ex).distinct().map_batches(_hashed(p.seed), RANKED).write_sorted(
            ds, tmp, RANKED, ["hash", "uid"], RANK_SHARD_ROWS)
        paths = [str(x) for x in ds.shards(tmp)]
        rows = [storage.parquet_file(x).metadata.num_rows for x in paths]  # footers: the ranks' offsets
        tasks = [dict(path=x, start=int(sum(rows[:i])), k=k, stage=ctx.stage_name) for i, x in enumerate(paths)]
        ex.frame_from_tasks(tasks, _decide, DECISIONS).write_sorted(ds, out, "decisions", ["uid", "stage"],
                                                                    DECISIONS_SHARD_ROWS)
    finally:
        storage.remove_tree(str(ds.table_dir(tmp)))
    return StageOutput(out, stats={"sampled": k, "distinct_input": inp.distinct})
