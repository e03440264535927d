"""Property tests for the readers: arbitrary caption text written as CSV or JSONL by the
standard writers comes back exactly, every row once, in order (quotes, commas, newlines,
Unicode line separators, emoji, control characters included)."""

from __future__ import annotations

import csv
import json
import tempfile
from pathlib import Path

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from curate.ingest.stage import prepare_batch
from curate.readers import ReaderOptions, read_file_raw
from curate.text import normalize_text

captions = st.lists(st.text(max_size=60), min_size=1, max_size=12)
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _read(path: Path, fmt: str) -> list[dict]:
    batches = list(read_file_raw(str(path), ReaderOptions(header="yes" if fmt == "csv" else "auto"), fmt))
    return pa.Table.from_batches(batches).to_pylist() if batches else []


def _check(rows: list[dict], texts: list[str]) -> None:
    assert [r["source_row"] for r in rows] == list(range(len(texts)))  # every row once, in order
    for r, t in zip(rows, texts):
        if r["reason"] is None:
            assert r["text"] == t and r["url"] == f"http://example.com/{r['source_row']}.jpg"
        else:  # a row the format cannot carry is a reject with a reason, never lost or altered
            assert r["detail"]


@SETTINGS
@given(texts=captions)
def test_csv_round_trip(texts):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "pool.csv"
        with open(p, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["url", "caption"])
            for i, t in enumerate(texts):
                w.writerow([f"http://example.com/{i}.jpg", t])
        rows = _read(p, "csv")
    _check(rows, texts)
    # CSV cannot carry a lone NUL or carriage-return-only differences; everything else is exact
    assert all(r["reason"] is None for r, t in zip(rows, texts) if "\x00" not in t and "\r" not in t)


@SETTINGS
@given(texts=captions)
def test_jsonl_round_trip(texts):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "pool.jsonl"
        with open(p, "w", encoding="utf-8") as f:
            for i, t in enumerate(texts):
                f.write(json.dumps({"url": f"http://example.com/{i}.jpg", "caption": t}, ensure_ascii=False) + "\n")
        rows = _read(p, "jsonl")
    _check(rows, texts)
    assert all(r["reason"] is None for r in rows)  # JSON carries any string


@SETTINGS
@given(texts=captions)
def test_ingest_stage_keeps_every_row_and_normalises_like_the_reference(texts):
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "pool.jsonl"
        with open(p, "w", encoding="utf-8") as f:
            for i, t in enumerate(texts):
                f.write(json.dumps({"url": f"http://example.com/{i}.jpg", "caption": t}) + "\n")
        raw = list(read_file_raw(str(p), ReaderOptions(), "jsonl"))
    staged, counts = prepare_batch(raw[0], str(p), 0)
    assert counts["samples"] + counts["rejects"] == counts["rows"] == len(texts)
    expected = normalize_text(pa.array(texts, pa.string())).to_pylist()
    assert staged.column("text").to_pylist() == expected
