"""``curate dedup perceptual``: images within a Hamming radius of each other's perceptual hash.

1. **Hash** (``curate.perceptual.hashes``): one task per image shard writes ``phashes/`` and
   ``phash_failures/`` for shards not hashed yet (resumable per shard).
2. **Candidate pairs** (``curate.perceptual.groups``): one task per ``phashes`` shard emits
   each row's bucket entries (bands of the hash, multi-index hashing); the executor's grouped
   apply sends each bucket whole to one worker, which returns the bucket's local components
   as (uid, smallest uid) links, only for rows that have a partner within the radius.
3. **Components**: the links (kept by the engine as a frame, both directions as (uid, dst)
   edges) go to ``components.component_labels`` (min-label propagation in the engine; no node
   list on the driver): groups are the connected components of "within ``radius``" (single
   linkage: a chain a~b~c is one group even when a and c are farther apart).
4. **Survivors**: the labelled rows joined with their hash (``phashes``) and CLIP score (the
   embeddings table, when there is one), then a grouped apply per component keeps one per
   group: highest CLIP score, then smallest uid (no score = ranked last). Removed rows get
   ``perceptual_duplicate`` with the Hamming distance to the survivor as ``value`` and the
   survivor's uid as ``detail``; the survivor gets value 0 and its own uid.
5. Every other hashed row is kept (an anti-join, value empty); rows whose image could not be
   decoded get ``undecodable_image`` (``detail`` = the error class), input uids with neither
   (not downloaded, not hashed) ``no_phash`` (an anti-join of the restriction). The decisions
   stay a frame: ``selection.finish_selection`` writes decisions, the kept subset and the
   manifest. The guards are small aggregates: the histogram of removed rows' distances (one
   row per distance) and the largest group's size (one row).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.decisions import decisions_table
from curate.embedding_space.common import input_record, restricted_frame, shard_tasks, uid_frame, write_uid_filter
from curate.embedding_space.components import EDGES
from curate.engine import LocalExecutor
from curate.engine.frame import HISTOGRAM_SCHEMA
from curate.errors import DatasetError
from curate.manifest import RunManifest
from curate.perceptual import groups as G
from curate.perceptual.hashes import FAILURES, HASH_BITS, HASH_KINDS, HASHES, check_hashes, run_hashes
from curate.tables import Dataset

REASON = "perceptual_duplicate"
UNDECODABLE = "undecodable_image"
NO_PHASH = "no_phash"
STAGE = "perceptual_dedup"
DEFAULT_RADIUS = 8
# a group holding more than this share of the input (and MIN_SUSPECT_GROUP rows) is suspicious:
# placeholder images ("image not available"), blank frames, or a radius too large for the hash
MAX_GROUP_FRACTION = 0.01
MIN_SUSPECT_GROUP = 50

_MEMBER_ROWS = pa.schema([("uid", pa.string()), ("hash", pa.int64()), ("score", pa.float64())])
_SIZES = pa.schema([("one", pa.int32()), ("n", pa.int64())])


def check_perceptual_dedup(ds: Dataset, radius: int, hash_kind: str = "phash", bands: int | None = None,
                           embeddings: str | None = None) -> str | None:
    """Every argument checked before any engine starts; returns the embeddings table whose CLIP
    score picks survivors (None: smallest uid)."""
    if hash_kind not in HASH_KINDS:
        raise DatasetError(f"--hash must be one of {', '.join(HASH_KINDS)}, got {hash_kind!r}")
    G.band_plan(HASH_BITS[hash_kind], radius, bands)
    check_hashes(ds)
    return scores_table(ds, embeddings)


def scores_table(ds: Dataset, embeddings: str | None) -> str | None:
    """The embeddings table named (resolved as every command does), else the only one, else
    none; several and none named is an error listing them."""
    from curate.models.resolve import embeddings_ids, resolve_embeddings

    if embeddings is None and not embeddings_ids(ds):
        return None
    return f"embeddings/{resolve_embeddings(ds, embeddings)}"


# ---------------------------------------------------------------- task functions
def _hash_column(t: pa.Table, kind: str) -> np.ndarray:
    return t.column(kind).to_numpy().astype(np.uint64)


_HASH_ROWS = pa.schema([("uid", pa.string()), ("hash", pa.int64())])


def _hash_rows(task: dict):
    """One hashes shard's (uid, hash as the int64 of its 64 bits)."""
    t = storage.read_parquet(task["path"], columns=["uid", task["hash"]])
    if t.num_rows:
        h = pa.array(_hash_column(t, task["hash"]).view(np.int64))
        yield pa.record_batch([t.column("uid").combine_chunks(), h], schema=_HASH_ROWS)


