"""Inputs that used to be lost or crash ingest (issue 15), one class per test: folders read
by what they hold, every file of a mixed folder read or counted, broken CSV quotes, repeated
tar keys, text that is not Unicode, unreadable files, control characters in urls, the output
inside the input, failing reruns, stale temp files, and the url length limit.

One real Spark ingest over a hostile mixed folder serves most classes; each test checks its
files' outcomes and that the counts add up per file in ``_runs/ingest.json``.
"""

from __future__ import annotations

import ast
import io
import json
import os
import re
import subprocess
import sys
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from unreadable import permissions_enforced, setpriv_prefix

from curate.cli import _user_message
from curate.ingest.job import IngestConfig, run_ingest
from curate.engine.spark import SparkExecutor
from curate.ingest.stage import IngestRules, prepare_batch
from curate.readers import ReaderOptions, read_file_raw
from curate.tables import Dataset

REPO = Path(__file__).resolve().parents[2]


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def _bad_utf8_string_parquet(path: Path) -> None:
    """A Parquet file whose *string* column holds bytes that are not UTF-8 (Parquet writers
    do not check; Arrow reads them back unchecked)."""
    values = [b"fine caption", b"caf\xe9 au lait", b"another fine one"]
    offsets = [0]
    for v in values:
        offsets.append(offsets[-1] + len(v))
    text = pa.Array.from_buffers(pa.string(), 3, [None, pa.py_buffer(pa.array(offsets, pa.int32()).buffers()[1]),
                                                   pa.py_buffer(b"".join(values))])
    extra = pa.Array.from_buffers(pa.string(), 3, [None, pa.py_buffer(pa.array([0, 2, 4, 5], pa.int32()).buffers()[1]),
                                                    pa.py_buffer(b"enfr\xff")])
    pq.write_table(pa.table({"url": [f"http://pq/{i}.jpg" for i in range(3)], "text": text, "lang": extra}), path)


def _rows(ds: Dataset, table: str) -> list[dict]:
    return ds.read(table).to_pylist()


def _by_file(rows: list[dict], name: str) -> list[dict]:
    return [r for r in rows if Path(r["source_file"]).name == name]


def _manifest(root: Path) -> dict:
    return json.loads((root / "_runs" / "ingest.json").read_text())


def _assert_counts_add_up_per_file(m: dict, ds: Dataset) -> None:
    tables = {t: Counter(r["source_file"] for r in _rows(ds, t)) for t in ("samples", "duplicates", "rejects")}
    for f in m["inputs"]:
        assert f["kept"] + f["duplicates"] + f["rejects"] == f["rows"], f
        got = (tables["samples"][f["path"]], tables["duplicates"][f["path"]], tables["rejects"][f["path"]])
        assert got == (f["kept"], f["duplicates"], f["rejects"]), f["path"]
    c = m["counts"]
    assert c["kept"] + c["duplicates"] + c["rejects"] == c["input_rows"] == sum(f["rows"] for f in m["inputs"])


