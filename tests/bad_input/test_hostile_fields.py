"""Inputs an audit found crashing or losing rows (session 26): sizes past int64 or written in
non-ASCII digits, COCO ids that cannot name a record, Parquet sizes that are floats, uint64,
all-null or dictionary-encoded columns, a byte-order mark, a headerless CSV whose first record
is ragged, a header that swallows the file, a COCO file whose annotations come first, an image
folder whose captions file leaves images out, and a damaged shard read by ``stats``/``sql``.

Each becomes a reject with its reason and its offending value, a counted file outcome, or a
one-line error naming the file; one local ingest over a folder of them checks that the counts
add up per file.
"""

from __future__ import annotations

import json
from decimal import Decimal
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.cli import _user_message
from curate.engine import LocalExecutor
from curate.errors import CurateError
from curate.ingest.job import IngestConfig, run_ingest
from curate.readers.base import ReaderOptions
from curate.tables import Dataset


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    pool = tmp_path_factory.mktemp("hostile") / "pool"
    pool.mkdir()
    (pool / "sizes.csv").write_text("url,caption,width,height\n"
                                    "http://s/1,past int64,1180591620717411303424,5\n"
                                    "http://s/2,superscript two,\u00b2,5\n"
                                    "http://s/3,negative,-1,5\n"
                                    "http://s/4,fine,10,10\n")
    (pool / "sizes.jsonl").write_text('{"url":"http://j/1","caption":"a","width":1e300}\n'
                                      '{"url":"http://j/2","caption":"b","width":1180591620717411303424}\n'
                                      '{"url":"http://j/3","caption":"c","uid":"XYZ"}\n'
                                      '{"url":"http://j/4","caption":"d","width":7,"height":9}\n')
    (pool / "bom.csv").write_bytes(b"\xef\xbb\xbfurl,caption\r\nhttp://b/1,with a bom\r\n")
    (pool / "bom.jsonl").write_bytes(b'\xef\xbb\xbf{"url":"http://b/2","caption":"with a bom"}\n')
    (pool / "ragged.csv").write_text("http://r/1,b,c\nhttp://r/2,two\nhttp://r/3,three\n")
    pq.write_table(pa.table({"url": [f"http://u/{i}" for i in range(3)], "text": ["a", "b", "c"],
                             "width": pa.array([2**63 + 5, 5, 7], pa.uint64()),
                             "height": pa.array([5, 5, 5], pa.uint64())}), pool / "u64.parquet")
    pq.write_table(pa.table({"url": [f"http://f/{i}" for i in range(5)], "text": list("abcde"),
                             "width": [1.5, float("inf"), 1e300, float("nan"), 640.0],
                             "height": [5.0, 5.0, 5.0, 5.0, 480.0]}), pool / "floats.parquet")
    pq.write_table(pa.table({"url": ["http://n/1", "http://n/2"], "text": pa.nulls(2), "uid": pa.nulls(2)}),
                   pool / "nulls.parquet")
    pd.DataFrame({"url": ["http://c/1", "http://c/2"], "text": pd.Categorical(["x", "y"])}).to_parquet(
        pool / "categorical.parquet")
    pq.write_table(pa.table({"url": pa.array(["http://d/1", "http://d/2"]).dictionary_encode(), "text": ["p", "q"]}),
                   pool / "dictionary.parquet")
    (pool / "ids.json").write_text(json.dumps({
        "images": [{"id": [1], "coco_url": "http://i/1"}, {"id": 2, "coco_url": "http://i/2", "width": 2**70, "height": 3},
                   {"id": 3, "coco_url": "http://i/3", "width": 4, "height": 3}],
        "annotations": [{"image_id": [1], "caption": "a list id"}, {"image_id": 2, "caption": "huge"},
                        {"image_id": {"x": 1}, "caption": "an object id"}, {"image_id": 3, "caption": "fine"}]}))
    # a COCO file whose annotations fill the sniffed head before "images" appears
    anns = [{"image_id": 1, "id": i, "caption": f"caption number {i} " + "x" * 40} for i in range(120)]
    (pool / "annotations_first.json").write_text(json.dumps(
        {"annotations": anns, "images": [{"id": 1, "coco_url": "http://a/1", "width": 4, "height": 4}]}))
    # integers as pandas writes a column with gaps ("200.0"), in a CSV and in Parquet text and decimal columns
    (pool / "decimals.csv").write_text("url,caption,width,height\n"
                                       "http://e/1,gap written,200.0,100\n"
                                       "http://e/2,exponent,2e2,+3.\n"
                                       "http://e/3,a fraction,250.5,300\n"
                                       "http://e/4,huge exponent,1e999999999,4\n")
    pq.write_table(pa.table({"url": [f"http://t/{i}" for i in range(4)], "text": list("abcd"),
                             "width": pa.array(["200", "300.0", None, "x"])}), pool / "text_sizes.parquet")
    pq.write_table(pa.table({"url": [f"http://m/{i}" for i in range(3)], "text": list("abc"),
                             "width": pa.array([Decimal(200), Decimal("300.5"), None], pa.decimal128(5, 1))}),
                   pool / "decimal_sizes.parquet")
    out = pool.parent / "ds"
    m = run_ingest(LocalExecutor(), IngestConfig(inputs=[str(pool)], output=str(out)))
    return pool, out, m


