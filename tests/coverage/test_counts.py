"""Counts, ranks and relative drops: exact on a hand-built pool, equal to `metadata match` on
MetaCLIP metadata, equal to the demo generator's truth, and by image-prompt similarity."""

from __future__ import annotations

import json
import math

import numpy as np
import pyarrow as pa
import pytest

from curate.coverage import from_file, from_metadata, run_coverage
from curate.coverage.job import subset_uids_path
from curate.engine import LocalExecutor
from curate.subset import write_subset

from .conftest import uid_of, write_pool

TEXTS = [
    "a dog on the grass",   # 0 dog
    "two dogs",             # 1 (plural: no match)
    "a cat, a dog.",        # 2 cat dog
    "Dog show",             # 3 (case matters)
    "a hot dog stand",      # 4 dog, hot dog
    "a red bird",           # 5 bird
    "the cat sleeps",       # 6 cat
    "dog dog dog",          # 7 dog (once)
    "bird-watching",        # 8 (the hyphen is part of the word)
    "nothing here",         # 9
]
CONCEPTS = "dog\ncat\nbird\nhot dog\nzebra\n"
SUBSET_A = [0, 1, 5, 6, 9]
SUBSET_B = [2, 4, 7]


@pytest.fixture
def hand_pool(tmp_path):
    ds = write_pool(tmp_path / "pool", TEXTS, shards=3)
    u = uid_of(ds)
    write_subset(ds, "a", [u[i] for i in SUBSET_A])
    write_subset(ds, "b", [u[i] for i in SUBSET_B])
    (tmp_path / "concepts.txt").write_text(CONCEPTS)
    return ds, from_file(tmp_path / "concepts.txt")


def _rows(ds, name, subset):
    t = ds.read(f"coverage/{name}").to_pylist()
    return {r["concept"]: r for r in t if r["subset"] == subset}


def test_exact_counts_ranks_and_drops(hand_pool):
    ds, concepts = hand_pool
    summary = run_coverage(ds, concepts, LocalExecutor(), name="hand", min_pool_count=1,
                           subsets={s: subset_uids_path(ds, s) for s in ("a", "b")})
    a, b = _rows(ds, "hand", "a"), _rows(ds, "hand", "b")
    assert {c: r["pool_count"] for c, r in a.items()} == {"dog": 4, "cat": 2, "bird": 1, "hot dog": 1, "zebra": 0}
    assert {c: r["pool_rank"] for c, r in a.items()} == {"dog": 1, "cat": 2, "bird": 3, "hot dog": 4, "zebra": 5}
    assert all(r["pool_size"] == 10 and r["source"] == "caption" for r in a.values())
    assert {c: r["count"] for c, r in a.items()} == {"dog": 1, "cat": 1, "bird": 1, "hot dog": 0, "zebra": 0}
    assert {c: r["rank"] for c, r in a.items()} == {"dog": 1, "cat": 2, "bird": 3, "hot dog": 4, "zebra": 5}
    assert {c: r["count"] for c, r in b.items()} == {"dog": 3, "cat": 1, "bird": 0, "hot dog": 1, "zebra": 0}
    assert a["dog"]["subset_size"] == 5 and b["dog"]["subset_size"] == 3
    # 1 - (count / subset size) / (pool count / pool size)
    assert a["dog"]["relative_drop"] == pytest.approx(0.5)
    assert a["cat"]["relative_drop"] == pytest.approx(0.0)
    assert a["bird"]["relative_drop"] == pytest.approx(-1.0)
    assert a["hot dog"]["relative_drop"] == pytest.approx(1.0)
    assert a["zebra"]["relative_drop"] is None and a["zebra"]["kept_fraction"] is None
    assert b["dog"]["relative_drop"] == pytest.approx(-1.5)
    assert b["cat"]["relative_drop"] == pytest.approx(-2 / 3)
    assert b["hot dog"]["relative_drop"] == pytest.approx(-7 / 3)
    assert b["bird"]["relative_drop"] == pytest.approx(1.0)
    assert [a[c]["kept_fraction"] for c in ("dog", "cat", "bird", "hot dog")] == [0.25, 0.5, 1.0, 0.0]
    # starved: positive drops only, largest first, above the minimum pool count
    sa = summary["sources"]["caption"]["subsets"]["a"]
    assert [r["concept"] for r in sa["starved"]] == ["hot dog", "dog"]
    assert sa["concepts_lost"] == 1 and sa["concepts_seen"] == 3
    again = run_coverage(ds, concepts, LocalExecutor(), name="hand2", min_pool_count=2,
                         subsets={"a": subset_uids_path(ds, "a")})
    assert [r["concept"] for r in again["sources"]["caption"]["subsets"]["a"]["starved"]] == ["dog"]
    assert (ds.table_dir("coverage/hand") / "_longtail.png").stat().st_size > 5000
    assert json.loads((ds.table_dir("coverage/hand") / "_summary.json").read_text())["table"] == "coverage/hand"


