"""Perceptual duplicates end to end on real images (real download job, real imagehash):
copies grouped, distinct images not, the survivor rule, failures counted, resume, subset
restriction, the multi-index against brute force, and Spark == in-process byte for byte."""

from __future__ import annotations

import io
import json

import imagehash
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.embedding_space.duplicates import connected_components
from curate.embedding_space.jobs.shared import NOT_IN_POOL
from curate.engine import LocalExecutor
from curate.perceptual import groups as G
from curate.perceptual.hashes import image_hashes
from curate.perceptual.job import NO_PHASH, REASON, UNDECODABLE, run_perceptual_dedup
from curate.subset import read_subset
from curate.tables import load_schema

from .conftest import COPIED, N_DISTINCT, corrupt_member, jpeg, texture

RADIUS = 10


def _by_truth(truth: dict[str, str]) -> dict[str, set[str]]:
    groups: dict[str, set[str]] = {}
    for u, w in truth.items():
        groups.setdefault(w, set()).add(u)
    return groups


def _groups(dec: pa.Table) -> dict[str, set[str]]:
    """survivor -> members (survivor included) of every group with a removal."""
    out: dict[str, set[str]] = {}
    for r in dec.to_pylist():
        if r["reason"] in ("kept", REASON) and r["detail"]:
            out.setdefault(r["detail"], set()).add(r["uid"])
    return out


def test_hash_values_are_imagehash_bits():
    img = texture(7)
    h = image_hashes(img)
    assert h["phash"] == int(str(imagehash.phash(img)), 16)
    assert h["dhash"] == int(str(imagehash.dhash(img)), 16)
    assert h["colorhash"] < (1 << 42)
    # a re-encoded, resized copy stays close; another picture does not
    copy = image_hashes(Image.open(io.BytesIO(jpeg(img.resize((120, 120)), 50))))
    other = image_hashes(texture(8))
    assert bin(h["phash"] ^ copy["phash"]).count("1") <= 6
    assert bin(h["phash"] ^ other["phash"]).count("1") >= 16


@pytest.mark.parametrize("radius,bands", [(0, None), (3, None), (6, None), (8, None), (10, None), (6, 7), (5, 2)])
def test_multi_index_finds_exactly_the_brute_force_components(radius, bands):
    rng = np.random.default_rng(radius * 10 + (bands or 0))
    n = 600
    h = rng.integers(0, 2**63, n, dtype=np.int64).astype(np.uint64) * np.uint64(2) + rng.integers(0, 2, n).astype(np.uint64)
    # planted neighbours at 0..radius+2 bits, chains and identical copies
    for i in range(0, 200, 2):
        flips = rng.choice(64, int(rng.integers(0, radius + 3)), replace=False)
        h[i + 1] = h[i] ^ np.uint64(sum(1 << int(f) for f in flips))
    h[300:310] = h[299]
    uids = [f"{(i * 7919) % 1000:04d}{i:028x}" for i in range(n)]  # uid order != row order
    plan, s = G.band_plan(64, radius, bands)
    entries = G.bucket_entries(pa.array(uids), h, plan, s, parts=3)
    t = pa.Table.from_batches([entries])
    links = pa.concat_tables([G.bucket_links(t.filter(pc.equal(t.column("part"), k)), radius, block_pairs=997)
                              for k in range(3)])
    nodes, labels = G.merge_links(links)
    got = {}
    for u, lab in zip(nodes, labels):
        got.setdefault(nodes[lab], set()).add(u)
    d = np.bitwise_count(h[:, None] ^ h[None, :])
    a, b = np.nonzero(np.triu(d <= radius, 1))
    lab = connected_components(n, a, b)
    want = {}
    for i in range(n):
        want.setdefault(lab[i], set()).add(uids[i])
    want = sorted(sorted(g) for g in want.values() if len(g) > 1)
    assert sorted(sorted(g) for g in got.values()) == want
    assert len(want) >= 5


