"""No per-row data on the driver: what the selection jobs get back through the executor
interface (``executor.driver_counter``: rows of summaries, counts, task results, written-shard
records) is bounded by reasons, shards and clusters, and does not grow with the pool."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from curate.embedding_space.clusters import run_cluster
from curate.embedding_space.common import UidList
from curate.embedding_space.guards import PAIR_SAMPLE
from curate.embedding_space.jobs import run_decontaminate, run_exact_dedup, run_near_dedup, run_prune, run_semdedup
from curate.reshard import reshard
from curate.subset import write_subset
from curate.engine import LocalExecutor
from curate.engine.frame import TooManyRows
from curate.tables import Dataset, load_schema

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from embedding_space.helpers import clustered_embeddings, sample_on_the_driver, uid, write_embeddings  # noqa: E402
from reshard.conftest import build_download_shards  # noqa: E402

K = 4
SHARD_ROWS = 500
# the guards' embedding sample (guard_sample.py): its vectors and a count per pass, whatever the pool
GUARD = PAIR_SAMPLE + 4


def _pool(root: Path, n: int) -> Dataset:
    ds = Dataset(root)
    import hashlib

    # uids that hash evenly: the helpers' uids all hash alike, which sends k-means sampling to
    # its take-everything retry (every restricted row back through the engine)
    even = [hashlib.md5(str(i).encode()).hexdigest() for i in range(n)]
    uids = write_embeddings(ds, "m", clustered_embeddings(n=n, d=16, centers=K, seed=7), uids=even,
                            rows_per_shard=SHARD_ROWS)
    sha = [f"{i % (n // 3):08x}" if i % 11 else None for i in range(n)]  # about 3 copies of every image
    dl = pa.table({
        "uid": uids, "status": ["failed" if i % 13 == 4 else "success" for i in range(n)],
        "error_class": pa.nulls(n, pa.string()), "error_message": pa.nulls(n, pa.string()), "sha256": sha,
        "width": pa.array([8] * n, pa.int32()), "height": pa.array([8] * n, pa.int32()),
        "original_width": pa.array([8] * n, pa.int32()), "original_height": pa.array([8] * n, pa.int32()),
        "shard": pa.nulls(n, pa.string()), "key": pa.nulls(n, pa.string()), "attempts": pa.array([1] * n, pa.int32())},
        schema=load_schema("downloads").arrow())
    ds.write_table("downloads", dl.sort_by("uid"), schema="downloads", rows_per_shard=SHARD_ROWS)
    run_cluster(ds, "m", K, name="km", executor=LocalExecutor())  # k-means: not under test here
    emb = ds.read("embeddings/m").slice(0, 5).select(["uid", "image_embedding"])
    ds.write_table("eval_set", emb)
    return ds


def _driver_rows(ds: Dataset, job) -> tuple[int, dict]:
    ex = LocalExecutor()
    r = job(ds, ex)
    assert r["counts"]["input"] > 0
    return ex.driver_counter.driver_rows, dict(ex.driver_counter.by_call)


JOBS = {
    "semdedup": lambda ds, ex: run_semdedup(ds, "km", 0.05, executor=ex),
    "dbp": lambda ds, ex: run_prune(ds, "km", 0.5, executor=ex, input_uids=UidList(ds.root / "subsets/semdedup/uids.parquet")),
    "exact": lambda ds, ex: run_exact_dedup(ds, executor=ex, input_uids=UidList(ds.root / "subsets/semdedup/uids.parquet")),
    "decontaminate": lambda ds, ex: run_decontaminate(ds, "m", "eval_set", 0.99, executor=ex),
}


@pytest.mark.parametrize("job", list(JOBS))
def test_the_driver_gets_summaries_not_rows(tmp_path, job):
    small, large = _pool(tmp_path / "small", 1500), _pool(tmp_path / "large", 6000)
    if job in ("dbp", "exact"):
        for ds in (small, large):
            JOBS["semdedup"](ds, LocalExecutor())
    rows_small, calls_small = _driver_rows(small, JOBS[job])
    rows_large, calls_large = _driver_rows(large, JOBS[job])
    shards = len(large.shards("embeddings/m"))
    reasons = len(large.read(f"decisions/{'exact_dedup' if job == 'exact' else job}", columns=["reason"])
                  .column("reason").unique())
    # per-(cluster, kept) sums, per-(reason, kept) counts, histogram bins, eval images, shard records
    bound = 2 * K + 2 * reasons + 2 * shards + 5 + 2000
    assert rows_large <= bound, (calls_large, bound)
    # 4x the rows: the driver sees a bounded number of summary rows, nowhere near one per row
    assert rows_large < 6000 // 2, (calls_small, calls_large)
    # and the outputs are complete: every input row has its decision
    dec = large.read(f"decisions/{'exact_dedup' if job == 'exact' else job}")
    assert dec.num_rows == r_input(large, job)


def r_input(ds: Dataset, job: str) -> int:
    if job in ("dbp", "exact"):
        return ds.count("subsets/semdedup")
    return ds.count("embeddings/m")


def test_collect_small_refuses_per_row_results():
    ex = LocalExecutor()
    frame = ex.frame_from_table(pa.table({"uid": [uid(i) for i in range(100)]}))
    with pytest.raises(TooManyRows):
        frame.collect_small(99)
    assert frame.aggregate([], {"n": ("uid", "count")}).collect_small(1).column("n").to_pylist() == [100]
    assert ex.driver_counter.driver_rows == 1


@pytest.mark.slow
def test_spark_frames_match_local_frames(spark):
    """Every frame operation gives the same rows on Spark as in this process."""
    from curate.engine.spark import SparkExecutor

    t = pa.table({"uid": [uid(i % 40) for i in range(120)], "g": pa.array([i % 7 for i in range(120)], pa.int32()),
                  "v": pa.array(np.arange(120) / 8.0, pa.float64())})  # sums exact in any order
    keys = pa.table({"uid": [uid(i) for i in range(0, 40, 3)]})

    def ops(ex):
        f = ex.frame_from_table(t)
        k = ex.frame_from_table(keys)
        semi = f.semi_join(k).aggregate(["g"], {"n": ("uid", "count"), "s": ("v", "sum")})
        anti = f.anti_join(k).distinct().aggregate(["g"], {"n": ("uid", "count"), "m": ("v", "max")})
        grouped = f.group_apply("g", lambda grp: grp.sort_by("v").slice(0, 1), t.schema)
        doubled = f.map_batches(lambda b: pa.table({"uid": b.column("uid"), "g": b.column("g"),
                                                    "v": pc.multiply(b.column("v"), 2.0)}), t.schema)
        tagged = ex.frame_from_table(pa.table({"uid": keys.column("uid"), "tag": pa.array(range(keys.num_rows))}))
        left = f.join(tagged, "uid", how="left")  # rows without a key keep null tags
        inner = f.join(tagged, "uid")
        placed = f.partition_by("g").cache()
        regrouped = placed.group_apply("g", lambda grp: grp.sort_by("v").slice(0, 1), t.schema)
        summed = placed.aggregate(["g", "uid"], {"n": ("uid", "count")})
        # repeated and null keys: each row at most once, a null key matches nothing
        picked = f.keep_values("uid", pa.array([uid(3), uid(3), None, uid(39), "absent"]))
        tagged_rows = f.select(["uid"]).with_constant("tag", "t", pa.string()).with_constant("n", 7, pa.int16())
        return [x.collect_small(300, sort_by=cols) for x, cols in
                ((picked, ["uid", "v"]), (tagged_rows, ["uid"]), (semi, ["g"]), (anti, ["g"]), (grouped, ["g"]),
                 (doubled.union(f), ["uid", "v"]), (regrouped, ["g"]), (summed, ["g", "uid"]), (left, ["uid", "v"]),
                 (inner, ["uid", "v"]))]

    local, remote = ops(LocalExecutor()), ops(SparkExecutor(spark))
    for a, b in zip(local, remote, strict=True):
        assert a.equals(b), (a, b)
    assert sorted(local[0].column("uid").to_pylist()) == sorted([uid(3)] * 3 + [uid(39)] * 3)
    assert local[1].schema.field("n").type == pa.int16() and set(local[1].column("tag").to_pylist()) == {"t"}
    assert local[-2].num_rows == 120 and local[-2].column("tag").null_count == 120 - local[-1].num_rows > 0


@pytest.mark.slow
def test_group_apply_many_hands_whole_groups_to_few_calls(spark, monkeypatch):
    """``group_apply_many``: every group reaches its function whole, in calls holding many
    groups (here a 100,000-row group that spans Spark's Arrow batches, and 40,000 pairs):
    one first row per group, the same rows on Spark as in this process, and in-process far
    fewer calls than groups."""
    from curate.engine.frame import first_of_runs
    from curate.engine import frame
    from curate.engine.spark import SparkExecutor

    monkeypatch.setattr(frame, "MANY_GROUPS_ROWS", 30_000)  # in-process calls are cut between groups
    big, pairs = 100_000, 40_000
    g = np.r_[np.zeros(big, np.int64), 1 + np.repeat(np.arange(pairs), 2)]
    rng = np.random.default_rng(3)
    t = pa.table({"g": pa.array([f"{x:08d}" for x in g]), "v": pa.array(rng.permutation(len(g)), pa.int64())})
    calls = []

    def firsts(rows: pa.Table) -> pa.Table:  # the smallest v of each group, vectorised
        calls.append(rows.num_rows)
        rows = rows.sort_by([("g", "ascending"), ("v", "ascending")])
        first = first_of_runs(rows.column("g"))
        return rows.filter(pa.array(first == np.arange(rows.num_rows)))

    local = LocalExecutor().frame_from_table(t).group_apply_many("g", firsts, t.schema).collect_small(
        pairs + 1, sort_by=["g"])
    assert 1 < len(calls) < 10 and calls[0] == big  # whole groups in ~MANY_GROUPS_ROWS-row calls, not 40,001
    remote = SparkExecutor(spark).frame_from_table(t).group_apply_many("g", firsts, t.schema).collect_small(
        pairs + 1, sort_by=["g"])
    assert local.num_rows == pairs + 1 and local.equals(remote)
    want = pa.table({"g": t.column("g"), "v": t.column("v")}).group_by("g").aggregate([("v", "min")])
    got = dict(zip(local.column("g").to_pylist(), local.column("v").to_pylist()))
    assert dict(zip(*want.to_pydict().values())) == got


@pytest.mark.slow
def test_a_frame_partitioned_by_its_group_key_is_grouped_without_another_shuffle(spark):
    from curate.engine.spark import SparkExecutor

    t = pa.table({"uid": [uid(i) for i in range(50)], "g": pa.array([i % 4 for i in range(50)], pa.int32())})
    f = SparkExecutor(spark).frame_from_table(t)

    def exchanges(frame) -> int:  # shuffles of the plan outside the cached relation
        plan = frame.df._jdf.queryExecution().executedPlan().toString()
        return plan.split("InMemoryRelation")[0].count("Exchange")

    def first(grp):
        return grp.slice(0, 1)

    assert exchanges(f.cache().group_apply("g", first, t.schema)) == 1
    placed = f.partition_by("g").cache()
    assert exchanges(placed.group_apply("g", first, t.schema)) == 0
    assert exchanges(placed.select(["g", "uid"]).group_apply("g", first, t.schema)) == 0


def test_keep_values_is_for_a_few_keys():
    from curate.engine.frame import MAX_KEEP_VALUES

    f = LocalExecutor().frame_from_table(pa.table({"uid": [uid(i) for i in range(10)]}))
    assert f.keep_values("uid", pa.array([uid(i % 3) for i in range(MAX_KEEP_VALUES + 5)])).count() == 3
    with pytest.raises(ValueError, match="more than 1000 "):
        f.keep_values("uid", pa.array([uid(i) for i in range(MAX_KEEP_VALUES + 1)]))


@pytest.mark.slow
def test_keep_values_filters_where_the_table_is_read(spark, tmp_path):
    """On Spark the keys go with the plan: the Parquet scan is filtered, nothing is shuffled
    (a ``semi_join`` against a frame of the same keys moves the whole table by key)."""
    from curate.engine.spark import SparkExecutor

    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"uid": [uid(i) for i in range(100)], "v": pa.array(range(100), pa.int64())}), path)
    ex = SparkExecutor(spark)
    f = ex.frame_read([str(path)], pa.schema([("uid", pa.string()), ("v", pa.int64())]))
    kept = f.keep_values("uid", pa.array([uid(7), uid(70)]))
    assert "Exchange" not in kept.df._jdf.queryExecution().executedPlan().toString()
    assert "Exchange" in f.semi_join(ex.frame_from_table(pa.table({"uid": [uid(7)]}))).df._jdf.queryExecution(
        ).executedPlan().toString()
    assert kept.collect_small(2, sort_by=["v"]).column("v").to_pylist() == [7, 70]


@pytest.mark.slow
def test_on_spark_the_driver_gets_summaries_not_rows(tmp_path, spark):
    from curate.engine.spark import SparkExecutor

    ds = _pool(tmp_path / "pool", 3000)
    for job in ("semdedup", "exact"):  # decontaminate: test_on_spark_guard_jobs_hold_shards_plus_a_constant
        ex = SparkExecutor(spark)
        JOBS[job](ds, ex)
        shards = len(ds.shards("embeddings/m"))
        assert ex.driver_counter.driver_rows <= 2 * K + 20 + 2 * shards + 2000, (job, ex.driver_counter.by_call)
        assert ex.driver_counter.driver_rows < 3000 // 2, (job, ex.driver_counter.by_call)


# ---------------------------------------------------------------- the recipe runner
RECIPE = """\
name: drv
dataset: {root}
embedding_model: m
input: downloaded
output: curated
stages:
  - kind: cluster
    clusters: rk
    k: {k}
  - kind: semdedup
    clusters: km
    eps: 0.05
  - kind: prune
    clusters: km
    keep_fraction: 0.8
  - kind: exact_dedup
  - kind: decontaminate
    eval: eval_set
    threshold: 0.99
"""
RECIPE_STAGES = 5


def _run_recipe(ds: Dataset, ex, tmp: Path):
    from curate.recipe import load_recipe, run_recipe

    path = tmp / f"{ds.root.name}.yaml"
    path.write_text(RECIPE.format(root=ds.root, k=K))
    lineage = run_recipe(load_recipe(path), engine=ex.name, quiet=True, executor=ex, use_cache=False)
    return lineage


def _recipe_bound(ds: Dataset, lineage: dict) -> int:
    """What the runner and its jobs may bring back: per-stage reasons and checks, per-shard
    write records, per-cluster sums, the eval images and histogram bins, and the cluster stage's
    k-means training sample (restricted to the stage's input, it comes back through the engine
    and is counted: at most k x 256 rows, whatever the pool); never per row."""
    reasons = sum(len(s["reasons"]) for s in lineage["stages"])
    shards = len(ds.shards("embeddings/m")) + len(ds.shards("downloads"))
    return RECIPE_STAGES * (2 * K + 12 + 2 * shards) + 4 * reasons + 5 + 2000 + K * 256 + GUARD


def test_recipe_driver_gets_summaries_not_rows(tmp_path):
    """A recipe of converted stages on two pool sizes: the driver rows stay bounded by stages,
    reasons and shards (the legacy adapter, which counts its rows here, is not used)."""
    seen = {}
    for n in (1500, 6000):
        ds = _pool(tmp_path / f"p{n}", n)
        ex = LocalExecutor()
        lineage = _run_recipe(ds, ex, tmp_path)
        assert "legacy_stage_decisions" not in ex.driver_counter.by_call
        rows = ex.driver_counter.driver_rows
        assert rows <= _recipe_bound(ds, lineage), ex.driver_counter.by_call
        seen[n] = (rows, dict(ex.driver_counter.by_call))
        # complete: every stage decided every uid it got, the counts add up
        dec = ds.read("decisions/drv")
        assert dec.num_rows == sum(s["input_count"] for s in lineage["stages"])
        assert ds.count("subsets/curated") == lineage["output_count"] > 0
    assert seen[6000][0] < 6000 // 2, seen
    # the runner's own calls (counts, reason summaries, digests) do not grow with the pool
    assert seen[6000][1]["count"] == seen[1500][1]["count"], seen


def _job_chain(ds: Dataset, ex) -> str:
    """The recipe above as the CLI's chain of jobs, each on the previous one's subset."""
    from curate.embedding_space.clusters import run_cluster
    from curate.subset import write_subset

    dl = ds.read("downloads", columns=["uid", "status"])
    write_subset(ds, "chain-in", dl.filter(pc.equal(dl["status"], "success"))["uid"])
    prev = lambda name: UidList(ds.root / "subsets" / name / "uids.parquet")  # noqa: E731
    run_cluster(ds, "m", K, name="rk-chain", executor=ex, input_uids=prev("chain-in"))
    run_semdedup(ds, "km", 0.05, run="chain-semdedup", input_uids=prev("chain-in"), executor=ex)
    run_prune(ds, "km", 0.8, run="chain-prune", input_uids=prev("chain-semdedup"), executor=ex)
    run_exact_dedup(ds, run="chain-exact", input_uids=prev("chain-prune"), executor=ex)
    run_decontaminate(ds, "m", "eval_set", 0.99, run="chain-decon", input_uids=prev("chain-exact"), executor=ex)
    return "chain-decon"


def _same_subset(ds: Dataset, a: str, b: str) -> None:
    for f in ("uids.parquet", "uids.npy"):
        assert (ds.root / "subsets" / a / f).read_bytes() == (ds.root / "subsets" / b / f).read_bytes(), f


def test_recipe_output_is_the_job_chains_subset_byte_for_byte(tmp_path):
    ds = _pool(tmp_path / "pool", 1500)
    lineage = _run_recipe(ds, LocalExecutor(), tmp_path)
    _same_subset(ds, "curated", _job_chain(ds, LocalExecutor()))
    # and the recipe's decisions of each stage are the job's, row for row (stage name aside)
    dec = ds.read("decisions/drv")
    for stage, run in (("semdedup", "chain-semdedup"), ("prune", "chain-prune"), ("exact_dedup", "chain-exact"),
                       ("decontaminate", "chain-decon")):
        mine = dec.filter(pc.equal(dec["stage"], stage)).drop_columns(["stage"])
        theirs = ds.read(f"decisions/{run}").sort_by([("uid", "ascending")]).drop_columns(["stage"])
        assert mine.equals(theirs), stage
    assert {s["name"]: s["output_count"] for s in lineage["stages"]}["decontaminate"] == ds.count("subsets/chain-decon")


@pytest.mark.extended
def test_on_spark_the_recipe_driver_gets_summaries_not_rows(tmp_path, spark):
    """The same recipe on Spark: driver rows within the bound (stages, reasons and shards, not
    rows), and the output subset byte-identical to the local engine's. One pool size: that the
    runner's calls do not grow with the pool is the local test's (the runner is the same code;
    Spark's frame results are capped by ``collect_small``'s limits, which raise if exceeded)."""
    from curate.engine.spark import SparkExecutor

    n = 1500
    ds = _pool(tmp_path / f"p{n}", n)
    ex = SparkExecutor(spark)
    lineage = _run_recipe(ds, ex, tmp_path)
    assert ex.driver_counter.driver_rows <= _recipe_bound(ds, lineage), ex.driver_counter.by_call
    local = _pool(tmp_path / "local", n)
    local_ex = LocalExecutor()
    _run_recipe(local, local_ex, tmp_path)
    for f in ("uids.parquet", "uids.npy"):
        assert (ds.root / "subsets/curated" / f).read_bytes() == (local.root / "subsets/curated" / f).read_bytes()
    assert lineage["output_hash"] == _lineage_hash(local)
    # the same runner calls on both engines (counts, reason summaries, digests)
    assert ex.driver_counter.by_call["count"] == local_ex.driver_counter.by_call["count"]


def _lineage_hash(ds: Dataset) -> str:
    import json

    return json.loads((ds.root / "subsets/curated/_manifest.json").read_text())["lineage"]["output_hash"]


# ---------------------------------------------------------------- cluster --subset, near dedup, reshard
SAMPLE = 200  # k-means training rows: a fixed bound, whatever the pool


def _half(ds: Dataset) -> UidList:
    """A subset of every other row, as the engine reads it (its uids.parquet)."""
    uids = ds.read("embeddings/m", columns=["uid"]).column("uid").to_pylist()
    return UidList(write_subset(ds, "half", uids[::2]) / "uids.parquet")


def _reshard_pool(root: Path, n: int) -> Dataset:
    ds = Dataset(root)
    uids = build_download_shards(ds, n=n, per_shard=50, failed=tuple(range(3, n, 17)))
    write_subset(ds, "pick", uids[::3] + uids + ["0" * 32])  # repeats and a uid not downloaded
    return ds


MORE_JOBS = {
    # the training sample comes back (bounded by SAMPLE, not by the pool), then shard records
    "cluster_subset": (lambda root, n: _pool_plain(root, n),
                       lambda ds, ex: run_cluster(ds, "m", K, name="sub", executor=ex, input_uids=_half(ds),
                                                  sample_size=SAMPLE),
                       lambda ds: 2 * SAMPLE + 3 * len(ds.shards("embeddings/m")) + 2 * K + 20),
    # per-round change counts, kept/removed counts, reasons, histogram bins, shard records
    "near_dedup": (lambda root, n: _pool(root, n),
                   lambda ds, ex: run_near_dedup(ds, "m", 0.99, clusters="km", nprobe=2, executor=ex,
                                                 input_uids=_half(ds)),
                   lambda ds: 3 * len(ds.shards("embeddings/m")) + 200 + 40 + GUARD),
    # per-source-shard summaries, one record per output shard (write, task), reasons
    "reshard": (lambda root, n: _reshard_pool(root, n),
                lambda ds, ex: reshard(ds, "pick", ds.root / "out", shard_size=40, executor=ex),
                lambda ds: 3 * len(ds.shards("downloads")) + 3 * (ds.count("subsets/pick") // 40 + 1) + 40),
}


def _pool_plain(root: Path, n: int) -> Dataset:
    """A pool whose uids hash evenly (the helpers' uids all hash alike, which sends the sample
    pass to its take-everything retry)."""
    import hashlib

    ds = Dataset(root)
    uids = [hashlib.md5(str(i).encode()).hexdigest() for i in range(n)]
    write_embeddings(ds, "m", clustered_embeddings(n=n, d=16, centers=K, seed=7), uids=uids, rows_per_shard=SHARD_ROWS)
    return ds


def _rows_of(job: str, make, run, ex, root: Path, n: int) -> tuple[int, dict, Dataset]:
    ds = make(root, n)
    before = ex.driver_counter.driver_rows
    calls = dict(ex.driver_counter.by_call)
    run(ds, ex)
    after = {k: v - calls.get(k, 0) for k, v in ex.driver_counter.by_call.items()}
    return ex.driver_counter.driver_rows - before, after, ds


@pytest.mark.parametrize("job", list(MORE_JOBS))
def test_subset_near_dedup_and_reshard_keep_rows_off_the_driver(tmp_path, job):
    make, run, bound = MORE_JOBS[job]
    sizes = (1500, 6000) if job != "reshard" else (400, 1600)
    got = [_rows_of(job, make, run, LocalExecutor(), tmp_path / str(n), n) for n in sizes]
    for (rows, calls, ds), n in zip(got, sizes):
        assert rows <= bound(ds), (job, n, calls, bound(ds))
        assert rows < n // 4 + (GUARD if job == "near_dedup" else 0), (job, n, calls)
    if job == "reshard":  # and the output is complete: every subset row written or listed missing
        meta = read_meta_counts(got[1][2])
        assert meta["written"] + sum(meta["not_written"].values()) == meta["subset_rows"]


def read_meta_counts(ds: Dataset) -> dict:
    from curate.reshard import read_meta

    return read_meta(ds.root / "out")["counts"]


@pytest.mark.extended
def test_on_spark_subset_near_dedup_and_reshard_keep_rows_off_the_driver(tmp_path, spark):
    from curate.engine.spark import SparkExecutor

    for job, (make, run, bound) in MORE_JOBS.items():
        if job == "near_dedup":  # test_on_spark_guard_jobs_hold_shards_plus_a_constant
            continue
        sizes = (1000, 3000) if job != "reshard" else (300, 900)
        for n in sizes:
            rows, calls, ds = _rows_of(job, make, run, SparkExecutor(spark), tmp_path / f"{job}-{n}", n)
            assert rows <= bound(ds), (job, n, calls, bound(ds))
            assert rows < n // 4, (job, n, calls)


def _perceptual_pool(root: Path, n: int) -> Dataset:
    """img2dataset's layout (tar, results parquet, stats file per shard) of ``n`` 16x16 noise
    images, every picture in about 3 copies; every 17th download failed, every 37th image undecodable."""
    import io
    import json

    import pyarrow.parquet as pq
    import webdataset as wds
    from PIL import Image

    from curate.uid import derive_uid

    ds = Dataset(root)
    (root / "images").mkdir(parents=True)
    per_shard, uids, dl = 50, [], []
    for s in range(-(-n // per_shard)):
        stem = f"{s:05d}"
        rows = []
        with wds.TarWriter(str(root / f"images/{stem}.tar"), encoder=False) as w:
            for i in range(s * per_shard, min(n, (s + 1) * per_shard)):
                u, key = derive_uid(f"http://127.0.0.1/{i}.jpg", f"caption {i}"), f"{stem}{i % per_shard:04d}"
                uids.append(u)
                ok = i % 17 != 3
                rows.append({"uid": u, "key": key, "caption": f"caption {i}", "status": "success" if ok else "failed"})
                dl.append({"uid": u, "status": rows[-1]["status"], "shard": f"images/{stem}.tar" if ok else None,
                           "key": key if ok else None, "attempts": 1, "error_class": None if ok else "http_404"})
                if ok:
                    pixels = np.random.default_rng(i // 3).integers(0, 256, (16, 16, 3), dtype=np.uint8)
                    buf = io.BytesIO()
                    Image.fromarray(pixels).save(buf, format="PNG")
                    data = buf.getvalue() if i % 37 != 6 else b"not an image"
                    w.write({"__key__": key, "png": data, "txt": f"caption {i}".encode()})
        pq.write_table(pa.Table.from_pylist(rows), root / f"images/{stem}.parquet")
        (root / f"images/{stem}_stats.json").write_text(json.dumps({"count": len(rows)}))
    schema = load_schema("downloads").arrow()
    ds.write_table("downloads", pa.Table.from_pylist([{f.name: r.get(f.name) for f in schema} for r in dl],
                                                     schema=schema), schema="downloads")
    write_subset(ds, "pick", uids[::2] + ["0" * 32])  # failed downloads and a uid never downloaded: no_phash
    return ds


def _run_perceptual(ds: Dataset, ex):
    from curate.perceptual.job import run_perceptual_dedup

    return run_perceptual_dedup(ds, executor=ex, input_uids=UidList(ds.root / "subsets/pick/uids.parquet"))


@pytest.mark.parametrize("engine", ["local", pytest.param("spark", marks=pytest.mark.extended)])
def test_perceptual_dedup_keeps_rows_off_the_driver(tmp_path, engine, request):
    from curate.perceptual.hashes import HASH_BITS

    def executor():
        if engine == "local":
            return LocalExecutor()
        from curate.engine.spark import SparkExecutor

        return SparkExecutor(request.getfixturevalue("spark"))

    # Spark: one size (each size costs a run of grouping rounds); the
    # bounds below are per size, and the local run checks both sizes
    sizes = (400, 1600) if engine == "local" else (400,)
    got = [_rows_of("perceptual", _perceptual_pool, _run_perceptual, executor(), tmp_path / str(n), n) for n in sizes]
    for (rows, calls, ds), n in zip(got, sizes):
        reasons = len(ds.read("decisions/perceptual_dedup", columns=["reason"]).column("reason").unique())
        # per-shard hash summaries and task records, per-round change counts, per-(reason, kept)
        # counts, distance bins, one largest-group row, shard records
        bound = 4 * (n // 50 + 1) + 2 * reasons + HASH_BITS["phash"] + 1 + 60
        assert rows <= bound, (n, calls, bound)
        assert rows < n // 4, (n, calls)
        # and complete: every picked uid has its decision
        assert ds.count("decisions/perceptual_dedup") == ds.count("subsets/pick")
        counts = RunManifestCounts(ds)
        assert counts["groups_with_duplicates"] > n // 20 and counts["reasons"]["perceptual_duplicate"] > n // 10, counts
        assert counts["reasons"]["no_phash"] > 0 and counts["reasons"]["undecodable_image"] > 0, counts


def RunManifestCounts(ds: Dataset) -> dict:
    import json

    return json.loads((ds.root / "_runs/perceptual_dedup.json").read_text())["counts"]


# ---------------------------------------------------------------- the guards' embedding sample


@pytest.mark.parametrize("uids", ["even", "bunched", "bunched_high"])
def test_guard_sample_is_the_driver_side_pick_with_a_bounded_driver(tmp_path, uids):
    """The engine's pick equals the driver-side one, row for row and bit for bit; the driver
    gets the sample's vectors and a few counts. Bunched hashes (the helpers' uids all hash
    alike: hash 0) take the in-engine reduction; hashes all equal and high (0.86 x 2^63) the
    widening of the threshold."""
    import hashlib

    from curate.embedding_space import guards

    n, per_shard = 2000, 50  # 40 shards
    ds = Dataset(tmp_path / uids)
    ids = {"even": [hashlib.md5(str(i).encode()).hexdigest() for i in range(n)],
           "bunched": [uid(i) for i in range(n)],
           "bunched_high": [f"{((i * 0x9E3779B97F4A7C15) ^ 2) % (1 << 64):016x}{i:016x}" for i in range(n)]}[uids]
    write_embeddings(ds, "m", clustered_embeddings(n=n, d=16, centers=K, seed=3), uids=ids, rows_per_shard=per_shard)
    paths = [str(p) for p in ds.shards("embeddings/m")]
    for embedding, limit in (("image", PAIR_SAMPLE), ("concat", 7)):
        ex = LocalExecutor()
        got = guards.embedding_sample(paths, embedding, limit, executor=ex)
        want = sample_on_the_driver(paths, embedding, limit)
        assert got.dtype == want.dtype and np.array_equal(got, want), (uids, embedding, limit)
        # the vectors, one count per threshold pass and per reduction level (two 16-shard levels at most here)
        assert ex.driver_counter.driver_rows <= limit + 6, ex.driver_counter.by_call
        assert ex.driver_counter.by_call["collect_small"] == limit


def _filter_pool(root: Path, n: int) -> Dataset:
    """samples + embeddings (uids that hash evenly) and the image_based filter's centroids and
    target files, so the filter reads no pool-wide k-means input."""
    import hashlib

    from filters.conftest import ENGLISH, write_samples
    from filters.conftest import write_embeddings as write_filter_embeddings

    ds = Dataset(root)
    uids = [hashlib.md5(str(i).encode()).hexdigest() for i in range(n)]
    write_samples(ds, [ENGLISH[i % len(ENGLISH)] for i in range(n)], [640] * n, [480] * n, uids=uids,
                  rows_per_shard=SHARD_ROWS)
    write_filter_embeddings(ds, "tiny", uids, np.full(n, 0.3), rows_per_shard=SHARD_ROWS)
    rng = np.random.default_rng(0)
    np.save(root / "centroids.npy", rng.normal(size=(K, 8)).astype(np.float32))
    np.save(root / "target.npy", rng.normal(size=(3, 8)).astype(np.float32))
    return ds


def _run_filter(ds: Dataset, ex):
    from curate.filters.job import run_filters
    from curate.filters.stages import parse_filter

    spec = f"image_based:centroids={ds.root / 'centroids.npy'},target={ds.root / 'target.npy'}"
    return run_filters(ds, [parse_filter(spec)], ex, name="ib")


GUARD_JOBS = {
    # shard tasks, per-(filter, reason) counts, the guard sample
    "filter": (_filter_pool, _run_filter, lambda ds: 2 * len(ds.shards("samples")) + 20 + GUARD,
               lambda r: r["resolved"]["image_based"]["guards"]),
    # per-round counts, reasons, histogram bins (<= 200 here), shard records, the guard sample
    "near_dedup": MORE_JOBS["near_dedup"][:3] + (lambda r: r["guards"],),
    # per-(reason, kept) counts, eval images, histogram bins (<= 2000), shard records, the guard sample
    "decontaminate": (lambda root, n: _pool(root, n), JOBS["decontaminate"],
                      lambda ds: 2 * len(ds.shards("embeddings/m")) + 20 + 2000 + GUARD, lambda r: r["guards"]),
}


def _guard_job_rows(job: str, ex_for, tmp: Path, sizes: tuple[int, int]) -> list[tuple[int, dict, Dataset]]:
    make, run, bound, guards_of = GUARD_JOBS[job]
    got = []
    for n in sizes:
        ds = make(tmp / f"{job}-{n}", n)
        ex = ex_for()
        r = run(ds, ex)
        rows, calls = ex.driver_counter.driver_rows, dict(ex.driver_counter.by_call)
        assert rows <= bound(ds), (job, n, calls, bound(ds))
        # the guard still samples PAIR_SAMPLE rows: all its pairs are in the distribution
        assert guards_of(r)["distributions"]["embeddings"]["n"] == PAIR_SAMPLE * (PAIR_SAMPLE - 1) // 2
        got.append((rows, calls, ds))
    return got


def _grows_by_shards_only(job: str, got, per_shard: int) -> None:
    (small, c_small, ds_small), (large, c_large, ds_large) = got
    table = "samples" if job == "filter" else "embeddings/m"
    more_shards = len(ds_large.shards(table)) - len(ds_small.shards(table))
    # 4x the rows: the driver's extra rows are per-shard records (and, for decontaminate, histogram bins)
    slack = 2000 if job == "decontaminate" else 0
    assert large - small <= per_shard * more_shards + slack, (job, c_small, c_large)


@pytest.mark.parametrize("job", list(GUARD_JOBS))
def test_guard_jobs_hold_shards_plus_a_constant(tmp_path, job):
    """near dedup, decontaminate and filter take their guard sample in the engine: O(shards +
    constant) driver rows at two pool sizes."""
    got = _guard_job_rows(job, LocalExecutor, tmp_path, (1500, 6000))
    _grows_by_shards_only(job, got, 3)
    assert got[1][0] < 6000 // 4 + (2000 if job == "decontaminate" else 0)


@pytest.mark.extended
@pytest.mark.parametrize("job", list(GUARD_JOBS))
def test_on_spark_guard_jobs_hold_shards_plus_a_constant(tmp_path, spark, job):
    from curate.engine.spark import SparkExecutor

    got = _guard_job_rows(job, lambda: SparkExecutor(spark), tmp_path, (1000, 3000))
    _grows_by_shards_only(job, got, 3)


# ---------------------------------------------------------------- the recipe's sample stage
SAMPLE_RECIPE = """\
name: smp
dataset: {root}
input: subset:start
output: sampled
stages:
  - kind: sample
    fraction: 0.3
    seed: 5
