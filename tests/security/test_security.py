"""Security properties: the downloader cannot be steered into the local network, tar members
never escape, checkpoints never run pickled code, `curate sql` cannot write or read outside
the dataset, and no table or manifest of a pipeline run holds a pickle."""

from __future__ import annotations

import ast
import json
import os
import pickle
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from curate.download.safety import BlockedAddressError, FetchPolicy, build_opener
from curate.errors import CurateError
from curate.readers.webdataset import unsafe_member

REPO = Path(__file__).resolve().parents[2]


# ---------------------------------------------------------------- downloader address policy
class _Recorder:
    """127.0.0.1 server: /ok answers an image; /to?u=URL redirects there. Records every request."""

    def __init__(self):
        self.paths: list[str] = []
        rec = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                rec.paths.append(self.path)
                if self.path.startswith("/to?u="):
                    self.send_response(302)
                    self.send_header("Location", self.path[len("/to?u="):])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                body = b"\xff\xd8\xff\xe0 not really a jpeg"
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def recorder():
    r = _Recorder()
    yield r
    r.close()


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "2130706433", "127.1", "[::ffff:127.0.0.1]", "[::1]"])
def test_default_policy_refuses_loopback_in_any_spelling_before_connecting(recorder, host):
    opener = build_opener(FetchPolicy())
    with pytest.raises(Exception) as info:
        opener.open(f"http://{host}:{recorder.port}/ok", timeout=5)
    assert isinstance(info.value, BlockedAddressError) or isinstance(getattr(info.value, "reason", None), BlockedAddressError)
    assert "blocked address" in str(info.value)
    assert recorder.paths == []  # never connected


@pytest.mark.parametrize("target,why", [
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://100.100.100.200/latest/meta-data/", "cloud metadata"),
    ("http://10.1.2.3/x.jpg", "private"),
    ("http://192.168.0.1/x.jpg", "private"),
    ("http://127.0.0.2:{port}/ok", "loopback"),
    ("http://[::1]:{port}/ok", "loopback"),  # localhost would be 127.0.0.1, which this test allows
])
def test_redirects_into_the_local_network_are_refused(recorder, target, why):
    # The first hop is allowed (the test server), the redirect target is checked again.
    opener = build_opener(FetchPolicy(allow_networks=["127.0.0.1/32"]))
    url = f"http://127.0.0.1:{recorder.port}/to?u={target.format(port=recorder.port)}"
    with pytest.raises(Exception) as info:
        opener.open(url, timeout=5).read()
    msg = str(info.value)
    assert "blocked address" in msg and why in msg
    assert recorder.paths == [url.split(str(recorder.port), 1)[1]]  # only the first hop reached a server


def test_an_allowed_redirect_is_followed(recorder):
    opener = build_opener(FetchPolicy(allow_networks=["127.0.0.1/32"]))
    body = opener.open(f"http://127.0.0.1:{recorder.port}/to?u=/ok", timeout=5).read()
    assert body.startswith(b"\xff\xd8") and recorder.paths == ["/to?u=/ok", "/ok"]


@pytest.mark.parametrize("url, why", [("file:///etc/passwd", "blocked file URL"), ("ftp://127.0.0.1/x.jpg", "unknown url type"),
                                      ("data:image/png;base64,AAAA", "unknown url type")])
def test_other_schemes_are_refused(url, why):
    with pytest.raises(Exception) as info:
        build_opener(FetchPolicy()).open(url, timeout=5)
    assert why in str(info.value)


# ---------------------------------------------------------------- tar members
@pytest.mark.parametrize("name,unsafe", [
    ("../../etc/x", True), ("/etc/passwd", True), ("a/../../x", True), ("..\\..\\x.txt", True),
    ("C:\\windows\\x", True), ("..", True), ("000.jpg", False), ("a/b/000.txt", False), ("a..b.txt", False),
])
def test_tar_member_paths(name, unsafe):
    assert unsafe_member(name) is unsafe


