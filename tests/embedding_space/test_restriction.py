"""An input restriction (``--subset``) known to hold each uid once is joined as it is (no
distinct pass), and the anti-join for uids without rows is skipped only when every uid was
found; otherwise both run, with the same decisions."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.embedding_space.common import UidList, subset_uids, uid_frame, write_uid_filter
from curate.embedding_space.jobs.shared import NO_EMBEDDING, missing_frame
from curate.engine import LocalExecutor
from curate.subset import write_subset
from curate.tables import Dataset

from .helpers import uid, write_embeddings


def test_distinct_count_is_known_for_written_filters_and_curate_subsets(tmp_path):
    ds = Dataset(tmp_path / "d")
    ds.root.mkdir()
    a, b, c = uid(1), uid(2), uid(3)
    assert write_uid_filter(ds, "r", pa.array([b, a, b])).distinct == 2
    assert write_uid_filter(ds, "r", None) is None
    write_subset(ds, "once", [c, a, b])
    assert subset_uids(ds, "once").distinct == 3
    write_subset(ds, "twice", [a, b, b])  # a subset may repeat a uid: its manifest says so
    assert subset_uids(ds, "twice").distinct is None
    # a manifest that no longer describes the file beside it is not trusted
    path = subset_uids(ds, "once").path
    pq.write_table(pa.table({"uid": [a, b]}), path)
    assert UidList(path).distinct is None
    # a uid file from elsewhere, and a folder of uid shards: unknown unless the caller counted
    other = tmp_path / "mine.parquet"
    pq.write_table(pa.table({"uid": [a, b]}), other)
    assert UidList(other).distinct is None and UidList(other, distinct=2).distinct == 2
    assert UidList(ds.path("subsets/once")).distinct is None


def test_a_restriction_with_repeats_is_made_distinct_and_missing_uids_are_decided(tmp_path):
    ds = Dataset(tmp_path / "d")
    uids = write_embeddings(ds, "m", np.eye(4, 8, dtype=np.float32).repeat(5, axis=0),
                            rows_per_shard=10)
    ex = LocalExecutor()
    table = "embeddings/m"
    ghost = uid(10_000)
    write_subset(ds, "with-ghost", [*uids[:5], uids[0], ghost])  # a repeat: distinct pass needed
    f = subset_uids(ds, "with-ghost")
    frame = uid_frame(ex, f)
    assert sorted(frame.collect_small(100).column("uid").to_pylist()) == sorted([*uids[:5], ghost])
    # 5 of its 6 distinct uids found: the anti-join runs and decides the ghost
    miss = missing_frame(ex, ds, frame, table, "s", NO_EMBEDDING, f, found=5).collect_small(100)
    assert miss.column("uid").to_pylist() == [ghost] and miss.column("reason").to_pylist() == [NO_EMBEDDING]
    # every uid of a known-distinct restriction found: nothing to anti-join
    write_subset(ds, "present", uids[:5])
    p = subset_uids(ds, "present")
    assert missing_frame(ex, ds, uid_frame(ex, p), table, "s", NO_EMBEDDING, p, found=5) is None
    # a count short of the distinct uids: the anti-join runs (and here finds every uid present)
    assert missing_frame(ex, ds, uid_frame(ex, p), table, "s", NO_EMBEDDING, p, found=4).collect_small(100).num_rows == 0


def test_a_recipe_uid_table_passes_on_what_it_counted(tmp_path):
    from curate.recipe.uid_tables import write_uid_table

    ds = Dataset(tmp_path / "d")
    ds.root.mkdir()
    ex = LocalExecutor()
    once = write_uid_table(ds, "_work/once", ex.frame_from_table(pa.table({"uid": [uid(2), uid(1)]})))
    assert (once.rows, once.distinct) == (2, 2) and once.uid_list(ds).distinct == 2
    upsampled = write_uid_table(ds, "_work/up", ex.frame_from_table(pa.table({"uid": [uid(1), uid(1), uid(2)]})))
    assert (upsampled.rows, upsampled.distinct) == (3, 2) and upsampled.uid_list(ds).distinct is None
    assert uid_frame(ex, upsampled.uid_list(ds)).count() == 2


def test_a_datacomp_subset_file_is_known_distinct_only_when_sorted_without_repeats(tmp_path):
    from curate.uid import uids_to_datacomp

    ds = Dataset(tmp_path / "d")
    ds.root.mkdir()
    a, b, c = sorted([uid(1), uid(2), uid(3)])
    records = uids_to_datacomp([a, b, c])  # sorted records
    cases = {"sorted": ([0, 1, 2], 3), "repeat": ([0, 1, 1, 2], None), "unsorted": ([2, 0, 1], None)}
    for name, (rows, distinct) in cases.items():
        path = tmp_path / f"{name}.npy"
        np.save(path, records[rows])
        uids = [[a, b, c][i] for i in rows]
        restriction = subset_uids(ds, str(path))
        assert restriction.distinct == distinct, name
        assert sorted(uid_frame(LocalExecutor(), restriction).collect_small(10).column("uid").to_pylist()) == \
            sorted(set(uids)), name


def test_a_restriction_naming_many_missing_uids_samples_a_bounded_draw(tmp_path):
    """``cluster --subset`` whose uids mostly have no embedding: the first hash draw (sized by
    the subset's count) comes back short; the next draw's fraction is sized by what the first
    found, so the rows brought to the driver stay near the sample size (the retry took every
    row of the restriction: up to ``want`` a shard, the whole table at scale). The training
    sample, hence the centroids and assignments, equal a clustering restricted to the present
    uids alone (the ``want`` smallest hashes, whichever draw holds them)."""
    import curate.embedding_space.clusters as clusters

    rng = np.random.default_rng(3)
    x = rng.standard_normal((2_000, 8)).astype(np.float32)
    ds = Dataset(tmp_path / "d")
    # random uids: ``uid(i)``'s two words cancel in the uid hash's first step (every hash 0)
    hexes = [rng.bytes(16).hex() for _ in range(3_800)]
    uids = write_embeddings(ds, "m", x / np.linalg.norm(x, axis=1, keepdims=True), uids=sorted(hexes[:2_000]),
                            rows_per_shard=100)
    present = uids[::10]  # 200 rows with embeddings
    ghosts = hexes[2_000:]
    drawn = []
    real_sample = clusters._sample

    def counting_sample(*a, **kw):
        got = real_sample(*a, **kw)
        drawn.append(got.num_rows)
        return got

    clusters._sample = counting_sample
    try:
        out = {}
        for name, restriction in (("ghosts", present + ghosts), ("present", present)):
            drawn.clear()
            r = clusters.run_cluster(ds, "m", 4, name=name, max_points_per_centroid=16, executor=LocalExecutor(),
                                     input_uids=pa.array(restriction))
            out[name] = (r["counts"]["train_rows"], list(drawn),
                         ds.read(f"centroids/{name}").column("centroid").to_pylist(),
                         ds.read(f"clusters/{name}").sort_by("uid").column("cluster_id").to_pylist())
    finally:
        clusters._sample = real_sample
    want = 64  # k x max points per centroid
    assert out["ghosts"][0] == out["present"][0] == want
    assert len(out["ghosts"][1]) >= 2 and out["ghosts"][1][0] < want  # short, then drawn again
    assert want <= out["ghosts"][1][-1] < 2.5 * want < 200  # not all 200 rows of the restriction
    assert out["ghosts"][2:] == out["present"][2:]


def test_near_dedup_counts_add_up_when_some_restricted_uids_have_no_embedding(tmp_path):
    """The job's counts are its decisions' (near duplicates and samples without an embedding),
    never the grouping's own figure for "removed"."""
    from curate.embedding_space.jobs import run_near_dedup

    ds = Dataset(tmp_path / "d")
    uids = write_embeddings(ds, "m", np.eye(4, 8, dtype=np.float32).repeat(5, axis=0), rows_per_shard=10)
    ghosts = [uid(10_000 + i) for i in range(3)]
    c = run_near_dedup(ds, "m", 0.95, input_uids=pa.array(uids + ghosts))["counts"]
    assert c["reasons"] == {"kept": 4, "near_duplicate": 16, NO_EMBEDDING: 3}
    assert (c["input"], c["kept"], c["removed"]) == (23, 4, 19) and c["groups_with_duplicates"] == 4


def test_a_uid_parquet_from_elsewhere_is_checked_before_any_work(tmp_path):
    """A Parquet file named with --subset that curate did not write: a null or malformed uid is
    one line naming the file and row; a subset curate wrote is trusted as it is."""
    import pytest

    from curate.errors import CurateError

    ds = Dataset(tmp_path / "d")
    uids = write_embeddings(ds, "m", np.eye(4, 8, dtype=np.float32).repeat(5, axis=0), rows_per_shard=10)
    for name, bad, shown in (("nulls", None, "None"), ("notahex", "notahex", "'notahex'")):
        path = tmp_path / f"{name}.parquet"
        pq.write_table(pa.table({"uid": pa.array([*uids[:3], bad], pa.string())}), path)
        with pytest.raises(CurateError, match=f"{name}.parquet.*row 3: {shown} is not a 32-char lowercase hex uid"):
            subset_uids(ds, str(path))
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"uid": uids[:3]}), good)
    assert len(subset_uids(ds, str(good))) == 3
    write_subset(ds, "mine", uids[:3])
    assert subset_uids(ds, "mine").distinct == 3


