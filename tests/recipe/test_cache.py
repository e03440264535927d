"""Cache keys: subset hashes, table fingerprints, damaged entries."""

from __future__ import annotations

import pyarrow as pa

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
