"""`curate stats` after a real download that was first refused by the address policy and then
retried with --allow-network (issue 16, points 8 and 9): the download summary says what to do,
and stats counts samples and their outcomes, not img2dataset's raw attempt rows."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.commands.download import blocked_hint
from curate.tables import Dataset
from curate.uid import derive_uid

N = 12


def _jpeg(i: int) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (48, 40), (20 * i % 255, 90, 160)).save(buf, format="JPEG")
    return buf.getvalue()


@pytest.fixture
def loopback_server():
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            m = re.fullmatch(r"/(\d+)\.jpg", self.path)
            body = _jpeg(int(m.group(1))) if m else b""
            self.send_response(200 if m else 404)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def _curate(*args, columns: int | None = None):
    env = dict(os.environ)
    env.pop("COLUMNS", None)
    if columns:
        env["COLUMNS"] = str(columns)
    r = subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True, text=True,
                       timeout=600, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout + r.stderr


def test_blocked_hint_names_allow_network():
    assert blocked_hint({"http_404": 3}) is None
    line = blocked_hint({"blocked_address": 12, "http_404": 1})
    assert "\n" not in line and line.startswith("12 rows") and "--allow-network" in line and "--retry-failed" in line
    line = blocked_hint({"blocked_store_url": 3})
    assert "\n" not in line and line.startswith("3 rows") and "--allow-store-prefix" in line
    assert "--retry-failed" in line
    assert len(blocked_hint({"blocked_address": 1, "blocked_store_url": 1}).splitlines()) == 2
    line = blocked_hint({"blocked_file_url": 150})
    assert line.startswith("150 rows name local files") and "--retry-failed --allow-file-urls" in line


@pytest.mark.slow
def test_stats_counts_samples_not_attempts_and_wraps_by_words(tmp_path, loopback_server):
    ds = Dataset(tmp_path / "a-dataset-with-a-rather-long-folder-name")
    urls = [f"{loopback_server}/{i}.jpg" for i in range(N - 1)] + [f"{loopback_server}/missing"]
    texts = [f"picture number {i}" for i in range(N)]
    ds.write_table("samples", pa.table({
        "uid": [derive_uid(u, t) for u, t in zip(urls, texts)], "url": urls, "text": texts,
        "source_file": ["pool.parquet"] * N, "source_row": pa.array(range(N), pa.int64()),
        "original_width": pa.nulls(N, pa.int32()), "original_height": pa.nulls(N, pa.int32()),
        "extra": pa.nulls(N, pa.string())}), schema="samples")

    # as the README's first command: the loopback server is refused, every row, and the summary says why
    out = _curate("download", str(ds.root), "--engine", "local", "--processes", "1", "--threads", "4")
    assert f"0 success, {N} failed" in out
    assert blocked_hint({"blocked_address": N}) in out
    out = _curate("download", str(ds.root), "--engine", "local", "--processes", "1", "--threads", "4",
                  "--retry-failed", "--allow-network", "127.0.0.1/32")
    assert f"{N - 1} success, 1 failed" in out and "--allow-network" not in out

    wide = _curate("stats", str(ds.root))
    raw = sum(pq.read_table(p).num_rows for p in ds.shards("images"))
    assert raw == 2 * N  # img2dataset kept every attempt: the blocked run and the retry
    table_rows = dict(re.findall(r"│ ([\w/]+)\s+│\s+([\d,]+)\s+│", wide))
    assert "images" not in table_rows and table_rows["samples"] == str(N) and table_rows["downloads"] == str(N)
    assert f"{raw:,} attempt rows" in wide
    outcomes = re.findall(r"│ (success|failed)\s+│ (\w*)\s+│\s+(\d+)\s+│", wide)
    assert sorted(outcomes) == [("failed", "http_404", "1"), ("success", "", str(N - 1))]

    for columns in (20, 40):
        narrow = _curate("stats", str(ds.root), columns=columns)
        lines = narrow.splitlines()
        assert max(len(line) for line in lines) <= columns
        # headings wrap between words, never one letter a line
        assert not [line for line in lines if len(line.strip()) == 1 and line.strip().isalpha()]
        text = " ".join(line.strip() for line in lines)
        for heading in ("tables in", "downloads by outcome"):
            assert heading in text, narrow


def test_stats_tables_at_20_columns_print_whole_values(tmp_path):
    """At 20 columns a grid would fold every cell mid-word ("malformed" / "_record"): each row
    is printed as "column: value" lines instead, wrapped between words; wide terminals keep
    the grid."""
    import json

    pool = tmp_path / "pool.jsonl"
    rows = [{"url": f"http://x/{i % 9}.jpg", "caption": f"caption {i % 9}"} for i in range(12)]
    pool.write_text("\n".join(json.dumps(r) for r in rows) + "\n" + json.dumps({"url": "", "caption": "x"})
                    + "\n{broken\n")
    ds = tmp_path / "ds"
    _curate("ingest", str(pool), "-o", str(ds), "--engine", "local")
    narrow = _curate("stats", str(ds), columns=20)
    lines = [line.rstrip() for line in narrow.splitlines()]
    assert max(len(line) for line in lines) <= 20, narrow
    for value in ("malformed_record", "duplicate_url_text", "duplicates", "samples", "empty_url"):
        assert value in lines or any(line.endswith(f": {value}") for line in lines), (value, narrow)
    assert "table: samples" in lines and "rows: 9" in lines and "rows: 3" in lines
    assert not any(ch in narrow for ch in "│┃"), narrow  # no folded grid
    wide = _curate("stats", str(ds), columns=100)
    assert re.search(r"│ malformed_record\s+│\s+1 │", wide) and re.search(r"│ samples\s+│\s+9 │", wide), wide


def test_wrap_words_never_leaves_a_lone_letter_whatever_the_path_length():
    """A path longer than the terminal is cut into even pieces: folding at the edge left a
    one-letter line for some temporary-folder lengths (a flaky CI failure)."""
    from curate.commands.sql import wrap_words

    for width in (20, 40, 80):
        for n in range(60):
            text = f"tables in /tmp/pytest-{'1' * n}/test_stats_0/a-dataset-with-a-rather-long-folder-name"
            lines = wrap_words(text, width)
            assert all(len(line) <= width for line in lines)
            assert "".join(lines).replace(" ", "") == text.replace(" ", "")
            assert min(len(line) for line in lines) >= 3, lines
    assert wrap_words("downloads by outcome and more", 20) == ["downloads by outcome", "and more"]


def _full(schema_name: str, columns: dict) -> pa.Table:
    """A table of ``schema_name`` from some of its columns, the others null."""
    from curate.tables import load_schema

    schema = load_schema(schema_name).arrow()
    n = len(next(iter(columns.values())))
    return pa.table({f.name: pa.array(columns[f.name], f.type) if f.name in columns else pa.nulls(n, f.type)
                     for f in schema}, schema=schema)


def test_outcome_counts_by_the_engine_equal_duckdbs_over_the_same_tables(tmp_path, spark):
    """`curate stats`'s outcome tables are engine aggregates (one row per outcome reaches the
    driver): Spark and the in-process engine give the tables DuckDB's queries over every row
    gave before (no error class and an empty one read alike; decisions by run)."""
    from curate.engine import LocalExecutor
    from curate.engine.spark import SparkExecutor
    from curate.sql import query
    from curate.stats import outcome_rows, outcome_tables

    ds = Dataset(tmp_path / "ds")
    n = 60
    uids = sorted(f"{i:032x}" for i in range(n))
    status = ["success" if i % 3 else "failed" for i in range(n)]
    errors = [None if s == "success" else ("" if i % 9 == 0 else ("http_404" if i % 2 else "timeout"))
              for i, s in enumerate(status)]
    ds.write_table("downloads", _full("downloads", {"uid": uids, "status": status, "error_class": errors,
                                                    "attempts": [1] * n}), schema="downloads", rows_per_shard=25)
    ds.write_table("rejects", _full("rejects", {"source_file": ["a.csv"] * 7, "source_row": list(range(7)),
                                                "reason": ["empty_url"] * 4 + ["missing_text"] * 3}), schema="rejects")
    ds.write_table("duplicates", _full("duplicates", {"uid": uids[:5], "duplicate_of": uids[5:10],
                                                      "reason": ["duplicate_uid"] * 2 + ["duplicate_url_text"] * 3,
                                                      "source_file": ["a.csv"] * 5, "source_row": list(range(5))}),
                   schema="duplicates")
    for run, stages in (("basic", ["basic"]), ("mix", ["clip_score", "semdedup"])):
        rows = [(u, st, i % 4 != 0, "kept" if i % 4 else f"low_{st}") for st in stages for i, u in enumerate(uids)]
        ds.write_table(f"decisions/{run}", _full("decisions", {
            "uid": [r[0] for r in rows], "stage": [r[1] for r in rows], "kept": [r[2] for r in rows],
            "reason": [r[3] for r in rows]}), schema="decisions", rows_per_shard=40)
    assert outcome_rows(ds) == 2 * n

    want = {
        "downloads by outcome (one row per sample)": query(
            ds, "SELECT status, coalesce(error_class, '') AS error_class, count(*) AS samples FROM downloads "
                "GROUP BY ALL ORDER BY samples DESC, status, error_class"),
        "reject reasons": query(ds, "SELECT reason, count(*) AS rows FROM rejects GROUP BY reason "
                                    "ORDER BY rows DESC, reason"),
        "duplicates": query(ds, "SELECT reason, count(*) AS rows FROM duplicates GROUP BY reason "
                                "ORDER BY rows DESC, reason"),
        "decisions": query(ds, "SELECT _table AS run, stage, reason, count(*) AS rows FROM decisions "
                               "GROUP BY ALL ORDER BY run, stage, rows DESC, reason"),
    }
    for ex in (LocalExecutor(), SparkExecutor(spark)):
        got = {title: t for title, t, _ in outcome_tables(ds, ex)}
        assert list(got) == list(want)
        for title, t in want.items():
            assert got[title].to_pylist() == t.to_pylist(), (type(ex).__name__, title)
        assert ex.driver_counter.by_call.get("collect_small", 0) == sum(t.num_rows for t in want.values())
    assert ("failed", "", 7) in [tuple(r.values()) for r in want["downloads by outcome (one row per sample)"].to_pylist()]