# ---------------------------------------------------------------- one hostile mixed folder
@pytest.fixture(scope="module")
def mixed(spark, tmp_path_factory):
    d = tmp_path_factory.mktemp("mixed")
    pool = d / "pool"
    pool.mkdir()
    pq.write_table(pa.table({"url": ["http://pq/a.jpg", "http://pq/b.jpg"], "caption": ["pq one", "pq two"]}),
                   pool / "a.parquet")
    # 3) an unterminated quote on line 3: the next lines are rows of their own
    (pool / "b.csv").write_text('url,caption,license\nhttp://csv/1.jpg,one,cc\nhttp://csv/2.jpg,"broken caption,cc\n'
                                'http://csv/3.jpg,three,cc\nhttp://csv/4.jpg,"four, quoted",cc\n'
                                'http://csv/5.jpg,"a caption\nover two lines",cc\n')
    # 11) invalid UTF-8 in an extra column (not only url/caption)
    (pool / "c.csv").write_bytes(b"url,caption,license\nhttp://c/1.jpg,fine,cc\nhttp://c/2.jpg,fine too,caf\xe9\n")
    # 11) a lone surrogate in a caption, in a url and in an extra field; 18) control characters in urls
    (pool / "d.jsonl").write_text("\n".join([
        '{"url": "http://j/1.jpg", "caption": "ok"}',
        '{"url": "http://j/2.jpg", "caption": "smile \\ud83d"}',
        '{"url": "http://j/3\\ud800.jpg", "caption": "bad url"}',
        '{"url": "http://j/4.jpg", "caption": "bad extra", "note": "x\\udfff"}',
        '{"url": "http://j/5.jpg\\u0000.evil", "caption": "nul in url"}',
        '{"url": "http://j/6.jpg\\tx", "caption": "tab in url"}',
        '{"url": "http://j/7\\u007f.jpg", "caption": "del in url"}',
        '{"url": "http://j/8\\u0085.jpg", "caption": "C1 control in url"}',
        '{"url": "http://j/9.jpg", "caption": "pair \\ud83d\\ude00 is fine"}',
    ]) + "\n")
    # 5) a repeated member key: appended again, and a key whose members are not adjacent
    _tar(pool / "e.tar", [("000.txt", b"first copy"), ("000.json", b'{"url": "http://t/0.jpg"}'),
                          ("000.txt", b"second copy"), ("000.json", b'{"url": "http://t/0b.jpg"}'),
                          ("001.txt", b"one"), ("001.json", b'{"url": "http://t/1.jpg"}'),
                          ("000.jpg", b"late image"),
                          ("002.txt", b"two"), ("002.json", b'{"url": "http://t/2.jpg", "note": "\\ud83d"}')])
    (pool / "f.json").write_text(json.dumps({"images": [{"id": 1, "coco_url": "http://coco/1.jpg"}],
                                             "annotations": [{"image_id": 1, "caption": "a coco caption"}]}))
    _bad_utf8_string_parquet(pool / "g.parquet")
    sub = pool / "nested"
    sub.mkdir()
    (sub / "h.tsv").write_text("url\tcaption\nhttp://tsv/1.jpg\ttab separated\n")
    # files no reader takes, an img2dataset shard whose tar its Parquet covers, hidden files
    (pool / "README.md").write_text("# notes about this pool\n")
    (pool / "notes.json").write_text('{"not": "coco"}')
    shard = pool / "i2d"
    shard.mkdir()
    pq.write_table(pa.table({"url": ["http://i2d/0.jpg"], "caption": ["from img2dataset"]}), shard / "00000.parquet")
    _tar(shard / "00000.tar", [("000000000.txt", b"from img2dataset"), ("000000000.json", b'{"url": "http://i2d/0.jpg"}')])
    (shard / "00000_stats.json").write_text("{}")
    (pool / ".hidden.csv").write_text("url,caption\nhttp://hidden/1.jpg,never read\n")
    # 12) unreadable entries a root user also cannot read
    (pool / "broken.csv").symlink_to(d / "gone.csv")
    (pool / "loop.jsonl").symlink_to(pool / "loop.jsonl")
    out = d / "ds"
    m = run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(pool)], output=str(out), rows_per_shard=1000))
    return pool, out, m