def test_samples_without_a_row_in_the_jobs_table_are_said_not_left_out_in_silence(tmp_path):
    """Without --subset a job's input is its table's rows: the pool's other samples get no
    decision, so a warning says how many and how to decide them."""
    from curate.embedding_space.clusters import run_cluster
    from curate.embedding_space.jobs import run_near_dedup, run_semdedup

    ds = Dataset(tmp_path / "d")
    uids = write_embeddings(ds, "m", np.eye(4, 8, dtype=np.float32).repeat(5, axis=0), rows_per_shard=10)
    ds.write_table("samples", pa.table({"uid": sorted(uids + [uid(10_000 + i) for i in range(3)])}))
    run_cluster(ds, "m", 2)
    for r, table in ((run_near_dedup(ds, "m", 0.95), "embeddings/m"), (run_semdedup(ds, "kmeans", 0.05),
                                                                       "clusters/kmeans")):
        said = [w for w in r["guards"]["warnings"] if "of the pool's" in w]
        assert said and said[0].startswith(f"3 of the pool's 23 samples have no row in {table}"), r["guards"]
        assert r["counts"]["input"] == 20
    restricted = run_near_dedup(ds, "m", 0.95, input_uids=pa.array(uids), run="r")
    assert not [w for w in restricted["guards"]["warnings"] if "of the pool's" in w]