def _calls(names: set[str]):
    for path in sorted((REPO / "curate").rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in names:
                yield path.relative_to(REPO), node


def test_curate_never_extracts_tar_members_to_disk():
    # Tars are read member by member in memory (readers, embed) and written from uids (reshard):
    # no extract/extractall call exists that a crafted member name could steer.
    assert [(str(p), n.lineno) for p, n in _calls({"extract", "extractall"})] == []


def test_every_torch_load_in_curate_is_weights_only():
    loads = list(_calls({"load"}))
    torch_loads = [(p, n) for p, n in loads if isinstance(n.func.value, ast.Name) and n.func.value.id == "torch"]
    assert torch_loads  # the check looks at real call sites
    for p, n in torch_loads:
        kw = {k.arg: k.value for k in n.keywords}
        assert isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True, f"{p}:{n.lineno}"


class _Payload:
    """Unpickling this runs code: what a malicious checkpoint would carry."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_checkpoint_carrying_pickled_code_is_refused_and_never_runs(tmp_path):
    import torch

    from curate.models import load_model

    marker = tmp_path / "pwned"
    ck = tmp_path / "evil.pt"
    torch.save({"state_dict": {}, "payload": _Payload(marker)}, ck)
    with pytest.raises(CurateError) as info:
        load_model("curate-tiny", pretrained=str(ck), device="cpu")
    assert "evil.pt" in str(info.value)
    assert not marker.exists()
    # open_clip_train's resume path uses torch.load's default, which must be weights-only too.
    with pytest.raises(pickle.UnpicklingError):
        torch.load(ck, map_location="cpu")
    assert not marker.exists()


# ---------------------------------------------------------------- curate sql
@pytest.fixture
def sql_dataset(tmp_dataset):
    import pyarrow as pa

    tmp_dataset.write_table("samples", pa.table({"uid": ["ab" * 16], "url": ["http://x/1.jpg"], "text": ["a cat"]}))
    return tmp_dataset


@pytest.mark.parametrize("sql", [
    "CREATE TABLE t AS SELECT 1",
    "INSERT INTO samples VALUES ('x', 'y', 'z')",
    "COPY (SELECT * FROM samples) TO '{root}/samples/part-00009.parquet'",
    "COPY (SELECT 1) TO '/tmp/curate-sql-escape.csv'",
    "ATTACH '/tmp/curate-sql-escape.duckdb' AS x",
    "INSTALL httpfs",
    "SET enable_external_access = true",
    "SELECT * FROM read_csv('/etc/passwd')",
    "SELECT * FROM read_text('/etc/hostname')",
    "SELECT 1; DROP VIEW samples",
    "PRAGMA database_list",
])
def test_curate_sql_is_read_only(sql_dataset, sql):
    from curate.sql import query

    before = {p.name: p.read_bytes() for p in sql_dataset.shards("samples")}
    with pytest.raises(CurateError):
        query(sql_dataset.root, sql.format(root=sql_dataset.root))
    assert {p.name: p.read_bytes() for p in sql_dataset.shards("samples")} == before
    assert not Path("/tmp/curate-sql-escape.csv").exists() and not Path("/tmp/curate-sql-escape.duckdb").exists()
    assert query(sql_dataset.root, "SELECT count(*) AS n FROM samples").to_pylist() == [{"n": 1}]


# ---------------------------------------------------------------- no pickle anywhere
PICKLE_HEADS = [bytes([0x80, proto]) for proto in range(2, 6)]


def _looks_pickled(data: bytes) -> bool:
    return any(data.startswith(h) for h in PICKLE_HEADS) or b"\x80\x04\x95" in data or b"\x80\x05\x95" in data


def test_no_pickle_in_any_table_or_manifest_of_a_pipeline_run(spark, tmp_path):
    from curate.engine import LocalExecutor
    from curate.filters.job import run_filters
    from curate.filters.stages import parse_filter
    from curate.ingest.job import IngestConfig, run_ingest
    from curate.engine.spark import SparkExecutor

    pool = tmp_path / "pool.jsonl"
    pool.write_text("\n".join(json.dumps({"url": f"http://example.com/{i}.jpg", "caption": f"a dog on a beach {i}",
                                          "width": 300 + i, "height": 200, "license": {"kind": "cc", "v": i}})
                              for i in range(30)) + "\n{bad\n")
    out = tmp_path / "ds"
    from curate.tables import Dataset

    run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(pool)], output=str(out), rows_per_shard=10))
    run_filters(Dataset(out), [parse_filter("basic")], LocalExecutor())
    files = [p for p in out.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in files}
    assert {".parquet", ".json", ".npy"} <= kinds and not kinds & {".pkl", ".pickle", ".pt", ".joblib"}
    for p in files:
        data = p.read_bytes()
        if p.suffix == ".parquet":
            meta = pq.ParquetFile(p).metadata.metadata or {}
            assert not any(_looks_pickled(v) for v in meta.values()), p
            pq.read_table(p)
        elif p.suffix == ".json":
            json.loads(data)
        elif p.suffix == ".npy":
            np.load(p, allow_pickle=False)  # raises if the array holds Python objects
        else:
            pytest.fail(f"unexpected file kind {p}")
        assert not _looks_pickled(data[:2]), p