def test_folder_of_mixed_formats_reads_every_file_with_its_reader(mixed):
    pool, out, m = mixed
    read = {Path(f["path"]).relative_to(pool).as_posix(): (f["format"], f["rows"]) for f in m["inputs"]}
    assert read == {"a.parquet": ("parquet", 2), "b.csv": ("csv", 5), "c.csv": ("csv", 2), "d.jsonl": ("jsonl", 9),
                    "e.tar": ("webdataset", 5), "f.json": ("coco", 1), "g.parquet": ("parquet", 3),
                    "i2d/00000.parquet": ("parquet", 1), "nested/h.tsv": ("tsv", 1)}
    skipped = {Path(f["path"]).relative_to(pool).as_posix(): f["outcome"] for f in m["skipped_files"]}
    assert skipped == {"README.md": "unsupported", "notes.json": "unsupported", "i2d/00000.tar": "covered",
                       "i2d/00000_stats.json": "covered", "broken.csv": "unreadable", "loop.jsonl": "unreadable"}
    assert m["counts"]["files_skipped"] == {"covered": 2, "unreadable": 2, "unsupported": 2}
    assert all(f["detail"] for f in m["skipped_files"])
    _assert_counts_add_up_per_file(m, Dataset(out))


def test_unterminated_csv_quote_is_a_reject_and_the_next_rows_are_kept(mixed):
    _, out, _ = mixed
    ds = Dataset(out)
    kept = sorted((r["url"], r["text"]) for r in _by_file(_rows(ds, "samples"), "b.csv"))
    assert kept == [("http://csv/1.jpg", "one"), ("http://csv/3.jpg", "three"), ("http://csv/4.jpg", "four, quoted"),
                    ("http://csv/5.jpg", "a caption over two lines")]  # normalised text
    [rej] = _by_file(_rows(ds, "rejects"), "b.csv")
    assert (rej["source_row"], rej["reason"]) == (1, "malformed_record")
    assert "line 3" in rej["detail"] and "unterminated quote" in rej["detail"]
    assert rej["raw"].startswith("http://csv/2.jpg,\"broken caption")


def test_repeated_tar_member_key_is_a_reject_and_the_first_copy_is_kept(mixed):
    _, out, _ = mixed
    ds = Dataset(out)
    kept = {r["url"]: r["text"] for r in _by_file(_rows(ds, "samples"), "e.tar")}
    assert kept == {"http://t/0.jpg": "first copy", "http://t/1.jpg": "one"}
    rejects = sorted((r["source_row"], r["reason"]) for r in _by_file(_rows(ds, "rejects"), "e.tar"))
    assert rejects == [(1, "duplicate_member_key"), (3, "duplicate_member_key"), (4, "text_not_utf8")]
    details = [r["detail"] for r in _by_file(_rows(ds, "rejects"), "e.tar")]
    assert any("000.txt repeats" in x for x in details) and any("key '000' repeats" in x for x in details)


def test_text_that_is_not_unicode_is_a_reject_in_every_reader_and_column(mixed):
    _, out, _ = mixed
    ds = Dataset(out)
    rejects = _rows(ds, "rejects")
    jsonl = {r["source_row"]: r for r in _by_file(rejects, "d.jsonl") if r["reason"] == "text_not_utf8"}
    assert sorted(jsonl) == [1, 2, 3]
    assert "U+D83D" in jsonl[1]["detail"] and "U+D800" in jsonl[2]["detail"] and "U+DFFF" in jsonl[3]["detail"]
    assert [(r["source_row"], r["reason"]) for r in _by_file(rejects, "c.csv")] == [(1, "text_not_utf8")]
    assert "license" in _by_file(rejects, "c.csv")[0]["detail"]
    assert sorted((r["source_row"], r["reason"]) for r in _by_file(rejects, "g.parquet")) == [
        (1, "text_not_utf8"), (2, "text_not_utf8")]
    kept = {r["url"]: r["text"] for r in _rows(ds, "samples")}
    assert kept["http://j/9.jpg"] == "pair \U0001F600 is fine" and kept["http://pq/0.jpg"] == "fine caption"


def test_control_characters_in_urls_are_rejects(mixed):
    _, out, _ = mixed
    ds = Dataset(out)
    rows = {r["source_row"]: r for r in _by_file(_rows(ds, "rejects"), "d.jsonl")}
    assert {i: rows[i]["reason"] for i in (4, 5, 6, 7)} == dict.fromkeys((4, 5, 6, 7), "url_control_character")
    assert not [r for r in _rows(ds, "samples") if any(ch in r["url"] for ch in "\x00\t\x7f\x85")]