def _bucket_entries(plan: list, s: int, parts: int):
    """(uid, hash) rows -> their bucket entries (``groups.bucket_entries``)."""
    def entries(batch: pa.RecordBatch) -> pa.Table:
        uids = batch.column("uid")
        h = batch.column("hash").to_numpy(zero_copy_only=False).view(np.uint64)
        return pa.Table.from_batches([G.bucket_entries(uids, h, plan, s, parts)])

    return entries


def _bucket_rows(task: dict):
    for batch in _hash_rows(task):
        yield from _bucket_entries(task["plan"], task["s"], task["parts"])(batch).to_batches()


def _link_edges(batch: pa.RecordBatch) -> pa.Table:
    """Each link (uid, root of its bucket-local component) as edges in both directions."""
    u, r = batch.column("uid"), batch.column("root")
    return pa.table({"uid": pa.concat_arrays([u, r]), "dst": pa.concat_arrays([r, u])}, schema=EDGES)


def _member_rows(task: dict):
    """One shard's rows with a hash (a phashes shard) or a CLIP score (an embeddings shard)."""
    cols = ["uid", task["hash"]] if task["kind"] == "hashes" else ["uid", "clip_score"]
    t = storage.read_parquet(task["path"], columns=cols)  # joined with the groups' labels: restricted by them
    n = t.num_rows
    if not n:
        return
    if task["kind"] == "hashes":
        h, sc = pa.array(_hash_column(t, task["hash"]).view(np.int64)), pa.nulls(n, pa.float64())
    else:
        h, sc = pa.nulls(n, pa.int64()), t.column("clip_score").cast(pa.float64())
    yield pa.table({"uid": t.column("uid"), "hash": h, "score": sc}, schema=_MEMBER_ROWS).combine_chunks().to_batches()[0]


def _failed(task: dict):
    t = storage.read_parquet(task["path"], columns=["uid", "error_class"])
    if t.num_rows:
        yield from decisions_table(t.column("uid"), task["stage"], [False] * t.num_rows, [UNDECODABLE] * t.num_rows,
                                   None, t.column("error_class")).to_batches()


def _removed_distances(batch: pa.RecordBatch) -> pa.Table:
    """Partial histogram (bin = Hamming distance) of one batch's removed group rows."""
    t = pa.Table.from_batches([batch]).filter(pc.invert(batch.column("kept")))
    d = np.bincount(t.column("value").to_numpy(zero_copy_only=False).astype(np.int64)) if t.num_rows else np.zeros(0)
    nz = np.flatnonzero(d)
    return pa.table([pa.array(nz.astype(np.int32)), pa.array(d[nz].astype(np.int64))], schema=HISTOGRAM_SCHEMA)


def _one_key(batch: pa.RecordBatch) -> pa.Table:
    return pa.table({"one": pa.array(np.zeros(batch.num_rows, np.int32)), "n": batch.column("n")}, schema=_SIZES)


