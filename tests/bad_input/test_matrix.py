"""The bad-input matrix: each hostile or broken input with its expected outcome (a reject or a
failure with a reason, or one clear error naming the file), and for the row-level ones the
counts of kept + removed + failed equal the input count.

Download side: a real HTTP server on 127.0.0.1 serving generated images and their broken
versions, fetched by curate download (img2dataset, in-process loop). Ingest side: one real
ingest run on Spark local mode over every row-level bad file, then the basic filter.
"""

from __future__ import annotations

import io
import json
import struct
import tarfile
import threading
import zlib
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from curate.cli import _user_message
from curate.download import DownloadOptions, FetchPolicy, run_download
from curate.engine import LocalExecutor
from curate.errors import CurateError
from curate.filters.job import run_filters
from curate.filters.stages import parse_filter
from curate.ingest.job import IngestConfig, run_ingest
from curate.engine.spark import SparkExecutor
from curate.tables import Dataset
from curate.uid import derive_uid


# ---------------------------------------------------------------- images and their broken forms
def _image(fmt: str, size=(96, 64)) -> bytes:
    x = np.linspace(0, 255, size[0] * size[1] * 3).astype(np.uint8).reshape(size[1], size[0], 3)
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, format=fmt)
    return buf.getvalue()


def _png_bomb(side: int = 30000) -> bytes:
    """A real 1-bit PNG of side x side pixels: about 110 KB, 900 megapixels when decoded."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" * (1 + (side + 7) // 8)
    comp = zlib.compressobj(9)
    body = b"".join(comp.compress(row * 1000) for _ in range(side // 1000)) + comp.flush()
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", body) + chunk(b"IEND", b""))


def _corrupt(data: bytes, keep: int) -> bytes:
    """The real header, then noise where the compressed pixels were."""
    rng = np.random.default_rng(0)
    return data[:keep] + rng.integers(0, 256, len(data) - keep, dtype=np.uint8).tobytes()


JPEG, PNG, WEBP = _image("JPEG"), _image("PNG"), _image("WEBP")
# Noise over a JPEG/PNG header leaves no identifiable image (not_an_image); noise after a WebP
# header fails in the decoder (decode_error).

# name -> (bytes, content type, expected status, expected error class)
DOWNLOAD_CASES = {
    "good.jpg": (JPEG, "image/jpeg", "success", None),
    "good.png": (PNG, "image/png", "success", None),
    "good.webp": (WEBP, "image/webp", "success", None),
    "truncated.jpg": (JPEG[: len(JPEG) // 2], "image/jpeg", "failed", "decode_error"),
    "corrupt.jpg": (_corrupt(JPEG, 200), "image/jpeg", "failed", "not_an_image"),
    "truncated.png": (PNG[: len(PNG) // 2], "image/png", "failed", "decode_error"),
    "corrupt.png": (_corrupt(PNG, 40), "image/png", "failed", "not_an_image"),
    "truncated.webp": (WEBP[: len(WEBP) // 2], "image/webp", "failed", "decode_error"),
    "corrupt.webp": (_corrupt(WEBP, 30), "image/webp", "failed", "decode_error"),
    "bomb.png": (_png_bomb(), "image/png", "failed", "too_large"),
    "page-as-image.jpg": (b"<!DOCTYPE html><html><body>please enable javascript</body></html>", "image/jpeg",
                          "failed", "not_an_image"),
}


class _Server:
    def __init__(self, routes: dict[str, tuple[bytes, str]]):
        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                body, ctype = routes.get(self.path.lstrip("/"), (b"no", "text/plain"))
                self.send_response(200 if self.path.lstrip("/") in routes else 404)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def _samples(rows: list[tuple[str, str]]) -> pa.Table:
    n = len(rows)
    return pa.table({
        "uid": [derive_uid(u, t) for u, t in rows], "url": [u for u, _ in rows], "text": [t for _, t in rows],
        "source_file": ["/test/pool.jsonl"] * n, "source_row": pa.array(range(n), pa.int64()),
        "original_width": pa.nulls(n, pa.int32()), "original_height": pa.nulls(n, pa.int32()),
        "extra": pa.nulls(n, pa.string())})


@pytest.fixture(scope="module")
def downloaded(tmp_path_factory):
    server = _Server({name: (body, ctype) for name, (body, ctype, _, _) in DOWNLOAD_CASES.items()})
    try:
        ds = Dataset(tmp_path_factory.mktemp("bad-downloads") / "ds")
        rows = [(f"{server.base}/{name}", f"caption of {name}") for name in DOWNLOAD_CASES]
        ds.write_table("samples", _samples(rows).sort_by("uid"), schema="samples")
        opts = DownloadOptions(samples_per_shard=100, thread_count=4, timeout=5.0,
                               policy=FetchPolicy(allow_networks=["127.0.0.1/32"], max_seconds=10))
        stats = run_download(ds, LocalExecutor(), opts)
    finally:
        server.close()
    table = ds.read("downloads", schema="downloads")
    by_name = {}
    for uid, name in zip([derive_uid(u, t) for u, t in rows], DOWNLOAD_CASES):
        by_name[name] = next(r for r in table.to_pylist() if r["uid"] == uid)
    return stats, by_name


@pytest.mark.parametrize("name", list(DOWNLOAD_CASES))
def test_download_outcome(downloaded, name):
    stats, rows = downloaded
    _, _, status, error_class = DOWNLOAD_CASES[name]
    row = rows[name]
    assert (row["status"], row["error_class"]) == (status, error_class), row["error_message"]
    if status == "failed":
        assert row["error_message"] and row["shard"] is None
    assert stats["success"] + stats["failed"] == stats["samples"] == len(DOWNLOAD_CASES)


# ---------------------------------------------------------------- ingest side (one Spark run)
BIG = 100 * 1024 * 1024  # a 100 MB caption


def _tar(path: Path, members: list[tuple[str, bytes]]) -> None:
    with tarfile.open(path, "w") as tf:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


@pytest.fixture(scope="module")
def ingested(spark, tmp_path_factory):
    d = tmp_path_factory.mktemp("bad-ingest")
    files = {}
    files["not_utf8"] = d / "latin1.csv"
    files["not_utf8"].write_bytes(b"url,caption\nhttp://a/1.jpg,caf\xe9 au lait\nhttp://a/2.jpg,fine caption here\n")
    files["huge_caption"] = d / "huge.jsonl"
    with open(files["huge_caption"], "w") as f:
        f.write(json.dumps({"url": "http://b/1.jpg", "caption": "word " * (BIG // 5)}) + "\n")
        f.write(json.dumps({"url": "http://b/2.jpg", "caption": "a normal caption"}) + "\n")
    files["empty_captions"] = d / "empty.jsonl"
    files["empty_captions"].write_text("\n".join(json.dumps(r) for r in [
        {"url": "http://c/1.jpg", "caption": ""}, {"url": "http://c/2.jpg", "caption": " \t\n "},
        {"url": "http://c/3.jpg", "caption": "a dog running on the beach"}]) + "\n")
    uid = "0f" * 16
    files["dup_uid_first"] = d / "uids-1.parquet"
    files["dup_uid_second"] = d / "uids-2.parquet"
    pq.write_table(pa.table({"uid": [uid, "1e" * 16], "url": ["http://d/1.jpg", "http://d/2.jpg"],
                             "text": ["first copy wins", "another one"]}), files["dup_uid_first"])
    pq.write_table(pa.table({"uid": [uid.upper()], "url": ["http://d/9.jpg"], "text": ["second copy"]}),
                   files["dup_uid_second"])
    files["unsafe_tar"] = d / "00000.tar"
    _tar(files["unsafe_tar"], [("000.txt", b"a cat on a mat"), ("000.json", b'{"url": "http://e/0.jpg"}'),
                               ("../../etc/curate-escape.txt", b"escape"),
                               ("../../etc/curate-escape.json", b'{"url": "http://e/x.jpg"}')])
    inputs = [str(p) for p in files.values()]
    out = d / "ds"
    m = run_ingest(SparkExecutor(spark), IngestConfig(inputs=inputs, output=str(out), rows_per_shard=1000))
    ds = Dataset(out)
    tables = {t: ds.read(t).to_pylist() for t in ("samples", "rejects", "duplicates")}
    return files, m, tables, ds, d


# case -> (input rows, kept, rejected {reason: n}, duplicates {reason: n})
INGEST_CASES = {
    "not_utf8": (2, 1, {"text_not_utf8": 1}, {}),
    "huge_caption": (2, 1, {"text_too_long": 1}, {}),
    "empty_captions": (3, 3, {}, {}),
    "dup_uid_first": (2, 2, {}, {}),
    "dup_uid_second": (1, 0, {}, {"duplicate_uid": 1}),
    "unsafe_tar": (2, 1, {"unsafe_member_path": 1}, {}),
}


@pytest.mark.parametrize("case", list(INGEST_CASES))
def test_ingest_outcome_and_counts_per_file(ingested, case):
    files, m, tables, _, _ = ingested
    n_in, n_kept, rejected, duplicated = INGEST_CASES[case]
    src = str(files[case].resolve())
    kept = [r for r in tables["samples"] if r["source_file"] == src]
    rej = Counter(r["reason"] for r in tables["rejects"] if r["source_file"] == src)
    dup = Counter(r["reason"] for r in tables["duplicates"] if r["source_file"] == src)
    assert (len(kept), dict(rej), dict(dup)) == (n_kept, rejected, duplicated)
    assert len(kept) + sum(rej.values()) + sum(dup.values()) == n_in
    for r in tables["rejects"]:
        assert r["detail"] and (r["raw"] is None or len(r["raw"]) <= 2000)  # a 100 MB caption is not copied


def test_ingest_totals_add_up(ingested):
    _, m, tables, _, _ = ingested
    c = m["counts"]
    assert c["input_rows"] == sum(v[0] for v in INGEST_CASES.values())
    assert c["kept"] + c["rejects"] + c["duplicates"] == c["input_rows"]
    assert (len(tables["samples"]), len(tables["rejects"]), len(tables["duplicates"])) == (
        c["kept"], c["rejects"], c["duplicates"])


def test_unsafe_tar_member_writes_nothing_outside(ingested):
    files, _, tables, ds, d = ingested
    for base in (d, ds.root, Path("/etc")):
        assert not list(base.parent.rglob("curate-escape*")) if base != Path("/etc") else \
            not (base / "curate-escape.txt").exists()
    rej = [r for r in tables["rejects"] if r["reason"] == "unsafe_member_path"]
    assert "../../etc/curate-escape" in rej[0]["detail"]


def test_empty_captions_are_kept_as_empty_text_and_the_basic_filter_removes_them(ingested):
    files, _, tables, ds, _ = ingested
    src = str(files["empty_captions"].resolve())
    rows = {r["url"]: r for r in tables["samples"] if r["source_file"] == src}
    assert rows["http://c/1.jpg"]["text"] == rows["http://c/2.jpg"]["text"] == ""
    m = run_filters(ds, [parse_filter("basic")], LocalExecutor())
    dec = {r["uid"]: r for r in ds.read("decisions/basic").to_pylist()}
    for url in ("http://c/1.jpg", "http://c/2.jpg"):
        d = dec[rows[url]["uid"]]
        assert d["kept"] is False and d["reason"] not in (None, "kept")
    c = m["counts"]
    assert c["kept"] + c["removed"] == c["samples"] == len(tables["samples"])


# ---------------------------------------------------------------- whole-file errors
def _bad_parquet(kind: str, d: Path) -> Path:
    p = d / f"{kind}.parquet"
    if kind == "wrong_schema":
        pq.write_table(pa.table({"image": ["http://x/1.jpg"], "label": [3]}), p)
    elif kind == "wrong_types":
        pq.write_table(pa.table({"url": pa.array([[1, 2]], pa.list_(pa.int64())), "text": [b"\x00\x01"]}), p)
    elif kind == "truncated":
        pq.write_table(pa.table({"url": [f"http://x/{i}.jpg" for i in range(500)],
                                 "text": [f"caption {i}" for i in range(500)]}), p)
        p.write_bytes(p.read_bytes()[:-200])
    return p


@pytest.mark.parametrize("kind", ["wrong_schema", "wrong_types", "truncated", "missing"])
def test_bad_parquet_files_are_one_clear_error_naming_the_file(spark, tmp_path, kind):
    p = tmp_path / "missing.parquet" if kind == "missing" else _bad_parquet(kind, tmp_path)
    with pytest.raises(Exception) as info:
        run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(p)], output=str(tmp_path / "ds")))
    msg = _user_message(info.value)  # what the CLI prints as its one line
    assert msg is not None, f"not a user error: {info.value!r}"
    assert p.name in msg
    assert not (tmp_path / "ds" / "samples").exists() or not list((tmp_path / "ds" / "samples").glob("*.parquet"))


# ---------------------------------------------------------------- embeddings
def _emb_dataset(root: Path, n: int = 24, nan_row: int | None = None, zero_row: int | None = None,
                 second_dim: int | None = None) -> Dataset:
    ds = Dataset(root)
    rows = [(f"http://f/{i}.jpg", f"a photo of a dog number {i}") for i in range(n)]
    samples = _samples(rows).sort_by("uid")
    samples = samples.set_column(5, "original_width", pa.array([300] * n, pa.int32()))
    samples = samples.set_column(6, "original_height", pa.array([200] * n, pa.int32()))
    ds.write_table("samples", samples, schema="samples")
    uids = samples.column("uid").to_pylist()
    rng = np.random.default_rng(0)
    half = n // 2
    for shard, (lo, hi) in enumerate([(0, half), (half, n)]):
        dim = second_dim if (second_dim and shard == 1) else 8
        x = rng.normal(size=(hi - lo, dim)).astype(np.float16)
        if nan_row is not None and lo <= nan_row < hi:
            x[nan_row - lo, 2] = np.nan
        if zero_row is not None and lo <= zero_row < hi:
            x[zero_row - lo] = 0  # the usual placeholder for a missing embedding
        fsl = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), pa.float16()), dim)
        t = pa.table({"uid": uids[lo:hi], "image_embedding": fsl, "text_embedding": fsl,
                      "clip_score": pa.array(rng.uniform(0.1, 0.4, hi - lo), pa.float32())})
        path = ds.shard_path("embeddings/m", shard)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(t, path)
    return ds


@pytest.mark.parametrize("problem", ["nan", "zero", "wrong_dim"])
@pytest.mark.parametrize("job", ["cluster", "image_based_filter"])
def test_bad_embeddings_are_rejected_naming_shard_and_row(tmp_path, problem, job):
    from curate.embedding_space.clusters import run_cluster

    ds = _emb_dataset(tmp_path / "ds", nan_row=15 if problem == "nan" else None,
                      zero_row=15 if problem == "zero" else None,
                      second_dim=16 if problem == "wrong_dim" else None)
    with pytest.raises(CurateError) as info:
        if job == "cluster":
            run_cluster(ds, "m", 2, executor=LocalExecutor())
        else:
            target = tmp_path / "target.npy"
            np.save(target, np.random.default_rng(1).normal(size=(3, 8)).astype(np.float32))
            run_filters(ds, [parse_filter(f"image_based:target={target},k=2")], LocalExecutor())
    msg = str(info.value)
    assert "part-00001.parquet" in msg
    if problem in ("nan", "zero"):
        bad_uid = ds.read("embeddings/m").column("uid")[15].as_py()
        assert ("NaN" if problem == "nan" else "all zeros in 1 rows") in msg and bad_uid in msg
    else:
        assert "dim 16" in msg and "dim 8" in msg


def test_missing_embeddings_shard_removes_its_samples_with_a_reason(tmp_path):
    ds = _emb_dataset(tmp_path / "ds")
    ds.shard_path("embeddings/m", 1).unlink()
    m = run_filters(ds, [parse_filter("clip_score:fraction=0.5")], LocalExecutor())
    c = m["counts"]
    assert c["filters"]["clip_score"]["no_embedding"] == 12
    assert c["kept"] + c["removed"] == c["samples"] == 24
    dec = ds.read("decisions/clip_score")
    assert dec.num_rows == 24 and sorted(set(dec.column("reason").to_pylist())) == ["kept", "low_clip_score",
                                                                                       "no_embedding"]