def _staged(path: Path, fmt: str) -> list[dict]:
    rows = []
    for raw in read_file_raw(str(path), ReaderOptions(), fmt):
        staged, _ = prepare_batch(raw, str(path), 0)
        rows += staged.to_pylist()
    return rows


def test_bytes_that_are_not_utf8_in_coco_and_tar_json_reject_only_their_row(tmp_path):
    coco = tmp_path / "captions.json"
    coco.write_bytes(b'{"images": [{"id": 1, "coco_url": "http://coco/1.jpg"}], "annotations": ['
                     b'{"image_id": 1, "caption": "fine"}, {"image_id": 1, "caption": "caf\xe9"}]}')
    rows = _staged(coco, "coco")
    assert [(r["kind"], r["reason"]) for r in rows] == [("sample", None), ("reject", "text_not_utf8")]
    tar = tmp_path / "shard.tar"
    _tar(tar, [("a.txt", b"fine"), ("a.json", b'{"url": "http://t/a.jpg"}'),
               ("b.txt", b"fine too"), ("b.json", b'{"url": "http://t/b.jpg", "note": "caf\xe9"}')])
    rows = _staged(tar, "webdataset")
    assert [(r["kind"], r["reason"]) for r in rows] == [("sample", None), ("reject", "text_not_utf8")]
    assert "b.json is not valid UTF-8" in rows[1]["detail"]


# ---------------------------------------------------------------- folders of one text format
def test_folders_of_only_csv_or_only_jsonl_are_read(spark, tmp_path):
    csvs, jsonls = tmp_path / "csvs", tmp_path / "jsonls"
    for d in (csvs, jsonls):
        d.mkdir()
    for i in range(2):
        (csvs / f"part-{i}.csv").write_text(f"url,caption\nhttp://c/{i}a.jpg,csv {i} a\nhttp://c/{i}b.jpg,csv {i} b\n")
        (jsonls / f"part-{i}.jsonl").write_text(json.dumps({"url": f"http://j/{i}.jpg", "caption": f"jsonl {i}"}) + "\n")
    m = run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(csvs), str(jsonls)], output=str(tmp_path / "ds")))
    assert m["counts"]["input_rows"] == m["counts"]["kept"] == 6
    assert [f["format"] for f in m["inputs"]] == ["csv", "csv", "jsonl", "jsonl"]


# ---------------------------------------------------------------- unreadable files
def test_unreadable_files_are_counted_outcomes_with_one_line_each(tmp_path):
    pool = tmp_path / "pool"
    (pool / "locked").mkdir(parents=True)
    (pool / "ok.csv").write_text("url,caption\nhttp://ok/1.jpg,readable\n")
    (pool / "secret.csv").write_text("url,caption\nhttp://no/1.jpg,no permission\n")
    (pool / "locked" / "inside.jsonl").write_text('{"url": "http://no/2.jpg", "caption": "in a locked folder"}\n')
    (pool / "dangling.jsonl").symlink_to(tmp_path / "nowhere.jsonl")
    os.chmod(pool / "secret.csv", 0)
    os.chmod(pool / "locked", 0)
    out = tmp_path / "ds"
    # the inputs are scanned on the driver before any engine runs: the in-process engine is enough
    try:
        r = subprocess.run([*setpriv_prefix(), sys.executable, "-m", "curate.cli", "ingest", str(pool), "-o", str(out),
                            "--engine", "local"], capture_output=True, text=True, timeout=600)
    finally:
        os.chmod(pool / "locked", 0o755)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.splitlines() if x.startswith("ingest: not reading")]
    assert sorted(lines) == sorted([
        f"ingest: not reading {pool / 'dangling.jsonl'}: unreadable: broken symbolic link (No such file or directory)",
        f"ingest: not reading {pool / 'locked'}: unreadable: cannot list the folder (Permission denied)",
        f"ingest: not reading {pool / 'secret.csv'}: unreadable: Permission denied"])
    m = _manifest(out)
    assert m["counts"]["files_skipped"] == {"unreadable": 3} and m["counts"]["input_rows"] == m["counts"]["kept"] == 1


