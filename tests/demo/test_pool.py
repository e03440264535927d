"""The procedural pool: labelled noise is what it claims to be, output is deterministic,
the server serves it on 127.0.0.1."""

from __future__ import annotations

import hashlib
import io
import urllib.error
import urllib.request

import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.demo.pool import (COLOURS, SHAPES, NoiseRates, PoolSpec, bind_pool, generate_clean_shards,
                              generate_eval, generate_pool)
from curate.demo.server import StaticServer


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    out = tmp_path_factory.mktemp("gen")
    meta = generate_pool(out, PoolSpec(n=400, seed=3))
    return out, meta, pq.read_table(out / "truth.parquet").to_pylist()


def _sha(p):
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_noise_is_labelled_and_true(pool):
    out, meta, rows = pool
    assert sum(meta["noise"].values()) == 400
    rates = NoiseRates()
    for kind in ("swapped", "non_english", "spam"):  # drawn at their rates (binomial, wide margin)
        assert abs(meta["noise"][kind] / 400 - getattr(rates, kind)) < 0.06
    img = out / "www" / "img"
    by_file = {r["url"].rsplit("/", 1)[1]: r for r in rows}
    clean_by_hash = {}
    for f, r in by_file.items():
        if r["noise"] == "clean":
            clean_by_hash.setdefault(_sha(img / f), []).append(r)
    for f, r in by_file.items():
        kind = r["noise"]
        if kind == "broken":
            assert not (img / f).exists()
            continue
        with Image.open(img / f) as im:
            size = im.size
        if kind == "tiny":
            assert size == (12, 12)
        elif kind == "extreme_aspect":
            assert size == (256, 24)
        elif kind == "near_duplicate":  # resized (down or up) and/or cropped, or as it was
            assert 32 <= min(size) and max(size) <= 128 and size == (r["width"], r["height"])
            assert 1 <= len(r["edits"].split("+")) <= 2 and r["source"] != f
        else:
            assert size == (64, 64) and r["edits"] == ""
        if kind == "duplicate":  # same bytes and caption as a clean sample
            twins = clean_by_hash.get(_sha(img / f), [])
            assert twins and twins[0]["text"] == r["text"]
        if kind == "near_duplicate":  # a different file whose caption a clean sample has
            assert _sha(img / f) not in clean_by_hash
            assert any(c["text"] == r["text"] for c in by_file.values() if c["noise"] == "clean")
        words = set(r["text"].replace(",", " ").split())
        if kind in ("clean", "duplicate", "near_duplicate", "tiny", "extreme_aspect"):
            assert r["shape"] in words and r["colour"] in words
        if kind == "swapped":  # the caption of an object of another colour or shape
            assert not (r["shape"] in words and r["colour"] in words)


def test_non_english_and_spam_captions_are_what_fasttext_sees(pool):
    from curate.filters.langid import load_model, predict_languages

    _, _, rows = pool
    foreign = [r["text"] for r in rows if r["noise"] == "non_english"]
    english = [r["text"] for r in rows if r["noise"] == "clean"][:50]
    labels, _ = predict_languages(foreign, load_model())
    assert sum(lab != "en" for lab in labels.to_pylist()) >= 0.9 * len(foreign)
    labels, _ = predict_languages(english, load_model())
    assert sum(lab == "en" for lab in labels.to_pylist()) >= 0.8 * len(english)


def test_generation_is_deterministic(tmp_path, pool):
    out, _, rows = pool
    again = tmp_path / "again"
    generate_pool(again, PoolSpec(n=400, seed=3))
    assert pq.read_table(again / "truth.parquet").to_pylist() == rows
    for f in sorted((out / "www" / "img").iterdir())[:30]:
        assert _sha(f) == _sha(again / "www" / "img" / f.name)