"""


def _run_sample(ds: Dataset, ex, tmp: Path) -> dict:
    from curate.recipe import load_recipe, run_recipe

    if not (ds.root / "subsets/start").exists():
        uids = ds.read("embeddings/m", columns=["uid"]).column("uid").to_pylist()
        write_subset(ds, "start", uids + uids[:50])  # repeats: the draw is over distinct uids
    path = tmp / f"{ds.root.name}-sample.yaml"
    path.write_text(SAMPLE_RECIPE.format(root=ds.root))
    return run_recipe(load_recipe(path), engine=ex.name, quiet=True, executor=ex, use_cache=False)


def _sample_bound(ds: Dataset) -> int:
    """The runner's counts, reasons and digests and one record per shard written or ranked."""
    return 40 + 4 * len(ds.shards("embeddings/m"))


def test_recipe_sample_stage_runs_in_the_engine(tmp_path):
    """`sample` is an engine stage: the kept uids are the in-memory draw's (smallest seeded hash),
    and the driver holds counts and shard records at two pool sizes."""
    from curate.recipe.stages.sample import sample_uids
    from curate.subset import read_subset

    rows = {}
    for n in (1500, 6000):
        ds = _pool_plain(tmp_path / f"s{n}", n)
        ex = LocalExecutor()
        lineage = _run_sample(ds, ex, tmp_path)
        assert "legacy_stage_decisions" not in ex.driver_counter.by_call
        assert ex.driver_counter.driver_rows <= _sample_bound(ds), ex.driver_counter.by_call
        rows[n] = ex.driver_counter.driver_rows
        st = lineage["stages"][0]
        assert st["input_count"] == n + 50  # repeats counted; the draw is over distinct uids
        assert st["reasons"] == {"kept": round(n * 0.3), "not_sampled": n - round(n * 0.3)}
        want = sample_uids(pa.array(ds.read("embeddings/m", columns=["uid"]).column("uid").to_pylist()), 0.3, None, 5)
        kept = set(read_subset(ds, "sampled"))
        assert kept == set(want.to_pylist()) and len(kept) == round(n * 0.3)
    assert rows[6000] - rows[1500] <= 4 * (6000 - 1500) // SHARD_ROWS, rows


@pytest.mark.extended
def test_on_spark_the_recipe_sample_stage_equals_local(tmp_path, spark):
    from curate.engine.spark import SparkExecutor

    spark_ds, local_ds = _pool_plain(tmp_path / "spark", 3000), _pool_plain(tmp_path / "local", 3000)
    ex = SparkExecutor(spark)
    lineage = _run_sample(spark_ds, ex, tmp_path)
    assert ex.driver_counter.driver_rows <= _sample_bound(spark_ds), ex.driver_counter.by_call
    local = _run_sample(local_ds, LocalExecutor(), tmp_path)
    assert lineage["output_hash"] == local["output_hash"]
    for f in ("subsets/sampled/uids.parquet", "subsets/sampled/uids.npy"):
        assert (spark_ds.root / f).read_bytes() == (local_ds.root / f).read_bytes(), f
    for a, b in zip(spark_ds.shards("decisions/smp"), local_ds.shards("decisions/smp"), strict=True):
        assert Path(a).read_bytes() == Path(b).read_bytes()