def test_a_runs_input_subset_is_recorded_in_its_manifests(tmp_path):
    """A chain of --subset runs says, in each run's manifest and its subset's, which subset it
    started from and how many uids that held."""
    import json

    from curate.embedding_space.jobs import run_near_dedup

    ds = Dataset(tmp_path / "d")
    uids = write_embeddings(ds, "m", np.eye(4, 8, dtype=np.float32).repeat(5, axis=0), rows_per_shard=10)
    write_subset(ds, "first", uids[:12])
    run_near_dedup(ds, "m", 0.95, run="after", input_uids=subset_uids(ds, "first"))
    run_near_dedup(ds, "m", 0.95, run="whole")
    m = json.loads(ds.path("_runs/after.json").read_text())
    assert m["params"]["input_subset"] == {"subset": "first", "uids": 12}
    assert json.loads(ds.path("subsets/after/_manifest.json").read_text())["params"]["input_subset"] == \
        {"subset": "first", "uids": 12}
    assert json.loads(ds.path("_runs/whole.json").read_text())["params"]["input_subset"] is None


def test_restricted_uids_that_are_no_sample_of_the_pool_are_not_in_pool(tmp_path):
    """A subset file of another pool: its uids that are no sample here are ``not_in_pool``, not
    ``no_embedding`` (which would pass them off as this pool's samples without embeddings)."""
    from curate.embedding_space.jobs import run_exact_dedup, run_near_dedup
    from curate.embedding_space.jobs.shared import NOT_IN_POOL

    ds = Dataset(tmp_path / "d")
    uids = write_embeddings(ds, "m", np.eye(4, 8, dtype=np.float32).repeat(5, axis=0), rows_per_shard=10)
    unembedded = [uid(5_000 + i) for i in range(2)]  # samples of the pool with no embedding
    ds.write_table("samples", pa.table({"uid": uids + unembedded}))
    ghosts = [uid(10_000 + i) for i in range(3)]
    c = run_near_dedup(ds, "m", 0.95, input_uids=pa.array(uids + unembedded + ghosts))["counts"]
    assert c["reasons"] == {"kept": 4, "near_duplicate": 16, NO_EMBEDDING: 2, NOT_IN_POOL: 3}
    assert c["input"] == 25
    with_downloads = pa.table({"uid": uids, "status": ["success"] * len(uids), "sha256": [f"{i:064x}" for i in range(20)]})
    ds.write_table("downloads", with_downloads)
    c = run_exact_dedup(ds, run="ex", input_uids=pa.array(uids[:5] + ghosts))["counts"]
    assert c["reasons"] == {"kept": 5, NOT_IN_POOL: 3}
