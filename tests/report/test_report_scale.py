"""The report at pool scale: the driver never reads a per-row table (the engine counts, bins and
picks), what reaches it does not grow with the pool, and Spark gives the same report data as
the in-process engine."""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pytest

from curate.engine import LocalExecutor
from curate.report import collect
from curate.subset import write_subset
from curate.tables import Dataset, load_schema

SHARD_ROWS = 1000
# tables with a row per sample (or more): the driver must not read any of them
PER_ROW = ("samples", "downloads", "decisions/", "embeddings/", "clusters/", "metadata_matches", "text_stats",
           "subsets/")


def _uid(i: int) -> str:
    return hashlib.md5(str(i).encode()).hexdigest()


CAPTIONS = ("a small red house by the lake", "ein kleines rotes Haus am See", "une petite maison rouge au bord du lac",
            "una pequeña casa roja junto al lago")


def _pool(root, n: int, text_stats: bool = True) -> Dataset:
    """n samples: downloads (every 10th failed), embeddings, clusters, metadata matches,
    text_stats (else captions in four languages), and a filter-like run (kept / low score /
    perceptual copies of a few survivors) whose kept uids are subsets/curated."""
    rng = np.random.default_rng(n)
    ds = Dataset(root)
    uids = sorted(_uid(i) for i in range(n))
    words = rng.integers(1, 80, n)
    texts = ([" ".join(["w"] * int(w)) for w in words] if text_stats else
             [CAPTIONS[int(i)] for i in rng.integers(0, len(CAPTIONS), n)])
    ds.write_table("samples", pa.table({
        "uid": uids, "url": [f"http://127.0.0.1:1/{i}" for i in range(n)], "text": texts,
        "source_file": ["pool.parquet"] * n, "source_row": pa.array(range(n), pa.int64()),
        "original_width": pa.nulls(n, pa.int32()), "original_height": pa.nulls(n, pa.int32()),
        "extra": pa.nulls(n, pa.string())}), schema="samples", rows_per_shard=SHARD_ROWS)
    ok = np.arange(n) % 10 != 3
    ds.write_table("downloads", pa.table({
        "uid": uids, "status": np.where(ok, "success", "failed").tolist(),
        "error_class": [None if o else ("http_404" if i % 20 == 3 else "timeout") for i, o in enumerate(ok)],
        "error_message": pa.nulls(n, pa.string()), "sha256": pa.nulls(n, pa.string()),
        "width": pa.array([8] * n, pa.int32()), "height": pa.array([8] * n, pa.int32()),
        "original_width": pa.array([8] * n, pa.int32()), "original_height": pa.array([8] * n, pa.int32()),
        "shard": pa.nulls(n, pa.string()), "key": pa.nulls(n, pa.string()), "attempts": pa.array([1] * n, pa.int32())},
        schema=load_schema("downloads").arrow()), schema="downloads", rows_per_shard=SHARD_ROWS)
    good = [u for u, o in zip(uids, ok) if o]
    m = len(good)
    x = rng.normal(size=(m, 4)).astype(np.float16)
    emb = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 4)
    score = rng.normal(0.25, 0.05, m).astype(np.float32)
    ds.write_table("embeddings/m", pa.table({"uid": good, "image_embedding": emb, "text_embedding": emb,
                                             "clip_score": score}), schema="embeddings", rows_per_shard=SHARD_ROWS)
    ds.write_table("clusters/km", pa.table({"uid": good, "cluster_id": pa.array(rng.integers(0, 12, m), pa.int32())}),
                   rows_per_shard=SHARD_ROWS)
    entries = [sorted(set(rng.integers(0, 50, int(k)).tolist())) for k in rng.integers(0, 4, n)]
    ds.write_table("metadata_matches", pa.table({"uid": uids, "entry_ids": pa.array(entries, pa.list_(pa.int32()))}),
                   rows_per_shard=SHARD_ROWS)
    if text_stats:
        ds.write_table("text_stats", pa.table({"uid": uids, "language": [("en", "de", None, "zh")[i % 4]
                                                                          for i in range(n)]}),
                       rows_per_shard=SHARD_ROWS)
    # the run: survivors 0..4 each have a group of copies (group j: 3 + j copies, distances 1..)
    reason, value, detail = [], [], []
    copies: dict[str, tuple[str, int]] = {}
    nxt = 5
    for j in range(5):
        for c in range(3 + j):
            copies[good[nxt]] = (good[j], c % 4 + 1)
            nxt += 1
    for i, u in enumerate(good):
        if u in copies:
            reason.append("perceptual_duplicate"), value.append(float(copies[u][1])), detail.append(copies[u][0])
        elif score[i] < 0.2:
            reason.append("low_clip_score"), value.append(float(score[i])), detail.append(None)
        else:
            reason.append("kept"), value.append(float(score[i])), detail.append(None)
    dec = pa.table({"uid": good, "stage": ["filt"] * m, "kept": [r == "kept" for r in reason], "reason": reason,
                    "value": value, "detail": pa.array(detail, pa.string())}, schema=load_schema("decisions").arrow())
    ds.write_table("decisions/filt", dec, schema="decisions", rows_per_shard=SHARD_ROWS)
    kept = [u for u, r in zip(good, reason) if r == "kept"]
    write_subset(ds, "curated", kept, {"stage": "filter", "run": "filt", "decisions": "decisions/filt",
                                       "reasons": {r: reason.count(r) for r in set(reason)}})
    return ds