def test_nothing_readable_is_one_line_error(spark, tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "secret.jsonl").write_text('{"url": "http://no/1.jpg", "caption": "x"}\n')
    os.chmod(pool / "secret.jsonl", 0)
    with permissions_enforced(), pytest.raises(Exception) as info:
        run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(pool)], output=str(tmp_path / "ds")))
    msg = _user_message(info.value)
    assert msg and "no readable input files" in msg and "secret.jsonl: unreadable: Permission denied" in msg


# ---------------------------------------------------------------- output inside the input
def test_output_inside_the_input_folder_is_never_read_and_reruns_identically(spark, tmp_path):
    pool = tmp_path / "pool"
    pool.mkdir()
    (pool / "a.jsonl").write_text("".join(json.dumps({"url": f"http://o/{i}.jpg", "caption": f"c {i}"}) + "\n"
                                          for i in range(5)))
    out = pool / "ds"
    first = run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(pool)], output=str(out), rows_per_shard=2))
    digests = {p.relative_to(out): p.read_bytes() for t in ("samples", "rejects", "duplicates")
               for p in sorted((out / t).glob("*.parquet"))}
    again = run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(pool)], output=str(out), rows_per_shard=2))
    assert first["counts"] == again["counts"] and again["counts"]["input_rows"] == 5
    assert again["excluded_folders"] == [str(out)]
    assert {p.relative_to(out): p.read_bytes() for t in ("samples", "rejects", "duplicates")
            for p in sorted((out / t).glob("*.parquet"))} == digests
    # naming a file inside the output as input: refused before anything is touched
    with pytest.raises(Exception) as info:
        run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(out / "samples" / "part-00000.parquet")], output=str(out)))
    assert "is inside the output dataset" in _user_message(info.value)
    assert {p.relative_to(out): p.read_bytes() for t in ("samples", "rejects", "duplicates")
            for p in sorted((out / t).glob("*.parquet"))} == digests


def test_a_failing_rerun_leaves_the_committed_tables_and_manifest(spark, tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"url": f"http://f/{i}.jpg", "caption": f"c {i}"}) + "\n" for i in range(4)))
    out = tmp_path / "ds"
    run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(good)], output=str(out), rows_per_shard=3))

    def state():
        files = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()
                 and p.parts[len(out.parts)] in ("samples", "rejects", "duplicates")}
        return files, (out / "_runs" / "ingest.json").read_text()

    before = state()
    bad = tmp_path / "bad.csv"
    bad.write_text("image,label\nhttp://f/x.jpg,3\n")  # no caption column: fails when read, in a Spark task
    with pytest.raises(Exception) as info:  # a new plan whose read fails
        run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(good), str(bad)], output=str(out), rows_per_shard=3))
    assert "bad.csv" in _user_message(info.value)
    assert state() == before
    # the next good run with a new plan replaces them, and leaves no staging behind
    m = run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(good)], output=str(out), rows_per_shard=100))
    assert m["counts"]["kept"] == 4 and len(list((out / "samples").glob("*.parquet"))) == 1
    assert not (out / "_staging").exists()


