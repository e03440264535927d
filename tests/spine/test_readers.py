"""Each reader on well-formed and malformed inputs, through the ingest stage (no Spark)."""

import io
import json
import tarfile
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.errors import InputFileError
from curate.ingest.stage import prepare_batch
from curate.readers import ColumnMap, ReaderOptions, detect_format, expand_inputs, read_file_raw
from curate.uid import derive_uid


def staged_rows(path, fmt=None, **opts):
    options = ReaderOptions(**opts)
    rows = []
    for raw in read_file_raw(str(path), options, fmt):
        staged, counts = prepare_batch(raw, str(path), 0)
        assert counts["rows"] == counts["samples"] + counts["rejects"]
        rows += staged.to_pylist()
    return rows


def by_kind(rows):
    return ([r for r in rows if r["kind"] == "sample"], [r for r in rows if r["kind"] == "reject"])


def test_csv_with_header_malformed_rows_and_bad_bytes(tmp_path):
    p = tmp_path / "pool.csv"
    p.write_bytes(
        b'url,caption,license\n'
        b'http://x/1.jpg,"a  red\ncar",cc\n'        # quoted newline inside a record
        b'http://x/2.jpg,two fields only\n'          # malformed: 2 of 3 fields
        b'http://x/3.jpg,caf\xe9 latin1,cc\n'        # not UTF-8
        b',empty url,cc\n'
        b'\n'                                        # blank line: not a record
        b'http://x/4.jpg,  ,cc\n'                    # whitespace-only caption -> empty text, kept
    )
    rows = staged_rows(p)
    samples, rejects = by_kind(rows)
    assert [r["source_row"] for r in rows] == [0, 1, 2, 3, 4]
    assert [(r["source_row"], r["reason"]) for r in rejects] == [
        (1, "malformed_record"), (2, "text_not_utf8"), (3, "empty_url")]
    assert "expected 3" in rejects[0]["detail"]
    assert "\\xe9" in rejects[1]["raw"]
    assert samples[0]["text"] == "a red car"
    assert json.loads(samples[0]["extra"]) == {"license": "cc"}
    assert samples[0]["uid"] == derive_uid("http://x/1.jpg", "a red car")
    assert samples[1]["text"] == ""


def test_tsv_without_header_detects_url_and_caption_columns(tmp_path):
    p = tmp_path / "cc.tsv"
    p.write_text("a dog on grass\thttp://x/a.jpg\nsunset\thttp://x/b.jpg\n")
    samples, rejects = by_kind(staged_rows(p))
    assert not rejects
    assert [(s["url"], s["text"]) for s in samples] == [("http://x/a.jpg", "a dog on grass"), ("http://x/b.jpg", "sunset")]
    # Explicit mapping by index, header forced off.
    samples2, _ = by_kind(staged_rows(p, header="no", columns=ColumnMap(url="1", text="0")))
    assert [s["uid"] for s in samples2] == [s["uid"] for s in samples]


def test_jsonl_rows_types_and_extras(tmp_path):
    p = tmp_path / "pool.jsonl"
    lines = [
        json.dumps({"url": "http://x/1.jpg", "caption": "one", "width": 640, "height": 480, "lang": "en"}),
        "{not json",
        json.dumps({"url": 12, "caption": "wrong type"}),
        json.dumps(["a", "list"]),
        "",
        json.dumps({"url": "http://x/2.jpg"}),                      # no caption
        json.dumps({"url": "http://x/3.jpg", "caption": "big", "width": "wide"}),
        json.dumps({"url": "http://x/4.jpg", "text": "uid given", "uid": "ABCDEF0123456789ABCDEF0123456789"}),
        json.dumps({"url": "http://x/5.jpg", "text": "bad uid", "uid": "123"}),
    ]
    p.write_bytes(("\n".join(lines) + "\n").encode() + b'{"url": "http://x/6.jpg", "text": "\xff"}\n')
    samples, rejects = by_kind(staged_rows(p))
    assert [(r["source_row"], r["reason"]) for r in rejects] == [
        (1, "malformed_record"), (2, "wrong_type"), (3, "malformed_record"), (5, "missing_text"),
        (6, "wrong_type"), (8, "invalid_uid"), (9, "text_not_utf8")]
    assert samples[0]["original_width"] == 640 and json.loads(samples[0]["extra"]) == {"lang": "en"}
    assert samples[1]["uid"] == "abcdef0123456789abcdef0123456789"  # input uid kept, lowercased