def test_without_subsets_and_with_downloaded_pool(hand_pool):
    ds, concepts = hand_pool
    run_coverage(ds, concepts, LocalExecutor(), name="bare")
    t = ds.read("coverage/bare").to_pylist()
    assert len(t) == 5 and all(r["subset"] is None and r["count"] is None for r in t)
    # a downloads table: rows 1 and 4 failed, so the pool (auto = downloaded) is 8 samples
    u = uid_of(ds)
    uids = [u[i] for i in range(10)]
    failed = {u[1], u[4]}
    n = len(uids)
    ds.write_table("downloads", pa.table({
        "uid": uids, "status": ["failed" if x in failed else "success" for x in uids],
        "error_class": pa.nulls(n, pa.string()), "error_message": pa.nulls(n, pa.string()),
        "sha256": pa.nulls(n, pa.string()),
        "width": pa.nulls(n, pa.int32()), "height": pa.nulls(n, pa.int32()),
        "original_width": pa.nulls(n, pa.int32()), "original_height": pa.nulls(n, pa.int32()),
        "shard": pa.nulls(n, pa.string()), "key": pa.nulls(n, pa.string()),
        "attempts": pa.array([1] * n, pa.int32())}), schema="downloads")
    s = run_coverage(ds, concepts, LocalExecutor(), name="dl", subsets={"a": subset_uids_path(ds, "a")})
    assert s["pool"] == "downloaded samples"
    a = _rows(ds, "dl", "a")
    assert a["dog"]["pool_size"] == 8 and a["dog"]["subset_size"] == 4  # row 1 of subset a failed
    assert {c: r["pool_count"] for c, r in a.items()} == {"dog": 3, "cat": 2, "bird": 1, "hot dog": 0, "zebra": 0}
    assert a["dog"]["relative_drop"] == pytest.approx(1 - (1 / 4) / (3 / 8))
    run_coverage(ds, concepts, LocalExecutor(), name="all", pool="all", subsets={"a": subset_uids_path(ds, "a")})
    assert _rows(ds, "all", "a")["dog"]["pool_size"] == 10


def test_metadata_counts_equal_metadata_match(tmp_path):
    """Same semantics as `curate metadata match`: the pool counts are its entry_counts."""
    from curate.metaclip.jobs import run_build, run_match

    texts = TEXTS * 3 + ["a photo of the Golden Gate Bridge", "U.S. flag", "", "dog, cat; bird"]
    ds = write_pool(tmp_path / "pool", texts, shards=2)
    meta = tmp_path / "metadata.json"
    run_build(meta, wordnet=False, wordfreq_top=3000, entry_lists=[])
    entries = json.loads(meta.read_text()) + ["hot dog", "Golden Gate Bridge", "U.S.", "dog"]
    meta.write_text(json.dumps(entries))
    run_match(ds, meta, LocalExecutor())
    run_coverage(ds, from_metadata(meta), LocalExecutor(), name="meta", pool="all")
    cov = ds.read("coverage/meta").sort_by("concept_id")
    assert cov.column("pool_count").to_pylist() == ds.read("entry_counts").sort_by("entry_id").column("count").to_pylist()
    assert cov.column("concept").to_pylist() == entries


def test_demo_pool_counts_equal_the_generator_truth(tmp_path):
    """The demo pool, ingested by `curate ingest`: its captions describe their scene (no
    swapped or translated captions here; spam mentions no concept), so a concept's count is
    the number of truth rows with that attribute."""
    import pyarrow.parquet as pq

    from curate.cli import main
    from curate.demo.pool import COLOURS, SHAPES, SIZES, NoiseRates, PoolSpec, bind_pool, generate_pool
    from curate.tables import Dataset

    generate_pool(tmp_path / "demo", PoolSpec(n=500, seed=7, image_size=16,
                                               noise=NoiseRates(swapped=0.0, non_english=0.0, spam=0.1)))
    pool_file = bind_pool(tmp_path / "demo", "http://127.0.0.1:9")
    with pytest.raises(SystemExit) as e:
        main(["ingest", str(pool_file), "-o", str(tmp_path / "pool"), "--engine", "local"])
    assert not e.value.code
    ds = Dataset(tmp_path / "pool")
    truth = pq.read_table(tmp_path / "demo" / "truth.parquet").to_pylist()
    samples = ds.read("samples", columns=["uid", "source_row"])
    assert samples.num_rows == len(truth)
    uid_of_row = dict(zip(samples.column("source_row").to_pylist(), samples.column("uid").to_pylist()))
    write_subset(ds, "clean", [uid_of_row[i] for i, r in enumerate(truth) if r["noise"] == "clean"])
    concepts = [*SHAPES, *COLOURS, *SIZES, "striped", "dotted", "checkered"]
    (tmp_path / "demo.txt").write_text("\n".join(concepts) + "\n")
    run_coverage(ds, from_file(tmp_path / "demo.txt"), LocalExecutor(), name="demo", pool="all",
                 subsets={"clean": subset_uids_path(ds, "clean")})
    rows = _rows(ds, "demo", "clean")

    def truth_count(c, keep=lambda r: True):
        return sum(1 for r in truth if r["noise"] != "spam" and keep(r)
                   and c in (r["shape"], r["colour"], r["size"], r["texture"]))

    for c in concepts:
        assert rows[c]["pool_count"] == truth_count(c), c
        assert rows[c]["count"] == truth_count(c, lambda r: r["noise"] == "clean"), c
    assert rows["circle"]["pool_count"] > 0
    assert rows["circle"]["subset_size"] == sum(r["noise"] == "clean" for r in truth)
    assert sum(1 for r in truth if r["noise"] == "spam") > 0