def test_a_late_write_of_a_failed_runs_task_is_gone_when_the_next_run_ends(tmp_path, monkeypatch):
    """A failed Spark job's other task may still write its staged file for a moment after the
    error (its Python worker is stopped up to spark.python.task.killTimeout later), i.e. after
    the next run removed the old plan's staging when it started: that run removes it again
    when it ends (the flake this test pins down)."""
    from curate.engine import LocalExecutor
    from curate.ingest import job

    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"url": f"http://f/{i}.jpg", "caption": f"c {i}"}) + "\n" for i in range(4)))
    out = tmp_path / "ds"
    late = out / "_staging" / "ingest-0123456789abcdef" / "samples" / "task-000000.parquet"
    real = job.prepare_output

    def prepare_then_a_late_write(dataset, plan_key):
        target = real(dataset, plan_key)  # removes other plans' staging
        late.parent.mkdir(parents=True, exist_ok=True)
        late.write_bytes(b"PAR1 a zombie task's shard")
        return target

    monkeypatch.setattr(job, "prepare_output", prepare_then_a_late_write)
    m = run_ingest(LocalExecutor(), IngestConfig(inputs=[str(good)], output=str(out)))
    assert m["counts"]["kept"] == 4
    assert not (out / "_staging").exists()


# ---------------------------------------------------------------- temp files and staging
def test_stale_temp_files_and_staging_are_cleaned(spark, tmp_path):
    src = tmp_path / "a.jsonl"
    src.write_text("".join(json.dumps({"url": f"http://s/{i}.jpg", "caption": f"c {i}"}) + "\n" for i in range(3)))
    out = tmp_path / "ds"
    run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(src)], output=str(out)))
    assert not (out / "_staging").exists()  # nothing left after a success
    # what a kill -9 mid-write leaves: hidden temp files beside shards, manifests, staged files
    stale = [out / "samples" / ".part-00001.parquet.0123abcd.tmp", out / "_runs" / ".ingest.json.0123abcd.tmp",
             out / "_staging" / "ingest-0000000000000000" / "samples" / ".task-000000.parquet.0123abcd.tmp"]
    for p in stale:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"partial")
    run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(src)], output=str(out)))
    assert not [p for p in stale if p.exists()]
    assert not (out / "_staging").exists()
    assert not [p for p in out.rglob("*.tmp")]


# ---------------------------------------------------------------- url length limit and reasons
def test_url_length_limit_is_an_option_shown_in_help(tmp_path):
    r = subprocess.run([sys.executable, "-m", "curate.cli", "ingest", "--help"], capture_output=True, text=True,
                       env=dict(os.environ, COLUMNS="200"), timeout=120)
    assert "--max-url-chars" in r.stdout and str(IngestRules.max_url_chars) in r.stdout
    p = tmp_path / "long.jsonl"
    url = "http://l/" + "x" * 5000 + ".jpg"
    p.write_text(json.dumps({"url": url, "caption": "a long url"}) + "\n")
    [raw] = list(read_file_raw(str(p), ReaderOptions(), "jsonl"))
    staged, _ = prepare_batch(raw, str(p), 0)
    assert staged.column("reason").to_pylist() == ["url_too_long"]
    assert "--max-url-chars" in staged.column("detail")[0].as_py()
    staged, _ = prepare_batch(raw, str(p), 0, IngestRules(max_url_chars=8192))
    assert staged.column("kind").to_pylist() == ["sample"] and staged.column("url")[0].as_py() == url


def _emitted_reasons() -> set[str]:
    """Reason codes written as literals where readers and the ingest stage make rejects:
    ``x.reject(row, "code", ...)``, ``_mark(reason, detail, cond, "code", ...)`` and
    ``pc.if_else(mask, "code", reason)``."""
    found = set()
    for path in [*(REPO / "curate" / "readers").glob("*.py"), *(REPO / "curate" / "ingest").glob("*.py")]:
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call):
                continue
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            at = {"reject": 1, "_mark": 3, "if_else": 1}.get(name)
            if at is not None and len(node.args) > at and isinstance(node.args[at], ast.Constant) \
                    and isinstance(node.args[at].value, str) and re.fullmatch(r"[a-z0-9]+(_[a-z0-9]+)+",
                                                                           node.args[at].value):
                found.add(node.args[at].value)
    return found


