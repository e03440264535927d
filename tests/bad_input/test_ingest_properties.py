"""Property test of ingest over generated folders of mixed inputs: for any folder of CSV,
JSONL, Parquet and WebDataset files holding good rows, repeated rows and broken ones
(empty or control-character urls, text that is not Unicode, unterminated quotes, bad JSON,
repeated tar keys), some of them unreadable (no permission, a dangling link, a folder that
cannot be listed), one real Spark ingest gives

    rows written = samples + duplicates + rejects + rows of the files reported unreadable

and the same per file in ``_runs/ingest.json``, with each broken row a reject of its kind.

Captions are free text without NUL, CR, ':', '/' and '.', so that a caption's own lines can
never read as records of their own (an unterminated quote is only detectable when the lines
it swallows do); the readers' exact text round trip is tested in test_reader_properties.py.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from unreadable import permissions_enforced

from curate.errors import DatasetError
from curate.ingest.job import IngestConfig, run_ingest
from curate.engine.spark import SparkExecutor
from curate.tables import Dataset

CAPTION = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\r:/."), max_size=24)
BROKEN = {  # row kind -> reject reason it must give
    "empty_url": "empty_url", "control_url": "url_control_character", "bad_text": "text_not_utf8",
    "unterminated": "malformed_record", "bad_json": "malformed_record", "repeat_key": "duplicate_member_key"}
KINDS_BY_FORMAT = {
    "csv": ["good", "good", "dup", "empty_url", "control_url", "bad_text", "unterminated"],
    "jsonl": ["good", "good", "dup", "empty_url", "control_url", "bad_text", "bad_json"],
    "parquet": ["good", "good", "dup", "empty_url", "control_url", "bad_text"],
    "tar": ["good", "good", "dup", "empty_url", "control_url", "bad_text", "repeat_key"],
}
READABILITY = ["ok", "ok", "ok", "mode000", "dangling", "locked_folder"]


@st.composite
def input_file(draw):
    fmt = draw(st.sampled_from(sorted(KINDS_BY_FORMAT)))
    rows = draw(st.lists(st.tuples(st.sampled_from(KINDS_BY_FORMAT[fmt]), CAPTION), max_size=7))
    if fmt == "csv":  # a line an unterminated quote swallows is readable as a record only if it has a url
        rows = [("good", t) if k == "empty_url" and i and rows[i - 1][0] == "unterminated" else (k, t)
                for i, (k, t) in enumerate(rows)]
    if fmt == "tar" and rows and rows[0][0] == "repeat_key":
        rows[0] = ("good", rows[0][1])  # a repeat needs an earlier key
    return fmt, rows, draw(st.sampled_from(READABILITY))


def _write(path: Path, fmt: str, rows: list[tuple[str, str]], earlier: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Write one input file; returns the (url, caption) pairs of its good rows (for later dups)."""
    good, recs = [], []
    for i, (kind, text) in enumerate(rows):
        url = f"http://g/{path.stem}/{i}.jpg"
        if kind == "dup" and (earlier or good):
            url, text = (earlier + good)[i % len(earlier + good)]
        elif kind == "dup":
            kind = "good"
        if kind in ("good", "dup"):
            good.append((url, text))
        recs.append((kind, {"empty_url": "", "control_url": url + "\x00x"}.get(kind, url), text))
    if fmt == "csv":
        import csv

        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["url", "caption"])
        out = buf.getvalue().encode()
        for kind, url, text in recs:
            if kind == "unterminated":
                out += f'{url},"{text.replace(chr(34), "").replace(chr(10), " ")}\n'.encode()
                continue
            buf = io.StringIO()
            csv.writer(buf, lineterminator="\n").writerow([url, text])
            line = buf.getvalue().encode()
            out += line.replace(b"http://", b"http://\xff", 1) if kind == "bad_text" else line
        path.write_bytes(out)
    elif fmt == "jsonl":
        out = b""
        for i, (kind, url, text) in enumerate(recs):
            if kind == "bad_json":
                out += b'{"url": "' + url.encode() + b'", "caption": \n'
            elif kind == "bad_text" and i % 2:  # a lone surrogate, written as a JSON escape
                out += json.dumps({"url": url, "caption": text + "\ud800"}).encode() + b"\n"
            elif kind == "bad_text":  # a byte that is not UTF-8, inside the caption
                line = json.dumps({"url": url, "caption": text}).encode()
                out += line[:-2] + b'\xfe"}\n'
            else:
                out += json.dumps({"url": url, "caption": text}).encode() + b"\n"
        path.write_bytes(out)
    elif fmt == "parquet":
        texts = [t.encode() + (b"\xc3" if k == "bad_text" else b"") for k, _, t in recs]
        pq.write_table(pa.table({"url": pa.array([u for _, u, _ in recs], pa.string()),
                                 "caption": pa.array(texts, pa.binary())}), path)
    else:
        with tarfile.open(path, "w") as tf:
            key = None
            for i, (kind, url, text) in enumerate(recs):
                key = key if kind == "repeat_key" else f"{i:06d}"  # a repeat: the previous key again
                members = [(f"{key}.txt", text.encode() + (b"\xff" if kind == "bad_text" else b"")),
                           (f"{key}.json", json.dumps({"url": url}).encode())]
                for name, data in members:
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
    return good


