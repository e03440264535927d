"""CIFAR-10's class names against real captions (Flickr8k) and web alt-text from
../shared/data: counts equal MetaCLIP's plain substring loop, and per-class accuracy of a
`curate eval` run is joined and rank-correlated with the training subset's frequency."""

from __future__ import annotations

import csv

import pyarrow.parquet as pq
import pytest
from scipy.stats import spearmanr

from curate.coverage import from_eval_folder, run_coverage
from curate.coverage.job import subset_uids_path
from curate.engine import LocalExecutor
from curate.metaclip.matching import naive_match
from curate.subset import write_subset
from curate.uid import derive_uid

from .conftest import write_pool


@pytest.fixture(scope="module")
def real_pool(shared_data, tmp_path_factory):
    for p in ("cifar10_test", "flickr8k/all_captions_text_only.csv", "alttext/web_alttext_10k.parquet"):
        if not (shared_data / p).exists():
            pytest.skip(f"{p} not in {shared_data}")
    with open(shared_data / "flickr8k" / "all_captions_text_only.csv", encoding="utf-8", newline="") as f:
        flickr = [r[1] for r in list(csv.reader(f))[1:]]
    alt = [t or "" for t in pq.read_table(shared_data / "alttext" / "web_alttext_10k.parquet").column("TEXT").to_pylist()]
    texts = flickr + alt
    ds = write_pool(tmp_path_factory.mktemp("real") / "pool", texts, shards=4, prefix="http://real.test/")
    uids = [derive_uid(f"http://real.test/{i}.jpg", t) for i, t in enumerate(texts)]
    write_subset(ds, "flickr", sorted(set(uids[:len(flickr)])))
    write_subset(ds, "alttext", sorted(set(uids[len(flickr):])))
    return ds, texts, len(flickr), shared_data / "cifar10_test"


def test_cifar10_names_in_flickr8k_and_alttext(real_pool, tmp_path):
    from curate.evaluate import evaluate

    ds, texts, n_flickr, cifar = real_pool
    concepts = from_eval_folder(cifar)
    assert concepts.names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    # per-class accuracy of a model "trained on" alttext: a locally built random-weight model
    ev = evaluate(None, "curate-tiny", zeroshot=[cifar], max_per_class=3, output=tmp_path / "alt.eval.json")
    # and one that a subset's manifest lists, as `curate eval` links it after `curate train`
    from curate.subset import append_subset_manifest

    ev2 = evaluate(None, "curate-tiny", zeroshot=[cifar], max_per_class=3, seed=1, output=tmp_path / "fl.eval.json")
    append_subset_manifest(ds, "flickr", "evaluations", {"results": ev2["results_path"], "seed": 1})
    summary = run_coverage(ds, concepts, LocalExecutor(), name="cifar10", pool="all",
                           subsets={s: subset_uids_path(ds, s) for s in ("flickr", "alttext")},
                           accuracy_files={"alttext": [ev["results_path"]]})
    rows = ds.read("coverage/cifar10").to_pylist()
    by = {(r["subset"], r["concept"]): r for r in rows}
    # independent count: MetaCLIP's plain `" e " in spacing(text)` loop, caption by caption
    matched = [naive_match(t, concepts.names) for t in texts]
    for i, c in enumerate(concepts.names):
        pool = sum(i in m for m in matched)
        fl = sum(i in m for m in matched[:n_flickr])
        assert by[("flickr", c)]["pool_count"] == pool, c
        assert by[("flickr", c)]["count"] == fl, c
        assert by[("alttext", c)]["count"] == pool - fl, c
    assert by[("flickr", "dog")]["count"] > 1000  # Flickr8k is full of dogs
    assert by[("flickr", "dog")]["pool_rank"] == 1
    assert by[("flickr", "dog")]["pool_size"] == len(texts)
    # accuracy: the eval's per-class recall, and Spearman of it against alttext counts
    recall = ev["zeroshot"]["cifar10_test"]["per_class_recall"]
    acc = {c: by[("alttext", c)]["accuracy"] for c in concepts.names}
    assert acc == pytest.approx(recall)
    recall2 = ev2["zeroshot"]["cifar10_test"]["per_class_recall"]
    assert {c: by[("flickr", c)]["accuracy"] for c in concepts.names} == pytest.approx(recall2)
    info = summary["sources"]["caption"]["subsets"]["alttext"]["accuracy"]
    assert info["classes"] == 10 and info["evaluations"][0]["set"] == "cifar10_test"
    counts = [by[("alttext", c)]["count"] for c in concepts.names]
    rho = spearmanr(counts, [recall[c] for c in concepts.names]).statistic
    if len(set(recall.values())) > 1:
        assert info["spearman_count"] == pytest.approx(rho)
    assert (ds.table_dir("coverage/cifar10") / "_accuracy.png").stat().st_size > 5000
    # the report on the alt-text subset shows the accuracy scatter and the correlation
    from curate.report import build_report

    page = build_report(ds, "alttext", out=tmp_path / "alt.html").read_text()
    sec = page[page.index("<h2 id=coverage>"):page.index("<h2 id=galleries>")]
    assert "alt='accuracy against concept frequency' src='data:image/png;base64," in sec
    if info["spearman_count"] is not None:
        assert f"{info['spearman_count']:+.3f} (10 classes)" in sec
    assert "Concepts starved by alttext (caption)" in sec and "<td class=l>dog</td><td>7,303</td>" in sec