def test_every_reject_reason_the_code_can_give_is_in_the_rejects_schema():
    from curate.readers import REJECT_REASONS

    spec = yaml.safe_load((REPO / "schemas" / "rejects.yaml").read_text())
    listed = set(spec["reasons"])
    assert listed == set(REJECT_REASONS)
    emitted = _emitted_reasons()
    assert {"url_too_long", "url_control_character", "duplicate_member_key", "text_not_utf8"} <= emitted
    assert emitted <= listed, emitted - listed
    reason_doc = next(c["doc"] for c in spec["columns"] if c["name"] == "reason")
    assert all(code in reason_doc for code in listed)


def test_a_swap_cut_short_by_a_kill_is_finished_by_the_next_run(tmp_path):
    """The state a kill leaves half-way through putting a new plan's tables in place: the
    samples table already moved, rejects and duplicates still staged."""
    from curate.ingest.job import finish_pending_swap

    ds = Dataset(tmp_path / "ds")
    staged = ds.root / "_staging" / "ingest-0123456789abcdef"
    for t in ("rejects", "duplicates"):
        (ds.root / t).mkdir(parents=True)
        (ds.root / t / "part-00000.parquet").write_bytes(b"old " + t.encode())
        (staged / "tables" / t).mkdir(parents=True)
        (staged / "tables" / t / "part-00000.parquet").write_bytes(b"new " + t.encode())
    (ds.root / "samples").mkdir()
    (ds.root / "samples" / "part-00000.parquet").write_bytes(b"new samples")
    (ds.root / ".samples.replaced").mkdir()  # the old samples, renamed aside before the kill
    (ds.root / ".samples.replaced" / "part-00000.parquet").write_bytes(b"old samples")
    ds.write_json("_runs/ingest.json", {"plan_key": "old"})
    ds.write_json(str(staged.relative_to(ds.root) / "swap.json"),
                  {"plan_key": "new", "tables": ["samples", "rejects", "duplicates"], "manifest": {"plan_key": "new"}})
    finish_pending_swap(ds)
    assert {t: (ds.root / t / "part-00000.parquet").read_bytes() for t in ("samples", "rejects", "duplicates")} == {
        "samples": b"new samples", "rejects": b"new rejects", "duplicates": b"new duplicates"}
    assert _manifest(ds.root) == {"plan_key": "new"}
    assert not (staged / "swap.json").exists()
    assert sorted(p.name for p in ds.root.iterdir() if p.name.startswith(".")) == []  # nothing set aside is left
    finish_pending_swap(ds)  # idempotent
    assert (ds.root / "samples" / "part-00000.parquet").read_bytes() == b"new samples"


def test_an_ingest_of_other_inputs_over_a_pool_says_which_tables_were_made_from_the_old_samples(tmp_path, capsys):
    """A second ingest with other inputs replaces the samples (a new plan); the tables made from
    the earlier samples (downloads, a subset) would keep rows of samples that are gone, so the
    summary names them and says how to add inputs; the old tables were renamed aside whole,
    never deleted shard by shard under a reader."""
    from curate.cli import main

    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("url,text\nhttp://127.0.0.1/a.jpg,a cat\nhttp://127.0.0.1/b.jpg,a dog\n")
    b.write_text("url,text\nhttp://127.0.0.1/c.jpg,a cow\n")
    ds = tmp_path / "ds"
    for args in (["ingest", str(a), "-o", str(ds)], ["select", str(ds), "--sql", "SELECT uid FROM samples", "--name", "all"],
                 ["ingest", str(b), "-o", str(ds)], ["ingest", str(b), "-o", str(ds)]):
        with pytest.raises(SystemExit) as e:
            main([*args, "--engine", "local"])
        assert e.value.code == 0
    err = capsys.readouterr().err
    assert err.count("warning: these samples replaced an earlier ingest's") == 1, err  # the rerun of b replaces nothing
    assert "2 earlier samples are gone); subsets/all were made from the earlier samples" in err
    assert "ingest every input together" in err
    assert Dataset(ds).count("samples") == 1
    assert "replaced" not in json.loads((ds / "_runs" / "ingest.json").read_text())  # the last run replaced nothing
    assert not [p for p in ds.iterdir() if p.name.endswith(".replaced")]
    # the advice followed (every input together): nothing earlier is gone, so no warning
    with pytest.raises(SystemExit) as e:
        main(["ingest", str(a), str(b), "-o", str(ds), "--engine", "local"])
    assert e.value.code == 0
    err = capsys.readouterr().err
    assert "warning: these samples replaced" not in err
    assert "these samples extend an earlier ingest's (every earlier sample is kept): subsets/all" in err
    assert json.loads((ds / "_runs" / "ingest.json").read_text())["replaced"]["earlier_samples_gone"] == 0