def test_image_prompt_similarity_counts(hand_pool):
    """By image: cosine of each image embedding with the concept's mean prompt embedding
    (curate eval's zero-shot class weights) at or above the threshold."""
    from curate.embed.core import embed_texts
    from curate.evaluate import DEFAULT_TEMPLATES
    from curate.models import load_model

    ds, concepts = hand_pool
    u = uid_of(ds)
    have = [u[i] for i in range(10) if i != 5]  # one sample (of subset a) without an embedding
    rng = np.random.default_rng(5)
    bundle = load_model("curate-tiny", None, seed=0)  # built locally, random weights
    prompts = embed_texts(bundle, [t.format(c) for c in concepts.names for t in DEFAULT_TEMPLATES])
    w = prompts.reshape(len(concepts.names), len(DEFAULT_TEMPLATES), -1).mean(1)
    w /= np.linalg.norm(w, axis=1, keepdims=True)
    # images near concept prompts (so some pass a high threshold) plus noise
    x = w[rng.integers(0, len(w), len(have))] + rng.normal(0, 0.05, (len(have), w.shape[1]))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    dim = x.shape[1]
    ds.write_table("embeddings/curate-tiny__random-seed0", pa.table({
        "uid": have, "image_embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim),
        "text_embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), dim),
        "clip_score": pa.array(np.zeros(len(have)), pa.float32())}), schema="embeddings", rows_per_shard=4)
    threshold = 0.9
    run_coverage(ds, concepts, LocalExecutor(), name="img", embeddings="curate-tiny__random-seed0",
                 threshold=threshold, subsets={"a": subset_uids_path(ds, "a")})
    t = ds.read("coverage/img").to_pylist()
    img = {r["concept"]: r for r in t if r["source"] == "image"}
    cap = {r["concept"]: r for r in t if r["source"] == "caption"}
    above = (x.astype(np.float32) @ w.astype(np.float32).T) >= np.float32(threshold)
    in_a = np.array([h in {u[i] for i in SUBSET_A} for h in have])
    for j, c in enumerate(concepts.names):
        assert img[c]["pool_count"] == int(above[:, j].sum()), c
        assert img[c]["count"] == int(above[in_a, j].sum()), c
    assert img["dog"]["pool_size"] == 9 and img["dog"]["subset_size"] == 4
    # caption and image of the same sample (the papers' "matched" frequency)
    from curate.metaclip.matching import naive_match

    text_of = dict(zip(ds.read("samples").column("uid").to_pylist(), ds.read("samples").column("text").to_pylist()))
    cap_hit = np.array([[j in naive_match(text_of[h], concepts.names) for j in range(len(concepts.names))]
                        for h in have])
    both = {r["concept"]: r for r in t if r["source"] == "caption+image"}
    for j, c in enumerate(concepts.names):
        assert both[c]["pool_count"] == int((above[:, j] & cap_hit[:, j]).sum()), c
        assert both[c]["count"] == int((above[in_a, j] & cap_hit[in_a, j]).sum()), c
    assert both["dog"]["pool_size"] == 9 and both["dog"]["subset_size"] == 4
    assert sum(r["pool_count"] for r in both.values()) > 0
    assert sum(r["pool_count"] for r in img.values()) > 0
    assert any(r["pool_count"] < 9 for r in img.values())  # the threshold tells images apart
    assert cap["dog"]["pool_count"] == 4  # the caption rows are unchanged by the image pass
    assert not math.isnan(sum(r["pool_count"] for r in img.values()))