def test_parquet_datacomp_metadata_keeps_uid_sizes_and_extras(tmp_path):
    p = tmp_path / "meta.parquet"
    pq.write_table(pa.table({
        "uid": ["f" * 32, "0" * 31 + "1", None],
        "url": ["http://x/1.jpg", "http://x/2.jpg", "http://x/3.jpg"],
        "text": ["one", "two", "three"],
        "original_width": [512, 100, 300],
        "original_height": [256, 100, 300],
        "clip_b32_similarity_score": [0.3, float("nan"), 0.2],
        "face_bboxes": [[[0.1, 0.2, 0.3, 0.4]], [], []],
    }), p)
    samples, rejects = by_kind(staged_rows(p))
    assert not rejects
    assert samples[0]["uid"] == "f" * 32 and samples[0]["original_width"] == 512
    extra = json.loads(samples[1]["extra"])
    assert extra["clip_b32_similarity_score"] is None and extra["face_bboxes"] == []
    assert samples[2]["uid"] == derive_uid("http://x/3.jpg", "three")  # null uid -> derived


def test_parquet_wrong_schema_and_corrupt_file_name_the_file(tmp_path):
    p = tmp_path / "nums.parquet"
    pq.write_table(pa.table({"url": [1, 2], "text": ["a", "b"]}), p)
    with pytest.raises(InputFileError, match=r"nums\.parquet: column 'url' \(url\) has type int64"):
        list(read_file_raw(str(p), ReaderOptions()))
    p2 = tmp_path / "nocol.parquet"
    pq.write_table(pa.table({"link2": ["x"], "text": ["a"]}), p2)
    with pytest.raises(InputFileError, match=r"nocol\.parquet: no url column found.*--url-col"):
        list(read_file_raw(str(p2), ReaderOptions()))
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"url": ["http://x"] * 1000, "text": [f"t{i}" for i in range(1000)]}), good)
    trunc = tmp_path / "trunc.parquet"
    trunc.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(InputFileError, match=r"trunc\.parquet: not a readable Parquet file"):
        list(read_file_raw(str(trunc), ReaderOptions()))


def test_binary_parquet_text_with_bad_utf8_is_a_row_reject(tmp_path):
    p = tmp_path / "bin.parquet"
    pq.write_table(pa.table({"url": [b"http://x/1", b"http://x/2"], "text": [b"ok", b"\xff\xfe"]}), p)
    samples, rejects = by_kind(staged_rows(p))
    assert len(samples) == 1 and rejects[0]["reason"] == "text_not_utf8" and rejects[0]["source_row"] == 1


def _tar(path, members):
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


def test_webdataset_tar_groups_captions_json_and_unsafe_paths(tmp_path):
    p = tmp_path / "00000.tar"
    _tar(p, [
        ("000.jpg", b"\xff\xd8jpeg"), ("000.txt", b"a cat"), ("000.json", json.dumps({"url": "http://x/0.jpg", "original_width": 300, "original_height": 200, "key": "000"}).encode()),
        ("001.json", json.dumps({"url": "http://x/1.jpg", "caption": "from json"}).encode()),
        ("../../etc/x.txt", b"escape"),
        ("003.txt", b"\xff"), ("003.json", b'{"url": "http://x/3.jpg"}'),
    ])
    rows = staged_rows(p)
    samples, rejects = by_kind(rows)
    assert [(s["url"], s["text"], s["original_width"]) for s in samples] == [
        ("http://x/0.jpg", "a cat", 300), ("http://x/1.jpg", "from json", None)]
    assert json.loads(samples[0]["extra"])["__key__"] == "000"
    assert [(r["source_row"], r["reason"]) for r in rejects] == [(2, "unsafe_member_path"), (3, "text_not_utf8")]
    bad = tmp_path / "bad.tar"
    bad.write_bytes(p.read_bytes()[:700])
    with pytest.raises(InputFileError, match=r"bad\.tar"):
        staged_rows(bad)