def test_an_ingest_that_keeps_no_sample_says_so(tmp_path, capsys):
    from curate.cli import main

    src = tmp_path / "z.csv"
    src.write_text("url,text\n,a cat\n,a dog\n")
    with pytest.raises(SystemExit) as e:
        main(["ingest", str(src), "-o", str(tmp_path / "ds"), "--engine", "local"])
    assert e.value.code == 0  # every row accounted for: rejected with its reason
    assert "warning: no samples: every input row was rejected or a duplicate" in capsys.readouterr().err


@pytest.mark.parametrize("options, said", [
    (["--captions", "/nonexistent.csv"], "--captions '/nonexistent.csv' applies to an image folder; no input is one"),
    (["--image-col", "file"], "--image-col 'file' applies to an image folder"),
    (["--header", "no"], "--header no applies to CSV/TSV files and an image folder's captions file"),
])
def test_an_option_no_input_reads_is_refused_not_ignored(tmp_path, capsys, options, said):
    from curate.cli import main

    src = tmp_path / "p.jsonl"
    src.write_text('{"url": "http://127.0.0.1/a.jpg", "text": "a cat"}\n')
    with pytest.raises(SystemExit) as e:
        main(["ingest", str(src), "-o", str(tmp_path / "ds"), *options, "--engine", "local"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert said in err and err.rstrip().endswith("(formats read: jsonl)")


def test_the_columns_picked_among_the_names_ingest_tries_are_said_and_recorded(tmp_path, capsys):
    """A Parquet file with image_url/alt/title: the url and caption columns ingest picked are
    said (alt, not title) and kept per input in the run manifest; plain url/text is not said."""
    from curate.cli import main

    pq.write_table(pa.table({"image_url": ["http://127.0.0.1/a.jpg"], "alt": ["a cat"], "title": ["Cats"]}),
                   tmp_path / "o.parquet")
    (tmp_path / "h.tsv").write_text("http://127.0.0.1/x.jpg\tcaption x\n")
    (tmp_path / "p.csv").write_text("url,text\nhttp://127.0.0.1/b.jpg,a dog\n")
    with pytest.raises(SystemExit) as e:
        main(["ingest", str(tmp_path / "o.parquet"), str(tmp_path / "h.tsv"), str(tmp_path / "p.csv"),
              "-o", str(tmp_path / "ds"), "--engine", "local"])
    assert e.value.code == 0
    err = capsys.readouterr().err
    assert f"columns: url from 'image_url', caption from 'alt' ({tmp_path / 'o.parquet'})" in err
    assert f"columns: url from 'column 0', caption from 'column 1' ({tmp_path / 'h.tsv'})" in err
    assert err.count("columns: ") == 2
    inputs = json.loads((tmp_path / "ds" / "_runs" / "ingest.json").read_text())["inputs"]
    assert [f.get("columns") for f in inputs] == [{"url": "image_url", "text": "alt"},
                                                 {"url": "column 0", "text": "column 1"}, {"url": "url", "text": "text"}]