def _rejects(out: Path, name: str) -> dict[int, dict]:
    return {r["source_row"]: r for r in Dataset(out).read("rejects").to_pylist() if Path(r["source_file"]).name == name}


def _kept(out: Path, name: str) -> list[dict]:
    return [r for r in Dataset(out).read("samples").to_pylist() if Path(r["source_file"]).name == name]


def test_every_file_is_read_and_the_counts_add_up_per_file(hostile):
    pool, out, m = hostile
    assert {Path(f["path"]).name for f in m["inputs"]} == {p.name for p in pool.iterdir()}
    assert m["skipped_files"] == []
    tables = {t: Counter(Path(r["source_file"]).name for r in Dataset(out).read(t).to_pylist())
              for t in ("samples", "duplicates", "rejects")}
    for f in m["inputs"]:
        name = Path(f["path"]).name
        assert f["kept"] + f["duplicates"] + f["rejects"] == f["rows"], f
        assert (tables["samples"][name], tables["duplicates"][name], tables["rejects"][name]) == \
            (f["kept"], f["duplicates"], f["rejects"]), name


def test_sizes_past_int64_or_not_ascii_digits_are_rejects_not_a_crash(hostile):
    _, out, _ = hostile
    csv = _rejects(out, "sizes.csv")
    assert {i: r["reason"] for i, r in csv.items()} == {0: "invalid_size", 1: "wrong_type", 2: "invalid_size"}
    assert "1180591620717411303424" in csv[0]["raw"] and "\u00b2" in csv[1]["raw"]
    assert [r["url"] for r in _kept(out, "sizes.csv")] == ["http://s/4"]
    jsonl = _rejects(out, "sizes.jsonl")
    assert {i: r["reason"] for i, r in jsonl.items()} == {0: "invalid_size", 1: "invalid_size", 2: "invalid_uid"}
    coco = _rejects(out, "ids.json")
    assert {i: r["reason"] for i, r in coco.items()} == {0: "malformed_record", 1: "invalid_size", 2: "malformed_record"}
    assert [r["text"] for r in _kept(out, "ids.json")] == ["fine"]


def test_a_reject_decided_by_the_ingest_rules_shows_the_fields_it_judged(hostile):
    _, out, _ = hostile
    bad_uid = _rejects(out, "sizes.jsonl")[2]
    assert json.loads(bad_uid["raw"]) == {"url": "http://j/3", "caption": "c", "uid": "XYZ"}
    negative = _rejects(out, "sizes.csv")[2]
    assert json.loads(negative["raw"]) == {"url": "http://s/3", "caption": "negative", "width": -1, "height": 5}


def test_parquet_sizes_are_judged_as_the_text_formats_judge_them(hostile):
    _, out, _ = hostile
    u64 = _rejects(out, "u64.parquet")
    assert {i: (r["reason"], r["raw"]) for i, r in u64.items()} == {0: ("invalid_size", str(2**63 + 5))}
    floats = _rejects(out, "floats.parquet")
    assert {i: r["reason"] for i, r in floats.items()} == {0: "wrong_type", 1: "wrong_type", 2: "invalid_size"}
    kept = {r["url"]: (r["original_width"], r["original_height"]) for r in _kept(out, "floats.parquet")}
    assert kept == {"http://f/3": (None, 5), "http://f/4": (640, 480)}  # NaN: unknown


