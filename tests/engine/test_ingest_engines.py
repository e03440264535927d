"""Ingest in-process (LocalExecutor) and on Spark write the same bytes: samples, duplicates,
rejects, url_text_duplicates, and the same counts per file; `--engine auto` runs a small
ingest in-process and sizes it by its inputs (the dataset does not exist yet)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.engine import LocalExecutor, auto_engine
from curate.engine.spark import SparkExecutor
from curate.ingest.job import INPUT_BYTES_PER_ROW, IngestConfig, estimate_input_rows, run_ingest
from curate.ingest.stage import IngestRules

TABLES = ("samples", "rejects", "duplicates", "url_text_duplicates")


def table_bytes(root: Path) -> dict:
    return {f"{t}/{p.name}": hashlib.sha256(p.read_bytes()).hexdigest()
            for t in TABLES for p in sorted((root / t).glob("*.parquet"))}


def per_file(manifest: dict) -> list[dict]:
    keys = ("path", "rows", "kept", "duplicates", "rejects", "reject_reasons", "format")
    return [{k: f[k] for k in keys} for f in manifest["inputs"]]


@pytest.fixture
def pool(tmp_path):
    """Several formats, cross-file duplicates of (url, text), repeated input uids, rejects."""
    src = tmp_path / "in"
    src.mkdir()
    rows = [{"url": f"http://x/{i % 45}.jpg", "caption": f"caption {i % 45}"} for i in range(60)]
    rows += [{"url": "", "caption": "no url"}, {"url": "http://x/1.jpg", "caption": None}]
    (src / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n{broken\n")
    (src / "b.csv").write_text("url,caption\nhttp://x/5.jpg,caption 5\nhttp://y/1.jpg,other\n"
                               + "".join(f"http://y/{i}.jpg,words {i}\n" for i in range(2, 40)))
    uids = [f"{i % 7:032x}" for i in range(20)]  # input uids repeat: duplicate_uid
    pq.write_table(pa.table({"uid": uids, "url": [f"http://z/{i % 9}.jpg" for i in range(20)],
                             "text": [f"z {i % 9}" for i in range(20)]}), src / "c.parquet", row_group_size=6)
    with tarfile.open(src / "d.tar", "w") as tar:
        for i in range(5):
            for ext, body in (("txt", f"tar caption {i % 3}"), ("json", json.dumps({"url": f"http://t/{i % 3}.jpg"}))):
                data = body.encode()
                info = tarfile.TarInfo(f"s{i:03d}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return src


def run_both(spark, inputs, tmp_path, **kw):
    out = {}
    for name, ex in (("local", LocalExecutor()), ("spark", SparkExecutor(spark))):
        root = tmp_path / name
        m = run_ingest(ex, IngestConfig(inputs=inputs, output=str(root), **kw))
        out[name] = (root, m)
    return out


def assert_same(runs):
    (lroot, lm), (sroot, sm) = runs["local"], runs["spark"]
    assert table_bytes(lroot) == table_bytes(sroot) != {}
    assert lm["counts"] == sm["counts"]
    assert lm["outputs"] == sm["outputs"]
    assert per_file(lm) == per_file(sm)
    assert lm["samples_write"] == sm["samples_write"]


def test_default_mode_local_and_spark_write_the_same_bytes(spark, pool, tmp_path):
    runs = run_both(spark, [str(pool)], tmp_path, rows_per_shard=13)
    assert_same(runs)
    c = runs["local"][1]["counts"]
    assert c["kept"] + c["duplicates"] + c["rejects"] == c["input_rows"] == 63 + 40 + 20 + 5
    assert set(c["duplicate_reasons"]) == {"duplicate_url_text", "duplicate_uid"}
    assert c["reject_reasons"] == {"empty_url": 1, "malformed_record": 1, "missing_text": 1}
    assert len(table_bytes(runs["local"][0])) > 6  # several shards per table


def test_faithful_mode_with_url_text_duplicates(spark, tmp_path):
    p = tmp_path / "pool.parquet"
    n = 40
    pq.write_table(pa.table({"uid": [f"{i % 31:032x}" for i in range(n)],
                             "url": [f"http://p/{i % 11}.jpg" for i in range(n)],
                             "text": [f"same {i % 11}" for i in range(n)]}), p)
    runs = run_both(spark, [str(p)], tmp_path, rules=IngestRules(faithful=True), rows_per_shard=8)
    assert_same(runs)
    c = runs["local"][1]["counts"]
    assert c["duplicate_reasons"] == {"duplicate_uid": n - 31}
    assert c["url_text_duplicates"] == 31 - 11


def test_shuffled_samples_write_is_the_same_in_process(spark, pool, tmp_path, monkeypatch):
    """The shuffle path of the samples write (big pools on Spark) also has an in-process form."""
    import curate.ingest.job as job

    monkeypatch.setattr(job, "_gather_reads_little", lambda *a: False)
    runs = run_both(spark, [str(pool)], tmp_path, rows_per_shard=9)
    assert runs["local"][1]["samples_write"] == "shuffle"
    assert_same(runs)


def test_resume_in_process_after_a_partial_run(pool, tmp_path):
    """A rerun in-process skips committed shards and gives the same bytes."""
    out = tmp_path / "ds"
    cfg = IngestConfig(inputs=[str(pool)], output=str(out), rows_per_shard=10)
    run_ingest(LocalExecutor(), cfg)
    first = table_bytes(out)
    m = run_ingest(LocalExecutor(), cfg)
    assert table_bytes(out) == first
    assert m["counts"]["input_rows"] == 128


def test_input_rows_are_estimated_without_reading_data(pool, tmp_path):
    est = estimate_input_rows(IngestConfig(inputs=[str(pool)], output=str(tmp_path / "o")))
    text_bytes = sum((pool / f).stat().st_size for f in ("a.jsonl", "b.csv"))
    text_rows = sum(-(-(pool / f).stat().st_size // INPUT_BYTES_PER_ROW) for f in ("a.jsonl", "b.csv"))
    assert text_bytes > 0
    assert est == 20 + 5 + text_rows  # Parquet footer rows + tar keys + text bytes / 100
    assert auto_engine(rows=est) == ("local", f"{est:,} input rows <= 500,000 (CURATE_LOCAL_MAX_ROWS)")
    assert auto_engine(rows=500_001)[0] == "spark"
    # --engine auto asks only whether the inputs pass the limit: counting stops there
    # (after the first file, a.jsonl; the tar's headers are read only until past the limit)
    first = -(-(pool / "a.jsonl").stat().st_size // INPUT_BYTES_PER_ROW)
    assert estimate_input_rows(IngestConfig(inputs=[str(pool)], output=str(tmp_path / "o")),
                               stop_above=first - 1) == first < est
    assert estimate_input_rows(IngestConfig(inputs=[str(pool / "d.tar")], output=str(tmp_path / "o")),
                               stop_above=2) == 3
    assert auto_engine(rows=20)[1] == "20 input rows <= 500,000 (CURATE_LOCAL_MAX_ROWS)"
    assert auto_engine(master="local[2]", rows=10)[0] == "spark"


def run_cli(*args, env_extra=None):
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, CURATE_VERBOSE="1", **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True, text=True, env=env,
                          timeout=600)


def _cli_auto_local(pool, tmp_path):
    auto = run_cli("ingest", str(pool), "-o", str(tmp_path / "auto"), "--rows-per-shard", "13")
    assert auto.returncode == 0, auto.stderr
    assert "engine auto: local (" in auto.stderr and "input rows <=" in auto.stderr
    assert "SparkContext" not in auto.stderr  # no JVM started


def test_cli_ingest_auto_runs_in_process(pool, tmp_path):
    _cli_auto_local(pool, tmp_path)


@pytest.mark.extended
def test_cli_ingest_auto_runs_in_process_and_matches_spark(pool, tmp_path):
    """Above CURATE_LOCAL_MAX_ROWS the CLI starts Spark, with the same bytes (the rule itself:
    test_auto_rules; the engines' bytes: test_default_mode_local_and_spark_write_the_same_bytes)."""
    _cli_auto_local(pool, tmp_path)
    big = run_cli("ingest", str(pool), "-o", str(tmp_path / "spark"), "--rows-per-shard", "13",
                  env_extra={"CURATE_LOCAL_MAX_ROWS": "10"})
    assert big.returncode == 0, big.stderr
    assert "engine auto: spark (" in big.stderr and "input rows > 10" in big.stderr
    assert table_bytes(tmp_path / "auto") == table_bytes(tmp_path / "spark") != {}


def test_input_versions_tell_changed_inputs_without_reading_them(tmp_path):
    """The plan key knows each input by its size and modification time (an image folder by its
    files' names, sizes, times and modes): an unchanged rerun resumes; an image rewritten, a
    caption added, or an image's mode changed makes a new plan."""
    from PIL import Image

    from curate.ingest.plan import local_file_fingerprint

    side = tmp_path / "side"
    side.mkdir()
    for n in range(3):
        Image.new("RGB", (8 + n, 8)).save(side / f"{n}.png")
        (side / f"{n}.txt").write_text(f"caption {n}\n")
    (side / "2.txt").unlink()
    out = tmp_path / "ds"

    def ingest():
        return run_ingest(LocalExecutor(), IngestConfig(inputs=[str(side)], output=str(out)))

    first = ingest()
    fp = first["inputs"][0]
    assert (fp["kind"], fp["bytes"]) == ("folder", sum(p.stat().st_size for p in side.iterdir()))
    assert "sha256" not in fp and first["counts"]["kept"] == 2
    again = ingest()
    assert again["resumed"] is True and again["inputs"][0]["version"] == fp["version"]
    (side / "2.txt").write_text("caption 2\n")
    added = ingest()
    assert added["resumed"] is False and added["counts"]["kept"] == 3
    os.chmod(side / "0.png", 0o600)
    moded = ingest()
    assert moded["resumed"] is False and moded["inputs"][0]["version"] != added["inputs"][0]["version"]
    Image.new("RGB", (9, 8), "blue").save(side / "0.png")
    rewritten = ingest()
    assert rewritten["resumed"] is False and rewritten["inputs"][0]["version"] != moded["inputs"][0]["version"]
    # A file's version: its size and time, from stat alone.
    f = tmp_path / "pool.csv"
    f.write_text("url,caption\nhttp://x/1.jpg,one\n")
    st = f.stat()
    assert local_file_fingerprint(str(f)) == {"path": str(f), "bytes": st.st_size, "kind": "file",
                                              "version": f"{st.st_size}:{st.st_mtime_ns}"}


@pytest.fixture
def image_folders(tmp_path):
    """A sidecar folder (a subfolder, an image without a caption, a broken image, a repeated
    caption) and a folder with a captions file (a missing image, an unsafe path, a malformed
    row, a repeated (image, caption) pair)."""
    from PIL import Image

    side = tmp_path / "side"
    (side / "sub").mkdir(parents=True)
    for n, where in enumerate(["a", "b", "sub/c", "sub/d", "e", "f", "g"]):
        Image.new("RGB", (10 + n, 12)).save(side / f"{where}.png")
        if where != "e":
            (side / f"{where}.txt").write_text(f"caption {n % 5}\n")
    (side / "h.jpg").write_bytes(b"not an image")
    (side / "h.txt").write_text("broken\n")
    caps = tmp_path / "caps"
    caps.mkdir()
    for n in range(4):
        Image.new("RGB", (20, 10 + n)).save(caps / f"{n}.jpg")
    lines = ["image,caption"] + [f"{n % 4}.jpg,words {n % 6}" for n in range(14)]
    lines[5:5] = ["missing.jpg,x", "../0.jpg,escape", '"1.jpg,unterminated']
    (caps / "captions.csv").write_text("\n".join(lines) + "\n3.jpg,last\n")
    return side, caps


@pytest.mark.parametrize("folder", ["side", "caps"])
def test_an_image_folder_cut_into_tasks_writes_what_one_task_writes(spark, image_folders, tmp_path, monkeypatch,
                                                                    folder):
    """An image folder is read by tasks of ``IMAGE_TASK_ROWS`` rows (sidecars: images in sorted
    order, counted from the listing; a captions file: rows estimated from its size, the last
    task open-ended): the tables, counts and per-file counts equal one task's, whether the
    estimate is high (empty tasks) or low (the last task reads the rest), in-process or on Spark."""
    import curate.ingest.plan as plan
    import curate.readers.imagefolder as imagefolder

    src = image_folders[0] if folder == "side" else image_folders[1]
    runs = {}
    for name, task_rows, row_bytes in (("one", 10 ** 6, 40), ("cut", 2, 40), ("high", 3, 1), ("low", 3, 10 ** 6),
                                       ("spark", 2, 40)):
        monkeypatch.setattr(plan, "IMAGE_TASK_ROWS", task_rows)
        monkeypatch.setattr(imagefolder, "CAPTION_ROW_BYTES", row_bytes)
        cfg = IngestConfig(inputs=[str(src)], output=str(tmp_path / name), rows_per_shard=4)
        tasks = plan.plan_tasks(cfg)[0]
        m = run_ingest(SparkExecutor(spark) if name == "spark" else LocalExecutor(), cfg)
        runs[name] = (len(tasks), table_bytes(tmp_path / name), m["counts"], per_file(m))
    rows = runs["one"][2]["input_rows"]
    assert rows == (8 if folder == "side" else 18)
    size = (src / "captions.csv").stat().st_size if folder == "caps" else None
    want = {"one": 1, "cut": 4, "high": 3, "low": 3} if folder == "side" else \
        {"one": 1, "cut": -(-(-(-size // 40)) // 2), "high": -(-size // 3), "low": 1}
    want["spark"] = want["cut"]
    assert {k: v[0] for k, v in runs.items()} == want
    for name in ("cut", "high", "low", "spark"):
        assert runs[name][1:] == runs["one"][1:], name
    c = runs["one"][2]
    assert c["kept"] + c["duplicates"] + c["rejects"] == rows
    if folder == "side":
        assert c["reject_reasons"] == {"missing_text": 1, "unreadable_image": 1} and c["duplicates"] == 0
    else:
        assert c["reject_reasons"] == {"malformed_record": 1, "missing_image": 1, "unsafe_member_path": 1}
        assert c["duplicates"] > 0


def test_the_key_sample_for_dedup_ranges_is_bounded(spark, pool, tmp_path, monkeypatch):
    """The driver's key sample (for the dedup pass's key ranges) is a key every
    ``KEY_SAMPLE_EVERY`` rows up to ``KEY_SAMPLE_MAX`` keys in all, from the plan's row estimate:
    past it the keys thin out (the ranges are the engine's shuffle partitions, not a function of
    the pool). Sparser cuts change no byte of the tables."""
    import curate.ingest.job as job

    small = [{"file_index": 0, "format": "parquet", "rows_planned": 250_000}, {"file_index": 1, "format": "csv"}]
    sizes = [{"file_index": 0, "bytes": 10 ** 9}, {"file_index": 1, "bytes": 10 ** 6}]
    assert job.key_sample_every(small, sizes) == 1024
    big = [{"file_index": i, "format": "parquet", "rows_planned": 250_000} for i in range(4_000)]  # 1B rows
    assert job.key_sample_every(big, [{"file_index": i, "bytes": 1} for i in range(4_000)]) == -(-10 ** 9 // 262_144)
    folder = [{"file_index": 0, "format": "imagefolder"}] * 3  # three tasks of an image folder, not its bytes
    assert job.key_sample_every(folder, [{"file_index": 0, "bytes": 10 ** 12}]) == 1024
    text = [{"file_index": 0, "format": "tsv"}]
    assert job.key_sample_every(text, [{"file_index": 0, "bytes": 10 ** 12}]) == -(-10 ** 10 // 262_144)
    monkeypatch.setattr(job, "KEY_SAMPLE_EVERY", 2)  # several key ranges from a dense sample
    dense = run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(pool)], output=str(tmp_path / "dense"),
                                                          rows_per_shard=9))
    monkeypatch.setattr(job, "KEY_SAMPLE_MAX", 3)  # a key every ~43 rows of this pool's estimate
    sparse = run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(pool)], output=str(tmp_path / "sparse"),
                                                           rows_per_shard=9))
    assert table_bytes(tmp_path / "dense") == table_bytes(tmp_path / "sparse") != {}
    assert dense["counts"] == sparse["counts"] and per_file(dense) == per_file(sparse)
