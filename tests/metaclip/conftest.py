"""Fixtures for the MetaCLIP tests: real captions, a big offline metadata list, sample tables."""

from __future__ import annotations

import csv
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.tables import Dataset
from curate.uid import derive_uid


def load_real_captions(data) -> dict[str, list[str]]:
    """Every caption of ../shared/data, by source (alt-text and Flickr/COCO human captions)."""
    out = {}
    with open(data / "flickr8k" / "all_captions_text_only.csv", encoding="utf-8", newline="") as f:
        out["flickr8k_all"] = [r[1] for r in list(csv.reader(f))[1:]]
    with open(data / "flickr8k" / "captions.csv", encoding="utf-8", newline="") as f:
        out["flickr8k"] = [r["caption"] for r in csv.DictReader(f)]
    out["web_alttext"] = [t or "" for t in
                          pq.read_table(data / "alttext" / "web_alttext_10k.parquet").column("TEXT").to_pylist()]
    with open(data / "alttext" / "cc3m_validation.tsv", encoding="utf-8", newline="") as f:
        out["cc3m"] = [line.rstrip("\r\n").split("\t")[0] for line in f]
    coco = json.loads((data / "alttext" / "coco_val2017_captions.json").read_text(encoding="utf-8"))
    out["coco"] = [a["caption"] for a in coco["annotations"]]
    return out


@pytest.fixture(scope="session")
def real_captions(shared_data) -> dict[str, list[str]]:
    return load_real_captions(shared_data)


@pytest.fixture(scope="session")
def big_metadata(tmp_path_factory, real_captions) -> tuple[list[str], dict]:
    """>= 100,000 entries built offline: numbers, WordNet, wordfreq top 100k, bigrams mined
    from the real captions."""
    from curate.metaclip.jobs import run_build
    from curate.wordnet import wordnet_root

    if not (wordnet_root() / "data.noun").is_file():
        pytest.skip("wordnet-base not installed")
    d = tmp_path_factory.mktemp("metadata")
    corpus = d / "corpus.txt"
    corpus.write_text("\n".join(t.replace("\n", " ").replace("\r", " ")
                                for texts in real_captions.values() for t in texts), encoding="utf-8")
    build = run_build(d / "metadata.json", corpus=[str(corpus)], bigram_min_count=3, bigram_min_pmi=6.0)
    entries = json.loads((d / "metadata.json").read_text(encoding="utf-8"))
    assert len(entries) == build["entries"] >= 100_000
    return entries, build


def samples_table(texts: list[str], prefix: str = "http://example.test/") -> pa.Table:
    """A valid samples table for ``texts`` (sorted by uid, like ingest writes it)."""
    n = len(texts)
    urls = [f"{prefix}{i}.jpg" for i in range(n)]
    t = pa.table({
        "uid": [derive_uid(u, x) for u, x in zip(urls, texts)], "url": urls, "text": texts,
        "source_file": ["/data/pool.parquet"] * n, "source_row": list(range(n)),
        "original_width": pa.nulls(n, pa.int32()), "original_height": pa.nulls(n, pa.int32()),
        "extra": pa.nulls(n, pa.string()),
    })
    return t.sort_by("uid")


def write_samples(root, texts: list[str], shards: int = 1) -> Dataset:
    ds = Dataset(root)
    t = samples_table(texts)
    ds.write_table("samples", t, schema="samples", rows_per_shard=max(1, -(-t.num_rows // shards)))
    assert len(ds.shards("samples")) == shards
    return ds


@pytest.fixture
def make_samples():
    """``make_samples(root, texts, shards)`` -> Dataset with a samples table of ``texts``."""
    return write_samples