SUFFIX = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet", "tar": ".tar"}


EVERY_KIND = [  # each format with each of its row kinds, and each way of being unreadable
    ("csv", [("good", "a, \"quoted\" caption"), ("unterminated", "never closed"), ("good", "two\nlines"),
             ("dup", ""), ("empty_url", "x"), ("control_url", "y"), ("bad_text", "z"), ("unterminated", "last")], "ok"),
    ("jsonl", [("good", "j"), ("bad_text", "odd"), ("bad_text", "even"), ("bad_json", ""), ("dup", ""),
               ("control_url", "c"), ("empty_url", "e")], "ok"),
    ("parquet", [("good", "p"), ("bad_text", "b"), ("dup", ""), ("empty_url", "e"), ("control_url", "c")], "ok"),
    ("tar", [("good", "t"), ("repeat_key", "again"), ("repeat_key", "and again"), ("bad_text", "b"), ("dup", ""),
             ("empty_url", "e"), ("control_url", "c")], "ok"),
    ("csv", [("good", "locked")], "mode000"),
    ("jsonl", [("good", "gone"), ("good", "gone too")], "dangling"),
    ("tar", [("good", "hidden away")], "locked_folder"),
]


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                HealthCheck.function_scoped_fixture])
@given(files=st.lists(input_file(), min_size=1, max_size=5))
@example(files=EVERY_KIND)
def test_rows_in_equal_samples_duplicates_rejects_and_unreadable_rows(spark, files):
    with tempfile.TemporaryDirectory() as d:
        pool = Path(d) / "pool"
        pool.mkdir()
        expected, earlier, locked = {}, [], []
        for n, (fmt, rows, readability) in enumerate(files):
            folder = pool / f"sub{n}" if readability == "locked_folder" else pool
            folder.mkdir(exist_ok=True)
            path = folder / f"f{n}{SUFFIX[fmt]}"
            earlier += _write(path, fmt, rows, earlier)
            broken = Counter(BROKEN[k] for k, _ in rows if k in BROKEN)
            expected[path] = (len(rows), broken, readability)
            if readability == "mode000":
                os.chmod(path, 0)
            elif readability == "dangling":
                path.unlink()
                path.symlink_to(Path(d) / "gone" / path.name)
            elif readability == "locked_folder":
                os.chmod(folder, 0)
                locked.append(folder)
        out = Path(d) / "ds"
        nothing_readable = all(r != "ok" for _, _, r in expected.values())
        try:
            with permissions_enforced():
                if nothing_readable:  # one clear error instead
                    with pytest.raises(DatasetError, match="no readable input files"):
                        run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(pool)], output=str(out)))
                    return
                m = run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(pool)], output=str(out), rows_per_shard=4))
        finally:
            for folder in locked:
                os.chmod(folder, 0o755)
        unreadable = {Path(f["path"]) for f in m["skipped_files"] if f["outcome"] == "unreadable"}
        assert unreadable == {p.parent if r == "locked_folder" else p for p, (_, _, r) in expected.items() if r != "ok"}
        assert not [f for f in m["skipped_files"] if f["outcome"] != "unreadable"]
        per_file = {Path(f["path"]): f for f in m["inputs"]}
        ds = Dataset(out)
        tables = {t: Counter(r["source_file"] for r in ds.read(t).to_pylist()) for t in ("samples", "duplicates", "rejects")}
        rejects = Counter((r["source_file"], r["reason"]) for r in ds.read("rejects").to_pylist())
        unreadable_rows = 0
        for path, (n_rows, broken, readability) in expected.items():
            if readability != "ok":
                assert path not in per_file
                unreadable_rows += n_rows
                continue
            f = per_file[path]
            assert f["rows"] == n_rows, (path, f)
            assert f["kept"] + f["duplicates"] + f["rejects"] == n_rows
            assert (tables["samples"][str(path)], tables["duplicates"][str(path)], tables["rejects"][str(path)]) == (
                f["kept"], f["duplicates"], f["rejects"])
            assert f["reject_reasons"] == dict(broken), (path, files)
            assert {r: n for (src, r), n in rejects.items() if src == str(path)} == dict(broken)
        c = m["counts"]
        assert sum(n for n, _, _ in expected.values()) == c["kept"] + c["duplicates"] + c["rejects"] + unreadable_rows
        assert c["input_rows"] == sum(f["rows"] for f in m["inputs"])
        shutil.rmtree(out)
