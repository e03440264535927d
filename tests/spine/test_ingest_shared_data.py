"""Ingest of the real alt-text and Flickr8k files in ../shared/data (skips when absent)."""

import hashlib
import json
from pathlib import Path

import pytest

from curate.ingest.job import IngestConfig, run_ingest
from curate.engine.spark import SparkExecutor
from curate.readers import ReaderOptions
from curate.sql import query
from curate.tables import Dataset

pytestmark = pytest.mark.shared_data


def digest(folder: Path) -> dict:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.parquet"))}


def test_real_alttext_pools_count_exactly_and_keep_noise(spark, shared_data, tmp_path):
    alt = shared_data / "alttext"
    inputs = [str(alt / "web_alttext_10k.parquet"), str(alt / "cc3m_validation.tsv"),
              str(alt / "coco_val2017_captions.json")]
    coco = json.loads((alt / "coco_val2017_captions.json").read_text())
    expected_rows = 10_000 + 15_833 + len(coco["annotations"])
    out = tmp_path / "alt"
    m = run_ingest(SparkExecutor(spark), IngestConfig(inputs=inputs, output=str(out), rows_per_shard=20_000))
    c = m["counts"]
    assert c["input_rows"] == expected_rows
    assert c["kept"] + c["duplicates"] + c["rejects"] == expected_rows
    ds = Dataset(out)
    assert ds.count("samples") == c["kept"] and ds.count("duplicates") == c["duplicates"]
    per_file = {Path(r["source_file"]).name: r["n"] for r in query(
        out, "SELECT source_file, count(*) AS n FROM (SELECT source_file FROM samples UNION ALL "
             "SELECT source_file FROM duplicates UNION ALL SELECT source_file FROM rejects) GROUP BY 1").to_pylist()}
    assert per_file == {"web_alttext_10k.parquet": 10_000, "cc3m_validation.tsv": 15_833,
                        "coco_val2017_captions.json": len(coco["annotations"])}
    # The noise survives normalisation: HTML, non-Latin scripts, emoji.
    has = lambda where: query(out, f"SELECT count(*) AS n FROM samples WHERE {where}").column(0)[0].as_py()
    assert has("text LIKE '%<%>%'") > 0
    assert has("regexp_matches(text, '[\\x{0400}-\\x{04FF}\\x{0600}-\\x{06FF}\\x{3040}-\\x{30FF}\\x{4E00}-\\x{9FFF}]')") > 0
    assert has("regexp_matches(text, '[\\x{1F300}-\\x{1FAFF}]')") > 0
    assert has("text <> trim(text) OR text LIKE '%  %'") == 0
    # COCO sizes came through.
    assert has("original_width IS NOT NULL") == len(coco["annotations"]) - c["duplicate_reasons"].get("duplicate_url_text", 0) \
        or has("original_width IS NOT NULL") > 20_000
    # Rerun: byte-identical shards.
    out2 = tmp_path / "alt2"
    run_ingest(SparkExecutor(spark), IngestConfig(inputs=inputs, output=str(out2), rows_per_shard=20_000))
    for t in ("samples", "rejects", "duplicates"):
        assert digest(out / t) == digest(out2 / t)


def test_flickr8k_image_folder_with_captions(spark, shared_data, tmp_path):
    fl = shared_data / "flickr8k"
    out = tmp_path / "flickr"
    m = run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(fl / "images")], output=str(out), format="imagefolder",
                                       options=ReaderOptions(captions=str(fl / "captions.csv"))))
    lines = sum(1 for _ in open(fl / "captions.csv", encoding="utf-8")) - 1
    c = m["counts"]
    assert c["input_rows"] == lines
    assert c["kept"] + c["duplicates"] + c["rejects"] == lines
    r = query(out, "SELECT count(DISTINCT url) AS images, min(original_width) AS w FROM samples").to_pylist()[0]
    assert r["images"] == 1000 and r["w"] > 0
    assert query(out, "SELECT count(*) FROM samples WHERE url NOT LIKE 'file://%'").column(0)[0].as_py() == 0