def test_copies_grouped_distinct_not(copies_ds):
    ds, truth = copies_ds
    r = run_perceptual_dedup(ds, RADIUS, executor=LocalExecutor())
    dec = r["decisions"]
    assert dec.num_rows == len(truth) and r["counts"]["reasons"] == {"kept": N_DISTINCT, REASON: 3 * len(COPIED)}
    want = {frozenset(g) for g in _by_truth(truth).values() if len(g) > 1}
    assert {frozenset(g) for g in _groups(dec).values()} == want
    for row in dec.to_pylist():  # value = Hamming distance to the survivor, computed from the table
        if row["reason"] == REASON:
            hs = {x["uid"]: x["phash"] for x in ds.read("phashes").to_pylist()}
            assert row["value"] == bin(hs[row["uid"]] ^ hs[row["detail"]]).count("1") <= 64
    assert sorted(read_subset(ds, "perceptual_dedup")) == sorted(u for u, k in zip(dec.column("uid").to_pylist(),
                                                                              dec.column("kept").to_pylist()) if k)
    man = json.loads((ds.root / "_runs" / "perceptual_dedup.json").read_text())
    assert man["counts"]["groups_with_duplicates"] == len(COPIED)
    assert man["guards"]["distributions"]["hamming_to_survivor"]["n"] == 3 * len(COPIED)
    # the hash tables: uid-sorted shards aligned with the image shards, uint64 columns
    for p in ds.shards("phashes"):
        t = pq.read_table(p)
        assert t.schema.field("phash").type == pa.uint64()
        assert t.column("uid").to_pylist() == sorted(t.column("uid").to_pylist())
    assert len(ds.shards("phashes")) == len(list((ds.root / "images").glob("*.tar")))


def _write_scores(ds, scores: dict[str, float], model: str = "toy"):
    """An embeddings table written as `curate embed` would, rows in descending uid order."""
    uids = sorted(scores, reverse=True)
    d = 4
    x = np.tile(np.eye(d, dtype=np.float16)[0], (len(uids), 1))
    t = pa.Table.from_arrays([pa.array(uids), pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), d),
                              pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), d),
                              pa.array([scores[u] for u in uids], pa.float32())],
                             schema=load_schema("embeddings").arrow(d))
    ds.write_table(f"embeddings/{model}", t, schema="embeddings")


def test_survivor_highest_clip_score_then_smallest_uid(copies_ds):
    ds, truth = copies_ds
    groups = [sorted(g) for g in _by_truth(truth).values() if len(g) > 1]
    scores = {u: 0.1 for u in truth}
    g0, g1 = groups[0], groups[1]
    scores[g0[2]] = scores[g0[3]] = 0.9        # a tie on the best score: the smaller uid survives
    scores[g1[-1]] = 0.8                       # the largest uid has the best score: it survives
    _write_scores(ds, scores)
    dec = run_perceptual_dedup(ds, RADIUS)["decisions"]
    kept = {r["uid"] for r in dec.to_pylist() if r["kept"]}
    assert g0[2] in kept and g0[3] not in kept and g0[0] not in kept
    assert g1[-1] in kept and not kept & set(g1[:-1])
    for g in groups[2:]:  # equal scores: smallest uid
        assert g[0] in kept and not kept & set(g[1:])
    man = json.loads((ds.root / "_runs" / "perceptual_dedup.json").read_text())
    assert man["params"]["scores"] == "embeddings/toy"


def test_undecodable_and_missing_images_are_counted(copies_ds):
    ds, truth = copies_ds
    uids = sorted(truth)
    corrupt_member(ds, uids[0], b"<html>not an image</html>")
    corrupt_member(ds, uids[1], None)
    r = run_perceptual_dedup(ds, RADIUS)
    dec = {x["uid"]: x for x in r["decisions"].to_pylist()}
    assert len(dec) == len(truth)  # every downloaded sample has one decision
    assert dec[uids[0]]["reason"] == UNDECODABLE and dec[uids[0]]["detail"] == "decode_error"
    assert dec[uids[1]]["reason"] == UNDECODABLE and dec[uids[1]]["detail"] == "missing_member"
    f = ds.read("phash_failures").sort_by("uid").to_pylist()
    assert [x["uid"] for x in f] == uids[:2] and all(x["error_message"] for x in f)
    assert ds.count("phashes") + ds.count("phash_failures") == len(truth)
    assert sum(r["counts"]["reasons"].values()) == len(truth)
    assert r["counts"]["reasons"][UNDECODABLE] == 2