def test_an_integer_written_as_a_decimal_is_a_size_in_every_reader(hostile):
    _, out, _ = hostile
    kept = {r["url"]: (r["original_width"], r["original_height"]) for r in _kept(out, "decimals.csv")}
    assert kept == {"http://e/1": (200, 100), "http://e/2": (200, 3)}
    assert {i: r["reason"] for i, r in _rejects(out, "decimals.csv").items()} == {2: "wrong_type", 3: "invalid_size"}
    kept = {r["url"]: r["original_width"] for r in _kept(out, "text_sizes.parquet")}
    assert kept == {"http://t/0": 200, "http://t/1": 300, "http://t/2": None}
    assert {i: (r["reason"], r["raw"]) for i, r in _rejects(out, "text_sizes.parquet").items()} == {3: ("wrong_type", "x")}
    assert {r["url"]: r["original_width"] for r in _kept(out, "decimal_sizes.parquet")} == \
        {"http://m/0": 200, "http://m/2": None}
    assert {i: r["reason"] for i, r in _rejects(out, "decimal_sizes.parquet").items()} == {1: "wrong_type"}


def test_all_null_and_dictionary_columns_are_read(hostile):
    _, out, _ = hostile
    assert {r["reason"] for r in _rejects(out, "nulls.parquet").values()} == {"missing_text"}
    assert sorted(r["text"] for r in _kept(out, "categorical.parquet")) == ["x", "y"]
    assert sorted(r["url"] for r in _kept(out, "dictionary.parquet")) == ["http://d/1", "http://d/2"]


def test_a_byte_order_mark_is_not_part_of_the_first_column(hostile):
    _, out, _ = hostile
    assert [r["url"] for r in _kept(out, "bom.csv")] == ["http://b/1"]
    assert [r["url"] for r in _kept(out, "bom.jsonl")] == ["http://b/2"]


def test_a_headerless_files_ragged_first_record_is_one_reject(hostile):
    _, out, _ = hostile
    assert {i: r["reason"] for i, r in _rejects(out, "ragged.csv").items()} == {0: "malformed_record"}
    assert sorted(r["text"] for r in _kept(out, "ragged.csv")) == ["three", "two"]


def test_a_coco_file_with_its_annotations_first_is_read_in_a_folder(hostile):
    _, _, m = hostile
    [f] = [f for f in m["inputs"] if Path(f["path"]).name == "annotations_first.json"]
    assert (f["format"], f["rows"], f["kept"]) == ("coco", 120, 120)


def test_a_header_that_swallows_the_file_gives_a_bounded_one_line_error(tmp_path):
    bad = tmp_path / "open_quote.csv"
    bad.write_text('url,"caption\n' + "".join(f"http://q/{i},caption {i}\n" for i in range(2000)))
    with pytest.raises(CurateError) as e:
        run_ingest(LocalExecutor(), IngestConfig(inputs=[str(bad)], output=str(tmp_path / "ds")))
    msg = _user_message(e.value)
    assert "open_quote.csv" in msg and "no text column found" in msg and "\n" not in msg.strip()
    assert len(msg) < 1000


def test_images_a_captions_file_does_not_name_are_counted_not_lost(tmp_path, monkeypatch):
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.png", "e.jpg", "sub/d.jpg"):
        Image.new("RGB", (8, 6)).save(folder / name)
    (folder / "captions.csv").write_text("image,caption\na.jpg,one\nb.jpg,two\nsub/d.jpg,three\nz.jpg,gone\n")
    m = run_ingest(LocalExecutor(), IngestConfig(inputs=[str(folder)], output=str(tmp_path / "ds")))
    c = m["counts"]
    assert (c["input_rows"], c["kept"], c["rejects"]) == (4, 3, 1)  # z.jpg: a missing_image reject
    skipped = {Path(f["path"]).name: f["outcome"] for f in m["skipped_files"]}
    assert skipped == {"c.png": "uncaptioned", "e.jpg": "uncaptioned"}
    assert c["files_skipped"] == {"uncaptioned": 2}
    # named from the input as given (here relative to the working folder), as other skipped files are
    monkeypatch.chdir(tmp_path)
    m = run_ingest(LocalExecutor(), IngestConfig(inputs=["imgs"], output=str(tmp_path / "ds2")))
    assert sorted(f["path"] for f in m["skipped_files"]) == ["imgs/c.png", "imgs/e.jpg"]
    assert m["skipped_files"][0]["detail"] == "named by no row of its captions file imgs/captions.csv"


