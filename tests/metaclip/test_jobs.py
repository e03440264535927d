"""MetaCLIP jobs end to end on Spark (local) and the local executor: outputs, accounting,
and the same matches, counts and subset for 1, 2 and 4 partitions."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.engine import LocalExecutor
from curate.metaclip.jobs import ngram_count_task, run_balance, run_build, run_match
from curate.metaclip.matching import Matcher, spacing
from curate.metaclip.metadata import count_ngrams
from curate.subset import read_subset
from curate.tables import Dataset


@pytest.fixture(scope="module")
def pool_texts(real_captions):
    # Human captions and noisy web alt-text, duplicates and empty texts included.
    return real_captions["flickr8k_all"][:4000] + real_captions["web_alttext"][:2000] + ["", "   ", "dog"]


@pytest.fixture(scope="module")
def small_metadata(tmp_path_factory):
    path = tmp_path_factory.mktemp("meta") / "metadata.json"
    run_build(path, wordnet=False, wordfreq_top=20_000)
    return path


def _outputs(ds: Dataset):
    matches = ds.read("metadata_matches")
    return {
        "matches": dict(zip(matches.column("uid").to_pylist(), matches.column("entry_ids").to_pylist())),
        "counts": ds.read("entry_counts").column("count").to_pylist(),
        "subset": read_subset(ds, "metaclip"),
        "decisions": ds.read("decisions/metaclip").sort_by("uid").to_pylist(),
        "balance": ds.read("entry_balance/metaclip").to_pylist(),
    }


def test_spark_same_result_for_1_2_4_partitions_and_local(spark, tmp_path, pool_texts, small_metadata, make_samples):
    from curate.engine.spark import SparkExecutor

    results = {}
    for shards in (1, 2, 4):
        ds = make_samples(tmp_path / f"pool{shards}", pool_texts, shards=shards)
        run_match(ds, small_metadata, SparkExecutor(spark), batch_size=1000)
        run_balance(ds, SparkExecutor(spark), t=50, seed=11)
        assert len(ds.shards("metadata_matches")) == shards == len(ds.shards("decisions/metaclip"))
        results[shards] = _outputs(ds)
    local = make_samples(tmp_path / "local", pool_texts, shards=3)
    run_match(local, small_metadata, LocalExecutor())
    run_balance(local, LocalExecutor(), t=50, seed=11)
    results["local"] = _outputs(local)
    for k in (2, 4, "local"):
        assert results[k] == results[1], k

    # The matches are the matcher's, the counts add up from them.
    r = results[1]
    entries = json.loads(small_metadata.read_text())
    samples = Dataset(tmp_path / "pool1").read("samples")
    expect = Matcher(entries).match(samples.column("text").to_pylist())
    assert [r["matches"][u] for u in samples.column("uid").to_pylist()] == expect
    counts = np.bincount([i for m in expect for i in m], minlength=len(entries))
    assert r["counts"] == counts.tolist()
    # Every sample has one decision; kept ones are the subset; reasons explain the rest.
    assert len(r["decisions"]) == samples.num_rows
    assert sorted(d["uid"] for d in r["decisions"] if d["kept"]) == r["subset"]
    reasons = {d["reason"] for d in r["decisions"]}
    assert reasons == {"kept", "balanced_out", "no_metadata_match"}
    assert all((not m) == (d["reason"] == "no_metadata_match")
               for d in r["decisions"] for m in [r["matches"][d["uid"]]])
    # Balancing capped the head: the most matched entry lost texts, the tail kept all.
    kept_set = set(r["subset"])
    kept_counts = np.bincount([i for u, m in r["matches"].items() if u in kept_set for i in m],
                              minlength=len(entries))
    assert [b["kept"] for b in r["balance"]] == kept_counts.tolist()
    top = int(np.argmax(counts))
    assert counts[top] > 1000 and kept_counts[top] < counts[top]
    tail = (counts > 0) & (counts < 50)
    assert np.array_equal(kept_counts[tail], counts[tail])


def test_outputs_on_disk_and_manifests(tmp_path, pool_texts, small_metadata, make_samples):
    ds = make_samples(tmp_path / "pool", pool_texts[:3000], shards=2)
    m = run_match(ds, small_metadata, LocalExecutor())
    assert m["counts"]["samples"] == 3000 == m["counts"]["matched"] + m["counts"]["unmatched"]
    b = run_balance(ds, LocalExecutor(), t=20, seed=0, name="mc20")
    c = b["counts"]
    assert c["input"] == 3000 == c["kept"] + c["balanced_out"] + c.get("no_metadata_match", 0)
    assert c["kept_total"] == c["kept"] == len(read_subset(ds.root / "subsets" / "mc20" / "uids.npy"))
    d = ds.root / "subsets" / "mc20"
    assert (d / "entry_distribution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    dist = json.loads((d / "entry_distribution.json").read_text())
    assert dist["before"]["pairs"] > dist["after"]["pairs"] and dist["head"][0]["before"] > dist["head"][0]["after"]
    man = json.loads((d / "_manifest.json").read_text())
    assert man["stage"] == "metaclip_balance"
    # removals per reason, as every selection records them: the report's funnel shows them
    assert man["reasons"] == {k: c[k] for k in ("balanced_out", "no_metadata_match") if c.get(k)}
    assert man["input_count"] == 3000
    from curate.report.collect import _subset_lineage

    assert _subset_lineage("mc20", man, c["kept"])["reasons"] == man["reasons"]
    for name in ("metadata-match", "metadata-balance-mc20"):
        assert (ds.root / "_runs" / f"{name}.json").exists()
    # A rerun with a new seed replaces the decisions, never mixes shards of two runs.
    run_balance(ds, LocalExecutor(), t=20, seed=1, name="mc20")
    assert ds.count("decisions/mc20") == 3000
    # --resume skips shards matched against the same metadata.
    again = run_match(ds, small_metadata, LocalExecutor(), resume=True)
    assert again["counts"]["skipped"] == 2 and again["counts"]["pairs"] == 0
    other = tmp_path / "other.json"
    other.write_text(json.dumps(["dog", "a"]), encoding="utf-8")
    changed = run_match(ds, other, LocalExecutor(), resume=True)  # new metadata: nothing to resume
    assert changed["counts"]["skipped"] == 0 and ds.count("entry_counts") == 2


def test_bigrams_mined_in_the_engine_equal_the_in_memory_mining(spark, tmp_path, pool_texts, make_samples):
    """Spark, the in-process engine and metadata.pmi_bigrams (every count held in one process)
    mine the same bigrams, counts, PMI floats and order, from a pool and from corpus files; the
    driver receives the word total and the mined rows only."""
    from curate.engine.spark import SparkExecutor
    from curate.metaclip.bigram_mining import corpus_ngram_task, mine_bigrams
    from curate.metaclip.metadata import NGRAM_SCHEMA, pmi_bigrams

    uni, bi = count_ngrams(spacing(t) for t in pool_texts)
    total = sum(uni.values())
    want = [(b.text, b.count, b.pmi) for b in pmi_bigrams(uni, bi, total, 3, 4.0)]
    assert 100 < len(want) < len([k for k, v in bi.items() if v >= 3])  # the PMI threshold bites

    ds = make_samples(tmp_path / "pool", pool_texts, shards=3)
    pool_tasks = [{"input": str(p)} for p in ds.shards("samples")]
    half = len(pool_texts) // 2
    corpus = [tmp_path / "a.txt", tmp_path / "b.parquet"]
    corpus[0].write_text("\n".join(t.replace("\n", " ") for t in pool_texts[:half]) + "\n", encoding="utf-8")
    pq.write_table(pa.table({"text": pa.array(pool_texts[half:], pa.string())}), corpus[1])
    corpus_tasks = [{"corpus": str(p), "column": "text", "batch_size": 1000} for p in corpus]
    for name, ex in (("spark", SparkExecutor(spark)), ("local", LocalExecutor())):
        for tasks, fn in ((pool_tasks, ngram_count_task), (corpus_tasks, corpus_ngram_task)):
            before = ex.driver_counter.driver_rows
            found = mine_bigrams(ex, tasks, fn, NGRAM_SCHEMA, min_count=3, min_pmi=4.0)
            assert list(found) == [""], name
            mined, words = found[""]
            assert words == total, (name, fn.__name__)
            assert [(b.text, b.count, b.pmi) for b in mined] == want, (name, fn.__name__)
            # the driver got the mined rows and one total: no vocabulary
            assert ex.driver_counter.driver_rows - before == len(want) + 1, (name, fn.__name__)

    # Above the bound on mined bigrams: one line naming the thresholds to raise.
    import curate.metaclip.bigram_mining as bm
    from curate.errors import DatasetError

    old, bm.MAX_MINED_BIGRAMS = bm.MAX_MINED_BIGRAMS, 10
    try:
        with pytest.raises(DatasetError, match="raise --bigram-min-count or --bigram-min-pmi"):
            mine_bigrams(LocalExecutor(), pool_tasks, ngram_count_task, NGRAM_SCHEMA, min_count=3, min_pmi=4.0)
    finally:
        bm.MAX_MINED_BIGRAMS = old


def test_a_build_without_a_wordfreq_list_records_the_zero_it_was_given(tmp_path):
    """`--wordfreq-top 0` (no top-N list) is recorded as 0 in the build's parameters, not null."""
    path = tmp_path / "m.json"
    run_build(path, wordnet=False, wordfreq_top=0)
    assert json.loads((tmp_path / "m.json.build.json").read_text())["params"]["wordfreq_top"] == 0
