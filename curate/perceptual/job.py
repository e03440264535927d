"""``curate dedup perceptual``: images within a Hamming radius of each other's perceptual hash.

1. **Hash** (``curate.perceptual.hashes``): one task per image shard writes ``phashes/`` and
   ``phash_failures/`` for shards not hashed yet (resumable per shard).
2. **Candidate pairs** (``curate.perceptual.groups``): one task per ``phashes`` shard emits
   each row's bucket entries (bands of the hash, multi-index hashing); the executor's grouped
   apply sends each bucket whole to one worker, which returns the bucket's local components
   as (uid, smallest uid) links, only for rows that have a partner within the radius.
3. **Components**: the links are joined on the driver (vectorised union-find, bounded by the
   rows that have a duplicate, a few links each; never by the pool size): groups are the
   connected components of "within ``radius``" (single linkage: a chain a~b~c is one group
   even when a and c are farther apart).
4. **Survivors**: a grouped apply by component over the duplicate rows (hash from
   ``phashes``, CLIP score from the embeddings table when there is one) keeps one per group:
   highest CLIP score, then smallest uid (no score = ranked last). Removed rows get
   ``perceptual_duplicate`` with the Hamming distance to the survivor as ``value`` and the
   survivor's uid as ``detail``; the survivor gets value 0 and its own uid.
5. Every other hashed row is kept (value empty); rows whose image could not be decoded get
   ``undecodable_image`` (``detail`` = the error class), input uids with neither
   (not downloaded, not hashed) ``no_phash``. The selection finish of the embedding-space jobs
   writes decisions, the kept subset and the manifest.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate import storage
from curate.decisions import decisions_table
from curate.embedding_space.common import read_uid_filter, restrict, shard_tasks, write_uid_filter
from curate.engine import LocalExecutor, worker_cache
from curate.errors import DatasetError
from curate.manifest import RunManifest
from curate.perceptual import groups as G
from curate.perceptual.hashes import FAILURES, HASH_BITS, HASH_KINDS, HASHES, check_hashes, run_hashes
from curate.tables import Dataset, write_parquet_atomic

REASON = "perceptual_duplicate"
UNDECODABLE = "undecodable_image"
NO_PHASH = "no_phash"
STAGE = "perceptual_dedup"
DEFAULT_RADIUS = 8
# a group holding more than this share of the input (and MIN_SUSPECT_GROUP rows) is suspicious:
# placeholder images ("image not available"), blank frames, or a radius too large for the hash
MAX_GROUP_FRACTION = 0.01
MIN_SUSPECT_GROUP = 50

_MEMBER_ROWS = pa.schema([("component", pa.int64()), ("uid", pa.string()), ("hash", pa.int64()),
                          ("score", pa.float64())])


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
def _component_lookup(path: str | None):
    if not path:
        return None
    return worker_cache(("perceptual_components", *storage.fingerprint(path)), lambda: storage.read_parquet(path))


def _hash_column(t: pa.Table, kind: str) -> np.ndarray:
    return t.column(kind).to_numpy().astype(np.uint64)


def _bucket_rows(task: dict):
    t = restrict(storage.read_parquet(task["path"], columns=["uid", task["hash"]]), read_uid_filter(task.get("uid_filter")))
    if t.num_rows:
        yield G.bucket_entries(t.column("uid").combine_chunks(), _hash_column(t, task["hash"]), task["plan"], task["s"],
                               task["parts"])


def _member_rows(task: dict):
    """Duplicate rows of one shard with their component: hashes from a phashes shard, or
    CLIP scores from an embeddings shard."""
    look = _component_lookup(task["components"])
    cols = ["uid", task["hash"]] if task["kind"] == "hashes" else ["uid", "clip_score"]
    t = restrict(storage.read_parquet(task["path"], columns=cols), read_uid_filter(task.get("uid_filter")))
    pos = pc.index_in(t.column("uid"), value_set=look.column("uid"))
    t = t.filter(pc.is_valid(pos))
    if not t.num_rows:
        return
    comp = look.column("component").take(pos.drop_null())
    n = t.num_rows
    if task["kind"] == "hashes":
        h, sc = pa.array(_hash_column(t, task["hash"]).view(np.int64)), pa.nulls(n, pa.float64())
    else:
        h, sc = pa.nulls(n, pa.int64()), t.column("clip_score").cast(pa.float64())
    yield pa.table({"component": comp, "uid": t.column("uid"), "hash": h, "score": sc},
                   schema=_MEMBER_ROWS).combine_chunks().to_batches()[0]


def _singles(task: dict):
    """Decisions of the hashed rows of one shard that are in no group: kept."""
    look = _component_lookup(task["components"])
    t = restrict(storage.read_parquet(task["path"], columns=["uid"]), read_uid_filter(task.get("uid_filter")))
    if look is not None:
        t = t.filter(pc.invert(pc.is_in(t.column("uid"), value_set=look.column("uid"))))
    if t.num_rows:
        yield from decisions_table(t.column("uid"), task["stage"], [True] * t.num_rows,
                                   ["kept"] * t.num_rows).to_batches()


def _failed(task: dict):
    t = restrict(storage.read_parquet(task["path"], columns=["uid", "error_class"]), read_uid_filter(task.get("uid_filter")))
    if t.num_rows:
        yield from decisions_table(t.column("uid"), task["stage"], [False] * t.num_rows, [UNDECODABLE] * t.num_rows,
                                   None, t.column("error_class")).to_batches()


def group_decisions(group: pa.Table, stage: str = STAGE) -> pa.Table:
    """One component's decisions: survivor by highest score, then smallest uid; the others
    removed with their Hamming distance to it."""
    # a uid arrives once with its hash and, when it has an embedding, once with its score
    t = group.group_by("uid").aggregate([("hash", "max"), ("score", "max")]).sort_by("uid")
    u = np.asarray(t.column("uid").to_pylist(), dtype=object)
    h = t.column("hash_max").to_numpy().view(np.uint64)
    sc = t.column("score_max").to_numpy(zero_copy_only=False).astype(np.float64)  # null -> NaN
    rank = G.survivor_order(u, sc)
    best = rank[0]
    dist = G.popcount(h ^ h[best])
    kept = np.arange(len(u)) == best
    return decisions_table(u.tolist(), stage, kept.tolist(), np.where(kept, "kept", REASON).tolist(),
                           dist.astype(np.float64).tolist(), [u[best]] * len(u))


# ---------------------------------------------------------------- the job
def run_perceptual_dedup(dataset, radius: int = DEFAULT_RADIUS, hash_kind: str = "phash", run: str = "perceptual_dedup",
                         bands: int | None = None, embeddings: str | None = None, input_uids=None, executor=None,
                         output: str | None = None, stage: str = STAGE) -> dict:
    from curate.embedding_space import guards as _guards
    from curate.embedding_space.common import collect_rows, grouped_apply
    from curate.embedding_space.jobs import DECISIONS, _concat_decisions, _finish

    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    executor = executor or LocalExecutor()
    score_table = check_perceptual_dedup(ds, radius, hash_kind, bands, embeddings)
    plan, s = G.band_plan(HASH_BITS[hash_kind], radius, bands)
    m = RunManifest(run, dict(stage=stage, hash=hash_kind, radius=radius, bands=len(plan), band_radius=s,
                              scores=score_table, restricted=input_uids is not None, engine=executor.name))
    with m.stage("hash"):
        hstats = run_hashes(ds, executor)
    if not ds.has_table(HASHES):
        raise DatasetError(f"{ds.root}: no {HASHES} table after hashing")
    m["inputs"] = [{"table": HASHES, "rows": ds.count(HASHES)}, {"table": FAILURES, "rows": _rows(ds, FAILURES)}]
    uid_filter = write_uid_filter(ds, run, input_uids)
    base = dict(hash=hash_kind, uid_filter=uid_filter, stage=stage)
    with m.stage("candidates"):
        parts = G.partitions(ds.count(HASHES), plan, s)
        tasks = shard_tasks(ds, HASHES, plan=[list(p) for p in plan], s=s, parts=parts, **base)
        links = grouped_apply(executor, tasks, _bucket_rows, G.BUCKET_ROWS, "part",
                              lambda g: G.bucket_links(g, radius), G.LINKS)
    with m.stage("components"):
        nodes, labels = G.merge_links(links)
        comp_path = None
        if len(nodes):
            comp_path = str(ds.path(f"_tmp/{run}/components.parquet"))
            write_parquet_atomic(pa.table({"uid": pa.array(nodes.tolist(), pa.string()),
                                           "component": pa.array(labels, pa.int64())}), comp_path)
    with m.stage("survivors"):
        dec_groups = DECISIONS.empty_table()
        if comp_path:
            mtasks = shard_tasks(ds, HASHES, kind="hashes", components=comp_path, **base)
            if score_table:
                mtasks += shard_tasks(ds, score_table, kind="scores", components=comp_path, **base)
            dec_groups = grouped_apply(executor, mtasks, _member_rows, _MEMBER_ROWS, "component",
                                       lambda g: group_decisions(g, stage), DECISIONS)
        singles = collect_rows(executor, shard_tasks(ds, HASHES, components=comp_path, **base), _singles, DECISIONS)
        failed = (collect_rows(executor, shard_tasks(ds, FAILURES, **base), _failed, DECISIONS)
                  if ds.has_table(FAILURES) else DECISIONS.empty_table())
    missing = _missing(ds, input_uids, stage)
    dec = _concat_decisions(dec_groups, singles, failed, missing)
    # guards: distances acted on (removed rows to their survivor) and a suspiciously large group
    removed = dec_groups.filter(pc.invert(dec_groups.column("kept")))
    dist = removed.column("value").to_numpy(zero_copy_only=False).astype(np.int64) if removed.num_rows else np.zeros(0, np.int64)
    sizes = (pc.value_counts(dec_groups.column("detail").combine_chunks()).field("counts").to_numpy()
             if dec_groups.num_rows else np.zeros(0, np.int64))
    largest = int(sizes.max()) if len(sizes) else 0
    warns = []
    if dec.num_rows and largest >= MIN_SUSPECT_GROUP and largest > MAX_GROUP_FRACTION * dec.num_rows:
        warns.append(f"the largest perceptual group holds {largest} of {dec.num_rows} samples "
                     f"({largest / dec.num_rows:.1%}): placeholder or blank images, or --radius {radius} too large "
                     f"for {hash_kind}?")
    dists = {"hamming_to_survivor": {"what": f"Hamming distance ({hash_kind}) of each removed sample to its survivor",
                                     "n": int(len(dist)),
                                     "counts": {str(k): int(v) for k, v in enumerate(np.bincount(dist)) if v}}}
    extra = {"groups_with_duplicates": int(len(sizes)), "largest_group": largest, "links": int(links.num_rows),
             "bucket_partitions": parts,
             "hash": hstats}
    return _finish(ds, run, stage, dec, m, output, extra, guards=(dists, warns))


def _rows(ds: Dataset, table: str) -> int:
    return ds.count(table) if ds.has_table(table) else 0


def _missing(ds: Dataset, input_uids, stage: str) -> pa.Table:
    """Input uids neither hashed nor failed (not downloaded, or not hashed): ``no_phash``."""
    from curate.embedding_space.common import UidList, missing_uids, read_uid_filter

    if input_uids is None:
        return decisions_table([], stage, [], [])
    present = [storage.read_parquet(p, columns=["uid"]).column("uid").combine_chunks()
               for t in (HASHES, FAILURES) if ds.has_table(t) for p in ds.shards(t)]
    if isinstance(input_uids, UidList):  # a uid table (file or folder of shards), e.g. a recipe's
        input_uids = read_uid_filter(input_uids.path)
    miss = missing_uids(pa.array(input_uids, pa.string()) if not isinstance(input_uids, (pa.Array, pa.ChunkedArray))
                        else input_uids.cast(pa.string()),
                        pa.concat_arrays(present) if present else pa.array([], pa.string()))
    return decisions_table(miss, stage, [False] * len(miss), [NO_PHASH] * len(miss))