def test_eval_and_seed_sets(tmp_path):
    meta = generate_eval(tmp_path / "eval", seed=5, per_class=2, retrieval_n=10)
    classes = sorted(p.name for p in (tmp_path / "eval" / "zeroshot").iterdir())
    assert len(classes) == len(SHAPES) * len(COLOURS) == meta["classes"]
    assert all(len(list((tmp_path / "eval" / "zeroshot" / c).glob("*.jpg"))) == 2 for c in classes)
    lines = (tmp_path / "eval" / "retrieval" / "captions.csv").read_text().splitlines()
    assert lines[0] == "image,caption" and len(lines) == 11
    import tarfile

    shards = generate_clean_shards(tmp_path / "seed", 30, seed=1, per_shard=20)
    names = [m.name for s in shards for m in tarfile.open(s)]
    assert len(shards) == 2 and len(names) == 60
    assert sorted(n.rsplit(".", 1)[1] for n in names) == ["jpg"] * 30 + ["txt"] * 30


def test_server_serves_pool_on_loopback(pool):
    out, _, rows = pool
    with StaticServer(out / "www") as base:
        assert base.startswith("http://127.0.0.1:")
        path = bind_pool(out, base)
        urls = pq.read_table(path).column("url").to_pylist()
        ok = next(u for u, r in zip(urls, rows) if r["noise"] == "clean")
        with urllib.request.urlopen(ok, timeout=10) as resp:
            data = resp.read()
        Image.open(io.BytesIO(data)).verify()
        broken = next((u for u, r in zip(urls, rows) if r["noise"] == "broken"), None)
        if broken:
            with pytest.raises(urllib.error.HTTPError) as e:
                urllib.request.urlopen(broken, timeout=10)
            assert e.value.code == 404


def test_distinct_pictures_are_distinct_to_a_perceptual_hash_and_copies_are_not(pool):
    """What makes the demo a test of perceptual dedup: two distinct pictures (even of the same
    "large red circle") are far apart in pHash, a web-style copy is close to its source."""
    import imagehash
    import numpy as np

    out, _, rows = pool
    img = out / "www" / "img"
    shown = [r for r in rows if r["noise"] not in ("broken", "tiny", "extreme_aspect")]

    def bits(name):
        with Image.open(img / name) as im:
            return imagehash.phash(im.convert("RGB")).hash.ravel()

    h = {r["url"].rsplit("/", 1)[1]: bits(r["url"].rsplit("/", 1)[1]) for r in shown}
    originals = sorted({r["source"] for r in shown} & set(h))
    b = np.array([h[f] for f in originals])
    d = (b[:, None, :] != b[None, :, :]).sum(-1)
    np.fill_diagonal(d, 64)
    near = (d <= 10).any(1)  # a distinct picture within the demo recipe's radius
    assert d.min() > 6 and near.sum() <= 0.01 * len(b), (d.min(), near.sum(), len(b))
    copies = [int((h[r["url"].rsplit("/", 1)[1]] != h[r["source"]]).sum()) for r in shown if r["noise"] == "near_duplicate"]
    assert copies and sum(c <= 10 for c in copies) >= 0.85 * len(copies), copies


def test_a_resumed_demo_serves_the_pool_at_the_first_runs_address(tmp_path):
    """A sample's uid hashes its URL: a resumed demo must serve on the same port, or say why not."""
    import json

    import pyarrow as pa

    from curate.demo.steps import serve_pool
    from curate.errors import DatasetError
    from curate.tables import Dataset

    (tmp_path / "www").mkdir()
    ds = Dataset(tmp_path / "dataset")
    first = serve_pool(tmp_path, ds)
    url = first.start()
    first.stop()
    (tmp_path / "_served.json").write_text(json.dumps({"url": url}))
    again = serve_pool(tmp_path, ds)
    assert again.start() == url
    try:  # the port taken: without samples a new one is fine, with samples it is an error
        other = serve_pool(tmp_path, ds)
        assert other.url != url
        other.httpd.server_close()
        ds.write_table("samples", pa.table({"uid": ["0" * 32]}))
        with pytest.raises(DatasetError, match="taken now"):
            serve_pool(tmp_path, ds)
    finally:
        again.stop()