def test_resume_hashes_only_missing_shards(copies_ds):
    ds, _ = copies_ds
    first = run_perceptual_dedup(ds, RADIUS)
    assert first["counts"]["hash"]["shards_hashed"] == 3
    before = {p.name: p.read_bytes() for p in ds.shards("phashes")}
    dec_before = [p.read_bytes() for p in ds.shards("decisions/perceptual_dedup")]
    ds.shard_path("phashes", 1).unlink()
    (ds.shard_path("phashes", 2).parent / ".part-00002.parquet.tmp-killed").write_bytes(b"half a file")  # a killed task
    again = run_perceptual_dedup(ds, RADIUS)
    assert again["counts"]["hash"]["shards_hashed"] == 1
    assert {p.name: p.read_bytes() for p in ds.shards("phashes")} == before
    assert [p.read_bytes() for p in ds.shards("decisions/perceptual_dedup")] == dec_before


def test_subset_restriction(copies_ds, tmp_path, spark):
    """A restriction is joined by the engine (no uid list in any task): only its uids are
    grouped and decided, its uids that are no sample are not_in_pool (NO_PHASH is a sample's
    without a hash), its undecodable images UNDECODABLE and the others' left out; the same bytes
    on Spark."""
    import shutil

    from curate.engine.spark import SparkExecutor
    from curate.tables import Dataset

    ds, truth = copies_ds
    groups = [sorted(g) for g in _by_truth(truth).values() if len(g) > 1]
    alone = sorted(set(truth) - {u for g in groups for u in g})
    corrupt_member(ds, alone[0], b"not an image")
    corrupt_member(ds, alone[1], b"not an image either")  # outside the restriction
    samples = ds.read("samples")  # a sample never downloaded (no hash): NO_PHASH
    extra = samples.slice(0, 1).set_column(0, samples.schema.field("uid"), pa.array(["e" * 32]))
    ds.write_table("samples", pa.concat_tables([samples, extra]), schema="samples")
    inp = [groups[0][0], groups[0][1]] + [g[0] for g in groups[1:]] + ["f" * 32, "e" * 32, alone[0], alone[2]]
    other = Dataset(tmp_path / "spark")
    shutil.copytree(ds.root, other.root)
    r = run_perceptual_dedup(ds, RADIUS, input_uids=pa.array(inp), output="restricted")
    dec = {x["uid"]: x for x in r["decisions"].to_pylist()}
    assert set(dec) == set(inp)
    assert dec["f" * 32]["reason"] == NOT_IN_POOL and dec["e" * 32]["reason"] == NO_PHASH
    assert dec[alone[0]]["reason"] == UNDECODABLE
    assert dec[alone[2]]["kept"] and dec[alone[2]]["reason"] == "kept"
    assert dec[groups[0][1]]["reason"] == REASON and dec[groups[0][1]]["detail"] == groups[0][0]
    assert all(dec[g[0]]["kept"] for g in groups)
    assert sorted(read_subset(ds, "restricted")) == sorted(u for u, x in dec.items() if x["kept"])
    b = run_perceptual_dedup(other, RADIUS, input_uids=pa.array(inp), output="restricted",
                             executor=SparkExecutor(spark))
    assert b["counts"]["reasons"] == r["counts"]["reasons"]
    table = "decisions/perceptual_dedup"
    assert [p.read_bytes() for p in ds.shards(table)] == [p.read_bytes() for p in other.shards(table)] != []
    for f in ("uids.parquet", "uids.npy"):
        assert (ds.root / "subsets/restricted" / f).read_bytes() == (other.root / "subsets/restricted" / f).read_bytes()


def test_spark_equals_local_byte_for_byte(copies_ds, tmp_path, spark):
    import shutil

    from curate.engine.spark import SparkExecutor
    from curate.tables import Dataset

    ds, truth = copies_ds
    other = Dataset(tmp_path / "spark")
    shutil.copytree(ds.root, other.root)
    scores = {u: float(i % 3) / 10 for i, u in enumerate(sorted(truth))}
    _write_scores(ds, scores)
    _write_scores(other, scores)
    a = run_perceptual_dedup(ds, RADIUS, executor=LocalExecutor())
    b = run_perceptual_dedup(other, RADIUS, executor=SparkExecutor(spark))
    assert a["counts"]["reasons"] == b["counts"]["reasons"]
    for table in ("phashes", "phash_failures", "decisions/perceptual_dedup"):
        assert [p.read_bytes() for p in ds.shards(table)] == [p.read_bytes() for p in other.shards(table)], table
    for f in ("uids.parquet", "uids.npy"):
        assert (ds.root / "subsets/perceptual_dedup" / f).read_bytes() == (other.root / "subsets/perceptual_dedup" / f).read_bytes()