def group_decisions(rows: pa.Table, stage: str = STAGE) -> pa.Table:
    """Components' decisions (rows of one or several components, ``label`` naming each):
    survivor by highest score, then smallest uid; the others removed with their Hamming
    distance to it. Vectorised over components (``group_apply_many``)."""
    from curate.engine.frame import first_of_runs

    # a uid arrives once with its hash and, when it has an embedding, once with its score
    t = rows.group_by(["label", "uid"], use_threads=False).aggregate([("hash", "max"), ("score", "max")])
    s = t.column("score_max").cast(pa.float64())
    s = pc.if_else(pc.is_nan(s), pa.scalar(None, pa.float64()), s)  # NaN ranks as no score
    # the survivor first in each component: scored rows first, highest score, then smallest uid
    t = t.append_column("_neg_score", pc.negate(s)).sort_by(
        [("label", "ascending"), ("_neg_score", "ascending"), ("uid", "ascending")])
    best = first_of_runs(t.column("label"))
    h = t.column("hash_max").to_numpy().view(np.uint64)
    dist = G.popcount(h ^ h[best])
    kept = np.arange(t.num_rows) == best
    u = t.column("uid").combine_chunks()
    return decisions_table(u, stage, pa.array(kept), pa.array(np.where(kept, "kept", REASON)),
                           pa.array(dist.astype(np.float64)), u.take(pa.array(best)))


# ---------------------------------------------------------------- the job
def run_perceptual_dedup(dataset, radius: int = DEFAULT_RADIUS, hash_kind: str = "phash", run: str = "perceptual_dedup",
                         bands: int | None = None, embeddings: str | None = None, input_uids=None, executor=None,
                         output: str | None = None, stage: str = STAGE) -> dict:
    from curate.embedding_space.common import cleanup_tmp
    from curate.embedding_space.components import component_labels
    from curate.selection import finish_selection

    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    executor = executor or LocalExecutor()
    score_table = check_perceptual_dedup(ds, radius, hash_kind, bands, embeddings)
    plan, s = G.band_plan(HASH_BITS[hash_kind], radius, bands)
    m = RunManifest(run, dict(stage=stage, hash=hash_kind, radius=radius, bands=len(plan), band_radius=s,
                              scores=score_table, restricted=input_uids is not None,
                              input_subset=input_record(input_uids), engine=executor.name))
    with m.stage("hash"):
        hstats = run_hashes(ds, executor)
    if not ds.has_table(HASHES):
        raise DatasetError(f"{ds.root}: no {HASHES} table after hashing")
    m["inputs"] = [{"table": HASHES, "rows": ds.count(HASHES)}, {"table": FAILURES, "rows": _rows(ds, FAILURES)}]
    uid_filter = write_uid_filter(ds, run, input_uids)
    # --subset: semi-joins in the engine (each task loaded the whole uid list before)
    uids = uid_frame(executor, uid_filter)
    base = dict(hash=hash_kind, stage=stage)
    # the hashed rows of the input: read by the tasks when every row is in, else joined and kept
    hashed = (restricted_frame(executor, shard_tasks(ds, HASHES, **base), _hash_rows, _HASH_ROWS, uids).cache()
              if uids is not None else None)
    with m.stage("candidates"):
        parts = G.partitions(ds.count(HASHES), plan, s)
        if hashed is None:
            rows = executor.frame_from_tasks(shard_tasks(ds, HASHES, plan=[list(p) for p in plan], s=s, parts=parts,
                                                         **base), _bucket_rows, G.BUCKET_ROWS)
        else:
            rows = hashed.map_batches(_bucket_entries([list(p) for p in plan], s, parts), G.BUCKET_ROWS)
        links = rows.group_apply("part", lambda g: G.bucket_links(g, radius), G.LINKS).cache()
        n_links = links.count()
    with m.stage("components"):
        labels, rounds = component_labels(links.map_batches(_link_edges, EDGES))
    with m.stage("survivors"):
        groups, bins, sizes = _survivors(executor, ds, labels, score_table, base, HASH_BITS[hash_kind])
    dec = _all_decisions(executor, ds, groups, base, uids, hashed)
    largest = int(sizes.column("largest")[0].as_py()) if sizes.num_rows else 0
    n_groups = int(sizes.column("groups")[0].as_py()) if sizes.num_rows else 0
    try:
        guards = _guards(dec, bins, largest, radius, hash_kind)
        extra = {"groups_with_duplicates": n_groups, "largest_group": largest, "links": int(n_links),
                 "bucket_partitions": parts, "component_rounds": rounds, "hash": hstats}
        return finish_selection(executor, ds, run, stage, dec, m, output, extra, guards=guards,
                                cleanup=lambda: cleanup_tmp(ds, run))
    finally:
        for frame in (groups, links, hashed):
            if frame is not None:
                frame.release()