@pytest.fixture
def no_driver_reads(monkeypatch):
    """Dataset.read of a per-row table fails the test."""
    real = Dataset.read

    def read(self, name, *args, **kwargs):
        assert not name.startswith(PER_ROW), f"the driver read the per-row table {name}"
        return real(self, name, *args, **kwargs)

    monkeypatch.setattr(Dataset, "read", read)


def _collect(ds: Dataset, executor=None) -> dict:
    return collect(ds, "curated", executor=executor)


def test_the_driver_sees_counts_bins_and_picks_not_rows(tmp_path, no_driver_reads):
    sizes = (2000, 8000)
    seen = {}
    for n in sizes:
        ds = _pool(tmp_path / str(n), n)
        ex = LocalExecutor()
        data = _collect(ds, ex)
        seen[n] = (ex.driver_counter.driver_rows, dict(ex.driver_counter.by_call))
        d = data["distributions"]
        assert set(d) == {"caption_words", "clip_score", "language", "cluster_sizes", "metadata_entries"}
        downloaded = n - n // 10
        assert data["before_count"] == downloaded and d["clip_score"]["n"]["pool"] == downloaded
        assert d["caption_words"]["n"]["pool"] == downloaded and d["cluster_sizes"]["total"]["pool"] == downloaded
        assert data["funnel"][1]["reasons"] == {"http_404": n // 20, "timeout": n // 20}
        gal = {grp["reason"]: grp for grp in data["galleries"][0]["groups"]}
        assert sum(g["count"] for g in gal.values()) == downloaded
        assert all(len(g["items"]) == 6 for g in gal.values())
        sizes_shown = [g["size"] for g in data["perceptual_groups"]]
        assert sizes_shown == [8, 7, 6, 5, 4]  # largest first, each survivor + its copies
        assert all([it["distance"] for it in g["removed"]] == sorted(it["distance"] for it in g["removed"])
                   and len(g["removed"]) == min(5, g["size"] - 1) for g in data["perceptual_groups"])
        assert [len(set(data["galleries"][0]["groups"][0]["items"][0]["text"].split()))] == [1]
    (small, calls_small), (large, calls_large) = seen[sizes[0]], seen[sizes[1]]
    # bins, reasons, languages, picks, per-value counts: a few hundred rows at either size
    assert large < 600, calls_large
    assert large <= small + 60, (calls_small, calls_large)


def test_a_pick_is_the_smallest_salted_hashes_and_stable(tmp_path):
    from curate.report.frames import pick_hash, stable_sample

    ex = LocalExecutor()
    uids = [_uid(i) for i in range(5000)]
    frame = ex.frame_from_table(pa.table({"uid": uids, "g": [("a", "b")[i % 2] for i in range(5000)]}))
    picks = stable_sample(frame, 7, {("a",): 2500, ("b",): 2500}, lambda g: "salt" + g[0], groups=("g",))
    for g in ("a", "b"):
        mine = [u for i, u in enumerate(uids) if ("a", "b")[i % 2] == g]
        h = pick_hash(pa.array(mine), "salt" + g)
        want = [mine[i] for i in np.argsort(h, kind="stable")[:7]]
        assert picks[(g,)].column("uid").to_pylist() == want
    # a count far above the truth thins too much at first; the retry still finds k
    again = stable_sample(frame, 7, {("a",): 2_500_000}, lambda g: "salt" + g[0], groups=("g",))
    assert again[("a",)].equals(picks[("a",)])


def _language_shares(ds: Dataset, uids: list[str], k: int) -> tuple[dict, int]:
    """fastText's labels of the ``k`` captions of ``uids`` with the smallest salted hashes."""
    from curate.filters.langid import load_model, predict_languages
    from curate.report.frames import pick_hash

    texts = dict(zip(*ds.read("samples", columns=["uid", "text"]).to_pydict().values()))
    h = pick_hash(pa.array(uids), "lang")
    picked = [uids[i] for i in np.lexsort((np.array(uids), h))[:k]]
    labels, _ = predict_languages([texts[u] for u in picked], load_model())
    got = labels.to_pylist()
    return {lab: got.count(lab) / len(got) for lab in set(got)}, len(got)


@pytest.mark.parametrize("engine", ["local", pytest.param("spark", marks=pytest.mark.extended)])
def test_languages_without_text_stats_are_fasttext_on_each_sides_stable_sample(tmp_path, monkeypatch, engine,
                                                                               request):
    """No text_stats table: each side's language shares are fastText's labels of its
    ``LANGUAGE_SAMPLE`` captions with the smallest salted uid hashes (both sides picked in
    one pass over the samples tagged with their sides)."""
    pytest.importorskip("fasttext")
    from curate.report import distributions
    from curate.subset import read_subset

    monkeypatch.setattr(distributions, "LANGUAGE_SAMPLE", 60)
    ds = _pool(tmp_path / "pool", 1500, text_stats=False)
    ex = LocalExecutor()
    if engine == "spark":
        from curate.engine.spark import SparkExecutor

        ex = SparkExecutor(request.getfixturevalue("spark"))
    lang = _collect(ds, ex)["distributions"]["language"]
    d = ds.read("downloads", columns=["uid", "status"]).to_pydict()
    pool = [u for u, st in zip(d["uid"], d["status"]) if st == "success"]
    for side, uids in (("pool", pool), ("curated", read_subset(ds, "curated"))):
        shares, n = _language_shares(ds, uids, 60)
        assert lang[f"n_{side}"] == n == 60
        assert dict(zip(lang["labels"], lang[side])) == {k: shares.get(k, 0) for k in lang["labels"]}
        assert set(shares) <= set(lang["labels"]) and len(shares) >= 3, shares


@pytest.mark.extended  # the frame operations it uses match in-process ones in the default suite
def test_spark_report_data_equals_in_process(tmp_path, spark):
    from curate.engine.spark import SparkExecutor

    ds = _pool(tmp_path / "pool", 3000)
    local, on_spark = _collect(ds), _collect(ds, SparkExecutor(spark))
    for key in ("funnel", "before_count", "after_count", "galleries", "perceptual_groups"):
        assert local[key] == on_spark[key], key
    for name, d in local["distributions"].items():
        s = on_spark["distributions"][name]
        for field, v in d.items():
            if field in ("counts",):
                assert set(v) == set(s[field]) and all(np.array_equal(v[k], s[field][k]) for k in v), name
            elif isinstance(v, np.ndarray):
                assert np.array_equal(v, s[field]), (name, field)
            elif field == "total":
                assert v == pytest.approx(s[field]), name
            else:
                assert v == s[field], (name, field)
