"""Cache keys: subset hashes, table fingerprints, damaged entries."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curate.recipe.cache import StageCache, subset_hash, table_fingerprint

A, B, C = "a" * 32, "b" * 32, "c" * 32


def test_subset_hash_is_order_free_and_counts_repeats():
    assert subset_hash(pa.array([A, B, C])) == subset_hash(pa.array([C, A, B]))
    assert subset_hash(pa.array([A, B])) != subset_hash(pa.array([A, B, B]))
    assert subset_hash(pa.array([A, B])) != subset_hash(pa.array([A, C]))
    assert subset_hash(pa.array([], pa.string())) != subset_hash(pa.array([A]))
    sliced = pa.array([C, B, A, C]).slice(1, 2)  # offsets into a bigger buffer
    assert subset_hash(sliced) == subset_hash(pa.array([A, B]))


def test_table_fingerprint_follows_content_not_mtime(pool):
    before = table_fingerprint(pool, "samples")
    t = pool.read("samples")
    pool.write_table("samples", t, schema="samples")  # same rows: same bytes
    assert table_fingerprint(pool, "samples") == before
    pool.write_table("samples", t.slice(1), schema="samples")
    assert table_fingerprint(pool, "samples") != before


def test_damaged_entry_is_a_miss(pool):
    from curate.decisions import decisions_table

    cache = StageCache(pool)
    d = decisions_table([A, B], "s", [True, False], ["kept", "x"])
    cache.put("k1", d, pa.array([A]), {"stats": {"n": 1}})
    e = cache.get("k1")  # table references, read by the engine when used
    assert pool.count(e.decisions) == 2 and pool.read(e.uids.name).column("uid").to_pylist() == [A]
    assert (e.uids.rows, e.uids.distinct) == (1, 1) and e.meta["stats"] == {"n": 1}
    pool.shards(e.decisions)[0].write_bytes(b"not parquet")  # the fingerprint no longer matches
    assert cache.get("k1") is None
    assert StageCache(pool, enabled=False).get("k1") is None


def test_the_workers_digest_equals_the_array_hash():
    """The subset hash the engine sums (per batch on the workers, one row back) is the array's."""
    import numpy as np

    from curate.engine import LocalExecutor
    from curate.recipe.uid_tables import subset_digest_frame

    rng = np.random.default_rng(0)
    uids = pa.array([f"{x:032x}" for x in rng.integers(0, 2**62, 70_000)] * 2)  # more than one batch, repeats
    ex = LocalExecutor()
    digest, n = subset_digest_frame(ex.frame_from_table(pa.table({"uid": uids})))
    assert (digest, n) == (subset_hash(uids), 140_000)
    assert ex.driver_counter.driver_rows == 1
    assert subset_hash(uids.slice(1)) != digest
    assert subset_hash(pa.array(["not-hex", "x"])) == subset_hash(pa.array(["x", "not-hex"]))  # any text hashes


def test_a_stage_deciding_a_uid_twice_fails_before_its_decisions_are_written(tmp_path):
    """As many decision rows as input uids, but one uid decided twice and another not at all:
    the sorted write finds the repeat (no distinct-count pass) and nothing of the stage is
    cached or written."""
    from types import SimpleNamespace

    from curate.decisions import decisions_table
    from curate.engine import LocalExecutor
    from curate.errors import DatasetError
    from curate.recipe.cache import StageCache
    from curate.recipe.registry import StageContext, StageOutput
    from curate.recipe.stage_run import run_table_stage
    from curate.recipe.uid_tables import write_uid_table
    from curate.tables import Dataset

    ds = Dataset(tmp_path / "d")
    ex = LocalExecutor()
    uids = [f"{i:032x}" for i in range(10)]
    inp = write_uid_table(ds, "_tmp/in", ex.frame_from_table(pa.table({"uid": uids})))
    bad = uids[:4] + [uids[3]] + uids[5:]  # uid 3 twice, uid 4 missing: still 10 rows
    kind = SimpleNamespace(run=lambda ctx, job_in, params: StageOutput(
        ex.frame_from_table(decisions_table(bad, "x", [True] * 10, ["kept"] * 10))))
    ctx = StageContext(dataset=ds, embedding_model=None, stage_name="bad", engine="local", run_executor=ex)
    cache = StageCache(ds)
    with pytest.raises(DatasetError, match=r"returned 10 decision rows for 10 distinct input uids, 1 of them"):
        run_table_stage(ctx, kind, None, inp, cache, "k1", "bad")
    assert cache.get("k1") is None and not ds.has_table(cache.table("k1", "decisions"))


def test_a_stage_reruns_when_the_files_it_reads_change(pool, tmp_path):
    """A cached stage is keyed on the files its parameters name outside the tables too:
    decontaminate's evaluation set gains an image (a near copy of one more pool sample) and
    the stage runs again, removing it; its own ``embeddings:`` table is the one keyed."""
    import pyarrow.parquet as pq

    from curate.recipe import load_recipe, run_recipe
    from curate.tables.fingerprint import path_fingerprint

    emb = pool.read("embeddings/toy-model")
    pool.write_table("embeddings/other", emb, schema="embeddings")  # the stage's own table

    def write_eval(n: int) -> None:
        pq.write_table(pa.table({"key": [f"e{i}" for i in range(n)],
                                 "image_embedding": emb.column("image_embedding").slice(0, n)}),
                       tmp_path / "eval.parquet")

    write_eval(2)
    (tmp_path / "r.yaml").write_text(f"name: decon\ndataset: {pool.root}\nembedding_model: toy-model\n"
                                     "input: downloaded\nstages:\n  - kind: decontaminate\n    eval: eval.parquet\n"
                                     "    threshold: 0.999\n    embeddings: other\n")
    first = run_recipe(load_recipe(tmp_path / "r.yaml"), engine="local", quiet=True)
    again = run_recipe(load_recipe(tmp_path / "r.yaml"), engine="local", quiet=True)
    assert [s["cached"] for s in again["stages"]] == [True]
    write_eval(3)
    changed = run_recipe(load_recipe(tmp_path / "r.yaml"), engine="local", quiet=True)
    assert [s["cached"] for s in changed["stages"]] == [False]
    assert changed["output_count"] == first["output_count"] - 1
    # the other table, rewritten with other rows, is what the stage is keyed on
    pool.write_table("embeddings/other", emb.slice(1), schema="embeddings")
    assert [s["cached"] for s in run_recipe(load_recipe(tmp_path / "r.yaml"), engine="local",
                                             quiet=True)["stages"]] == [False]
    assert path_fingerprint(str(tmp_path / "nothing-*.npy")) == {"path": str(tmp_path / "nothing-*.npy"),
                                                                  "missing": True}
    folder = tmp_path / "imgs"
    folder.mkdir()
    (folder / "a.jpg").write_bytes(b"1")
    before = path_fingerprint(str(folder))
    (folder / "b.jpg").write_bytes(b"2")
    assert path_fingerprint(str(folder)) != before and path_fingerprint(str(folder))["files"] == 2