def _survivors(executor, ds: Dataset, labels, score_table: str | None, base: dict, bits: int):
    """The grouped rows' decisions (a cached frame: the caller releases it), the histogram of
    removed rows' distances to their survivor, and the largest group's size with the number
    of groups (one row)."""
    from curate.selection import DECISIONS

    stage = base["stage"]
    mtasks = shard_tasks(ds, HASHES, kind="hashes", **base)
    if score_table:
        mtasks += shard_tasks(ds, score_table, kind="scores", **base)
    members = labels.join(executor.frame_from_tasks(mtasks, _member_rows, _MEMBER_ROWS), "uid")
    groups = members.group_apply_many("label", lambda g: group_decisions(g, stage), DECISIONS).cache()
    # guards: distances acted on (removed rows to their survivor) and a suspiciously large group
    bins = (groups.map_batches(_removed_distances, HISTOGRAM_SCHEMA).aggregate(["bin"], {"n": ("n", "sum")})
            .collect_small(bits + 1))
    sizes = (groups.aggregate(["detail"], {"n": ("uid", "count")}).map_batches(_one_key, _SIZES)
             .aggregate(["one"], {"largest": ("n", "max"), "groups": ("n", "count")}).collect_small(1))
    return groups, bins, sizes


def _all_decisions(executor, ds: Dataset, groups, base: dict, uids, hashed):
    """Every input uid's decision: the grouped rows', every other hashed row kept, undecodable
    images, and input uids neither hashed nor failed (not downloaded, or not hashed). ``uids``:
    the restriction's frame (None: every row), ``hashed`` its hashed rows."""
    from curate.embedding_space.common import UID_SCHEMA
    from curate.embedding_space.jobs.shared import with_missing
    from curate.selection import DECISIONS, uniform_decisions

    stage = base["stage"]
    if hashed is None:
        hashed = executor.frame_read([str(p) for p in ds.shards(HASHES)], UID_SCHEMA)
    dec = groups.union(uniform_decisions(hashed.anti_join(groups), stage, True, "kept"))
    if ds.has_table(FAILURES):
        dec = dec.union(restricted_frame(executor, shard_tasks(ds, FAILURES, **base), _failed, DECISIONS, uids))
    miss = None
    if uids is not None:
        present = executor.frame_read([str(p) for t in (HASHES, FAILURES) if ds.has_table(t) for p in ds.shards(t)],
                                      UID_SCHEMA)
        from curate.embedding_space.jobs.shared import absent_decisions

        miss = absent_decisions(executor, ds, uids.anti_join(present), stage, NO_PHASH)
    return with_missing(dec, miss)


def _guards(dec, bins: pa.Table, largest: int, radius: int, hash_kind: str) -> tuple[dict, list[str]]:
    """The removed rows' Hamming distances, and a warning when one group holds too much of the input."""
    hist = dict(zip(bins.column("bin").to_pylist(), bins.column("n").to_pylist()))
    warns = []
    if largest >= MIN_SUSPECT_GROUP:
        n = dec.count()
        if largest > MAX_GROUP_FRACTION * n:
            warns.append(f"the largest perceptual group holds {largest} of {n} samples "
                         f"({largest / n:.1%}): placeholder or blank images, or --radius {radius} too large "
                         f"for {hash_kind}?")
    dists = {"hamming_to_survivor": {"what": f"Hamming distance ({hash_kind}) of each removed sample to its survivor",
                                     "n": int(sum(hist.values())),
                                     "counts": {str(k): int(hist[k]) for k in sorted(hist)}}}
    return dists, warns


def _rows(ds: Dataset, table: str) -> int:
    return ds.count(table) if ds.has_table(table) else 0