def test_coco_captions(tmp_path):
    p = tmp_path / "caps.json"
    p.write_text(json.dumps({
        "images": [{"id": 1, "coco_url": "http://c/1.jpg", "width": 640, "height": 480, "file_name": "1.jpg"}],
        "annotations": [{"image_id": 1, "id": 10, "caption": "A man  riding"}, {"image_id": 2, "id": 11, "caption": "orphan"},
                        {"image_id": 1, "id": 12, "caption": 5}],
    }))
    samples, rejects = by_kind(staged_rows(p))
    assert samples[0]["text"] == "A man riding" and samples[0]["original_height"] == 480
    assert [r["reason"] for r in rejects] == ["malformed_record", "wrong_type"]


def test_image_folder_with_captions_file_and_sidecars(tmp_path):
    imgs = tmp_path / "images"
    imgs.mkdir()
    Image.new("RGB", (40, 30), "red").save(imgs / "a.jpg")
    (imgs / "b.jpg").write_bytes(b"not an image")
    caps = tmp_path / "captions.csv"
    caps.write_text("image,caption\na.jpg,a red box\na.jpg,second caption\nmissing.jpg,x\nb.jpg,broken\n../a.jpg,escape\n")
    samples, rejects = by_kind(staged_rows(imgs, "imagefolder", captions=str(caps)))
    assert [(s["text"], s["original_width"], s["original_height"]) for s in samples] == [("a red box", 40, 30), ("second caption", 40, 30)]
    assert samples[0]["url"] == (imgs / "a.jpg").resolve().as_uri()
    assert [r["reason"] for r in rejects] == ["missing_image", "unreadable_image", "unsafe_member_path"]
    # Sidecar captions.
    side = tmp_path / "side"
    side.mkdir()
    Image.new("RGB", (10, 10)).save(side / "x.png")
    (side / "x.txt").write_text("sidecar caption\n")
    Image.new("RGB", (10, 10)).save(side / "y.png")
    samples, rejects = by_kind(staged_rows(side, "imagefolder"))
    assert [s["text"] for s in samples] == ["sidecar caption"] and rejects[0]["reason"] == "missing_text"


def test_format_detection_and_expansion(tmp_path):
    (tmp_path / "a.parquet").write_bytes(b"")
    assert detect_format(str(tmp_path / "a.parquet")) == "parquet"
    with pytest.raises(InputFileError, match="--format"):
        detect_format(str(tmp_path / "x.weird"))
    with pytest.raises(InputFileError, match="no such file"):
        expand_inputs([str(tmp_path / "nope.csv")], None)
    d = tmp_path / "i2d"
    d.mkdir()
    (d / "00000.tar").write_bytes(b"")
    pq.write_table(pa.table({"url": ["u"], "caption": ["c"]}), d / "00000.parquet")
    (d / "00000_stats.json").write_text("{}")
    assert detect_format(str(d)) == "img2dataset"
    assert expand_inputs([str(d)], None) == [(str((d / "00000.parquet").resolve()), "parquet")]


def test_stage_rejects_long_captions_and_bad_sizes(tmp_path):
    p = tmp_path / "p.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in [
        {"url": "http://x/1", "text": "x" * 200_001},
        {"url": "http://x/2", "text": "ok", "width": -5, "height": 10},
        {"url": " http://x/3 ", "text": "ok"},
    ]))
    samples, rejects = by_kind(staged_rows(p))
    assert [r["reason"] for r in rejects] == ["text_too_long", "invalid_size"]
    assert len(rejects[0]["raw"]) == 2000
    assert samples[0]["url"] == "http://x/3"