def test_caption_files_an_image_folder_does_not_read_are_counted(tmp_path):
    """A folder read by its captions file reads neither a second captions file nor .txt
    sidecars; a sidecar folder does not read a .txt that is no image's caption: each is a
    counted outcome naming the file read instead. The captions file's own rejects name it."""
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("x.jpg", "y.jpg"):
        Image.new("RGB", (8, 6)).save(folder / name)
    (folder / "captions.csv").write_text("image,caption\nx.jpg,from csv\ny.jpg,a,b\n")
    (folder / "captions.jsonl").write_text('{"image": "y.jpg", "caption": "from jsonl"}\n')
    (folder / "y.txt").write_text("a sidecar")
    m = run_ingest(LocalExecutor(), IngestConfig(inputs=[str(folder)], output=str(tmp_path / "ds")))
    skipped = {Path(f["path"]).name: (f["outcome"], f["detail"]) for f in m["skipped_files"]}
    assert skipped["captions.jsonl"] == ("unsupported", ("another captions file: the folder's captions are read "
                                                         "from captions.csv (--captions names the one to read)"))
    assert skipped["y.txt"] == ("unsupported", ("a .txt caption: the folder's captions are read from captions.csv, "
                                                "not from .txt sidecars"))
    assert skipped["y.jpg"][0] == "uncaptioned" and len(skipped) == 3
    [reject] = Dataset(tmp_path / "ds").read("rejects").to_pylist()
    assert reject["detail"].startswith("captions.csv: line 3: ")
    # --captions picks the other file: the first is then the one not read
    m = run_ingest(LocalExecutor(), IngestConfig(inputs=[str(folder)], output=str(tmp_path / "ds2"),
                                                 options=ReaderOptions(captions=str(folder / "captions.jsonl"))))
    skipped = {Path(f["path"]).name: f["outcome"] for f in m["skipped_files"]}
    assert skipped == {"captions.csv": "unsupported", "y.txt": "unsupported", "x.jpg": "uncaptioned"}
    # sidecars: a .txt beside no image of its name
    side = tmp_path / "side"
    side.mkdir()
    Image.new("RGB", (8, 6)).save(side / "x.jpg")
    (side / "x.txt").write_text("x's caption")
    (side / "notes.txt").write_text("not a caption")
    m = run_ingest(LocalExecutor(), IngestConfig(inputs=[str(side)], output=str(tmp_path / "ds3")))
    assert [(Path(f["path"]).name, f["outcome"]) for f in m["skipped_files"]] == [("notes.txt", "unsupported")]
    assert m["counts"]["kept"] == 1


def test_a_captions_file_beside_an_images_folder_names_the_images_in_it(tmp_path):
    """Flickr8k's layout (captions.csv beside images/, as `curate eval -r` reads it): a name not
    beside the captions file is the image in images/; none of them is uncaptioned."""
    folder = tmp_path / "flickr"
    (folder / "images").mkdir(parents=True)
    for name in ("a.jpg", "b.jpg", "c.jpg"):
        Image.new("RGB", (8, 6)).save(folder / "images" / name)
    Image.new("RGB", (4, 4)).save(folder / "b.jpg")  # one beside the file: that one is meant
    (folder / "captions.csv").write_text("image,caption\na.jpg,one\na.jpg,uno\nb.jpg,two\nz.jpg,gone\n")
    m = run_ingest(LocalExecutor(), IngestConfig(inputs=[str(folder)], output=str(tmp_path / "ds")))
    c = m["counts"]
    assert (c["input_rows"], c["kept"], c["rejects"]) == (4, 3, 1)  # z.jpg: a missing_image reject
    assert {Path(f["path"]).name: f["outcome"] for f in m["skipped_files"]} == {"c.jpg": "uncaptioned"}
    urls = sorted(Dataset(tmp_path / "ds").read("samples").column("url").to_pylist())
    assert [u.rsplit("/flickr/", 1)[1] for u in urls] == ["b.jpg", "images/a.jpg", "images/a.jpg"]


def test_a_damaged_shard_is_one_line_in_stats_and_left_out_of_sql(tmp_path, capsys):
    from curate.sql.connection import connect
    from curate.stats import table_rows

    src = tmp_path / "pool.csv"
    src.write_text("url,caption\nhttp://x/1,one\nhttp://x/2,\n")
    out = tmp_path / "ds"
    run_ingest(LocalExecutor(), IngestConfig(inputs=[str(src)], output=str(out)))
    [shard] = (out / "rejects").glob("*.parquet")
    with open(shard, "r+b") as f:
        f.truncate(100)
    with pytest.raises(CurateError) as e:
        table_rows(Dataset(out))
    msg = _user_message(e.value)
    assert str(shard) in msg and "damaged shard of table 'rejects'" in msg and "\n" not in msg.strip()
    con = connect(Dataset(out))
    assert con.execute("SELECT count(*) FROM samples").fetchone() == (2,)
    assert "table 'rejects' left out" in capsys.readouterr().err
