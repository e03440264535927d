"""`curate ingest` of a local input into s3://bucket/ds (local engine) on the loopback S3
server: every table object equals a local-path run's file; a rerun writes nothing new; a new
plan's tables are swapped in by copy; a task on another machine fetches its own input copy."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from s3kit import bucket_objects

from curate.tables import Dataset


def _input(path, n=240):
    rows = ["url,caption"]
    for i in range(n):
        rows.append(f"http://127.0.0.1/img/{i % 200}.jpg,a photo number {i % 200} of a thing")  # 40 duplicates
    rows.append("not a url,bad row")
    path.write_text("\n".join(rows) + "\n")
    return path


def _ingest_cmd(inp, out, rows_per_shard=64):
    return [sys.executable, "-m", "curate.cli", "ingest", str(inp), "-o", out, "--engine", "local",
            "--rows-per-shard", str(rows_per_shard)]


def _ingest(inp, out, rows_per_shard=64, env=None):
    return subprocess.run(_ingest_cmd(inp, out, rows_per_shard), capture_output=True, text=True, env=env)


def _assert_same_tables_but_source(want: Dataset, got: Dataset) -> None:
    """The same tables, every column equal but ``source_file`` (a local path against a URI)."""
    assert got.tables() == want.tables()
    for t in want.tables():
        w, g = want.read(t), got.read(t)
        names = [c for c in w.column_names if c != "source_file"]
        assert g.select(names).equals(w.select(names)), t


def _tables_only(files: dict) -> dict:
    return {k: v for k, v in files.items() if not k.startswith("_") and "/_committed/" not in k}


def test_ingest_into_bucket_matches_local(bucket, tmp_path, monkeypatch):
    """Every task writes the store directly (staging, dedup scratch, tables): no local working
    folder, nothing left under ``_staging/``, and the table objects equal a local run's files."""
    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    inp = _input(tmp_path / "pool.csv")
    local = tmp_path / "local"
    r = _ingest(inp, str(local))
    assert r.returncode == 0, r.stderr
    uri = f"s3://{bucket}/pools/ds"
    r = _ingest(inp, uri)
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "work").exists()  # no working copy of the dataset on this machine

    want = {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*")
            if p.is_file() and not p.relative_to(local).as_posix().startswith(("_", "."))}
    got = bucket_objects(bucket, "pools/ds/")
    assert _tables_only(got) == want and any(k.startswith("samples/") for k in want)
    assert "_runs/ingest.json" in got and "_curate.lock" not in got  # the lock object is gone at the end
    assert not [k for k in got if k.startswith("_staging/")]
    ds, ref = Dataset(uri), Dataset(local)
    assert ds.tables() == ref.tables()
    for t in ref.tables():
        assert ds.count(t) == ref.count(t)
    # every input row ends somewhere: samples + duplicates + rejects = the 241 rows read
    assert sum(ds.count(t) for t in ("samples", "duplicates", "rejects") if t in ds.tables()) == 241
    m = json.loads(got["_runs/ingest.json"])
    assert m["resumed"] is False

    # a rerun of the same plan resumes and finds every shard already committed
    r = _ingest(inp, uri)
    assert r.returncode == 0, r.stderr
    m = json.loads(bucket_objects(bucket, "pools/ds/_runs/")["ingest.json"])
    assert m["resumed"] is True
    assert all(o["skipped_shards"] == o["shards"] for o in m["outputs"].values()), m["outputs"]
    assert _tables_only(bucket_objects(bucket, "pools/ds/")) == want

    # then curate sql reads the bucket's tables
    r = subprocess.run([sys.executable, "-m", "curate.cli", "sql", uri, "SELECT count(DISTINCT uid) AS n FROM samples",
                        "--out", str(tmp_path / "n.csv")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "n.csv").read_text().splitlines()[1] == str(ref.count("samples"))


def test_a_new_plan_over_a_bucket_dataset_swaps_its_tables_in(bucket, tmp_path, monkeypatch):
    """A new plan over a completed run on a store writes its tables under ``_staging/`` and
    copies them into place at the end (a store has no rename). Killed part-way through that
    copy, the next run finishes it: the tables equal a local run of the new plan."""
    from curate.engine import LocalExecutor
    from curate.ingest import output
    from curate.ingest.job import IngestConfig, run_ingest

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    first, second = _input(tmp_path / "a.csv", 150), _input(tmp_path / "b.csv", 300)
    uri = f"s3://{bucket}/ds"
    run_ingest(LocalExecutor(), IngestConfig(inputs=[str(first)], output=uri, rows_per_shard=64))
    before = _tables_only(bucket_objects(bucket, "ds/"))
    local = tmp_path / "local"
    run_ingest(LocalExecutor(), IngestConfig(inputs=[str(second)], output=str(local), rows_per_shard=64))
    want = {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*")
            if p.is_file() and not p.relative_to(local).as_posix().startswith(("_", "."))}
    assert want != before

    moved = []
    real_move = output.replace_table

    def move_once_then_die(dataset, new, table):
        if moved:
            raise KeyboardInterrupt("killed mid-swap")
        real_move(dataset, new, table)
        moved.append(table)

    monkeypatch.setattr(output, "replace_table", move_once_then_die)
    try:
        run_ingest(LocalExecutor(), IngestConfig(inputs=[str(second)], output=uri, rows_per_shard=64))
    except KeyboardInterrupt:
        pass
    assert moved == ["samples"]
    assert any(k.startswith("_staging/") and k.endswith("swap.json") for k in bucket_objects(bucket, "ds/"))
    monkeypatch.setattr(output, "replace_table", real_move)

    m = run_ingest(LocalExecutor(), IngestConfig(inputs=[str(second)], output=uri, rows_per_shard=64))
    got = bucket_objects(bucket, "ds/")
    assert _tables_only(got) == want
    assert not [k for k in got if k.startswith("_staging/")]
    assert json.loads(got["_runs/ingest.json"])["plan_key"] == m["plan_key"]
    assert m["counts"]["input_rows"] == 301


def test_ingest_refuses_missing_uri_inputs(bucket, tmp_path):
    r = subprocess.run([sys.executable, "-m", "curate.cli", "ingest", f"s3://{bucket}/in.csv", "-o",
                        str(tmp_path / "ds")], capture_output=True, text=True)
    assert r.returncode == 2 and f"s3://{bucket}/in.csv" in r.stderr and r.stderr.count("\n") == 1


def test_a_worker_without_the_drivers_input_copy_fetches_its_own(bucket, tmp_path, monkeypatch):
    """On a cluster the driver's input cache is on the driver's machine: a task whose local
    copy is not there reads its own copy of the object, and stages the same rows."""
    import shutil

    import boto3
    import pyarrow as pa

    from curate import storage
    from curate.ingest.plan import IngestConfig, plan_tasks
    from curate.ingest.stage import ingest_task_batches

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "driver"))
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    s3.put_object(Bucket=bucket, Key="pool/in.csv", Body=_input(tmp_path / "in.csv", 30).read_bytes())
    inputs, sources = storage.fetch_inputs([f"s3://{bucket}/pool/in.csv"])
    tasks, _, _ = plan_tasks(IngestConfig(inputs=inputs, output=str(tmp_path / "ds"), sources=sources))
    want = pa.Table.from_batches([b for t in tasks for b in ingest_task_batches(t)])
    shutil.rmtree(tmp_path / "driver")  # now this process is a worker on another machine
    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "worker"))
    got = pa.Table.from_batches([b for t in tasks for b in ingest_task_batches(t)])
    assert got.equals(want) and got.num_rows == 31
    assert list((tmp_path / "worker").rglob("in.csv"))  # its own copy


def test_ingest_inputs_from_a_bucket_glob(bucket, tmp_path, monkeypatch):
    """`curate ingest 's3://bucket/pool/*.csv'`: the glob is listed on the store, the objects
    are streamed (no local copy), ``source_file`` names them; every other column equals a
    local ingest of the same files."""
    import boto3
    import pyarrow.compute as pc

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    folder = tmp_path / "pool"
    folder.mkdir()
    for name, n in (("a.csv", 7), ("b.csv", 5)):
        (folder / name).write_text("url,caption\n" + "".join(
            f"http://127.0.0.1/{name}/{i}.jpg,photo {i} of {name}\n" for i in range(n)) + "not a url,bad row\n")
        s3.put_object(Bucket=bucket, Key=f"pool/{name}", Body=(folder / name).read_bytes())
    s3.put_object(Bucket=bucket, Key="pool/notes.txt", Body=b"not matched by the glob")
    r = _ingest(folder, str(tmp_path / "local"))
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "curate.cli", "ingest", f"s3://{bucket}/pool/*.csv", "-o",
                        f"s3://{bucket}/ds", "--engine", "local", "--rows-per-shard", "64"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    want = Dataset(tmp_path / "local").read("samples")
    got = Dataset(f"s3://{bucket}/ds").read("samples")
    assert got.num_rows == want.num_rows == 13, (sorted(got.column("url").to_pylist()), sorted(want.column("url").to_pylist()))
    assert sorted(set(got.column("source_file").to_pylist())) == [f"s3://{bucket}/pool/a.csv", f"s3://{bucket}/pool/b.csv"]
    names = [c for c in want.column_names if c != "source_file"]
    assert got.select(names).equals(want.select(names))
    assert pc.all(pc.equal(pc.utf8_slice_codeunits(got.column("source_file"), 0, 5), "s3://")).as_py()
    m = json.loads(bucket_objects(bucket, "ds/_runs/")["ingest.json"])
    assert all(i.startswith(f"s3://{bucket}/pool/") for i in m["params"]["inputs"])
    assert not (tmp_path / "work").exists()  # streamed: no input cache


def test_ingest_killed_mid_write_then_rerun(bucket, tmp_path):
    """kill -9 of `curate ingest -o s3://...` while it writes its shards: only whole, committed
    shards are visible; the rerun writes the rest and the objects equal a local run's files."""
    import os
    import signal
    import time

    import boto3

    env = {**os.environ, "CURATE_WORK_DIR": str(tmp_path / "work")}
    inp = _input(tmp_path / "pool.csv")
    local = tmp_path / "local"
    assert _ingest(inp, str(local), 5, env=env).returncode == 0
    want = {p.relative_to(local).as_posix(): p.read_bytes() for p in local.rglob("*")
            if p.is_file() and not p.relative_to(local).as_posix().startswith(("_", "."))}
    uri = f"s3://{bucket}/ds"
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    proc = subprocess.Popen(_ingest_cmd(inp, uri, 5), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:  # the first committed shard: writing tables
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="ds/").get("Contents", [])]
        if any("/_committed/" in k for k in keys):
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "ingest finished before it could be killed"

    ds = Dataset(uri)
    visible = [s[len(uri) + 1:] for t in ds.tables() for s in ds.shards(t)]
    assert len(visible) < len([k for k in want if k.endswith(".parquet")])  # killed part-way
    for rel in visible:  # every visible shard is whole
        assert bucket_objects(bucket, f"ds/{rel}")[""] == want[rel]
    assert "_runs/ingest.json" not in bucket_objects(bucket, "ds/")  # the manifest goes last

    r = _ingest(inp, uri, 5, env=env)
    assert r.returncode == 0, r.stderr
    assert _tables_only(bucket_objects(bucket, "ds/")) == want


def _datacomp_shard(folder, shard: int, rows: int = 40):
    """A DataComp metadata shard and its .npz (b32 vectors; the shipped score is their cosine);
    odd shards' archives compressed (DataComp's are not, numpy's savez_compressed ones are)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(shard)
    img = rng.standard_normal((rows, 16)).astype(np.float16)
    txt = rng.standard_normal((rows, 16)).astype(np.float16)
    a, b = img.astype(np.float32), txt.astype(np.float32)
    score = (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))
    uids = [f"{shard:08x}{i:024x}" for i in range(rows)]
    pq.write_table(pa.table({"uid": uids, "url": [f"http://127.0.0.1/{shard}/{i}.jpg" for i in range(rows)],
                             "text": [f"photo {i} of shard {shard}" for i in range(rows)],
                             "clip_b32_similarity_score": pa.array(score, pa.float32())}),
                   folder / f"{shard:08d}.parquet")
    (np.savez_compressed if shard % 2 else np.savez)(folder / f"{shard:08d}.npz", b32_img=img, b32_txt=txt)


def test_datacomp_pool_in_a_bucket_imports_its_npz(bucket, tmp_path, monkeypatch):
    """`curate ingest 's3://bucket/pool/*.parquet' --format datacomp`: each shard's .npz beside
    it on the store is found (not only when the glob names it) and read in place (nothing is
    copied to this machine); the embeddings equal a local ingest of the same files. A shard
    whose .npz is missing, or cut short, is one line naming the object."""
    import boto3

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    folder = tmp_path / "pool"
    folder.mkdir()
    for shard in range(2):
        _datacomp_shard(folder, shard)
    for f in sorted(folder.iterdir()):
        s3.put_object(Bucket=bucket, Key=f"pool/{f.name}", Body=f.read_bytes())

    def ingest(inputs, out):
        return subprocess.run([sys.executable, "-m", "curate.cli", "ingest", inputs, "-o", out, "--engine", "local",
                               "--format", "datacomp", "--rows-per-shard", "64"], capture_output=True, text=True)

    r = ingest(str(folder), str(tmp_path / "local"))
    assert r.returncode == 0, r.stderr
    r = ingest(f"s3://{bucket}/pool/*.parquet", f"s3://{bucket}/ds")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "work").exists()  # no input cache: shards and archives read in place
    want, got = Dataset(tmp_path / "local"), Dataset(f"s3://{bucket}/ds")
    (table,) = [t for t in want.tables() if t.startswith("embeddings/")]
    assert got.tables() == want.tables()
    assert got.read(table).equals(want.read(table)) and got.count(table) == 80
    m = json.loads(bucket_objects(bucket, "ds/_runs/")["ingest.json"])
    assert [n["path"] for n in m["npz_inputs"]] == [f"s3://{bucket}/pool/0000000{i}.npz" for i in range(2)]
    assert [n["bytes"] for n in m["npz_inputs"]] == [(folder / f"0000000{i}.npz").stat().st_size for i in range(2)]

    # an archive cut short on the store: its directory is gone, the plan names the object
    whole = (folder / "00000001.npz").read_bytes()
    s3.put_object(Bucket=bucket, Key="pool/00000001.npz", Body=whole[:len(whole) // 2])
    r = ingest(f"s3://{bucket}/pool/*.parquet", f"s3://{bucket}/ds3")
    assert r.returncode != 0 and r.stderr.count("\n") == 1, r.stderr
    assert f"s3://{bucket}/pool/00000001.npz: not a readable .npz" in r.stderr
    # a member's bytes damaged (the directory intact): one line naming the object and the member
    damaged = bytearray(whole)
    damaged[len(whole) // 3:len(whole) // 3 + 64] = bytes(64)
    s3.put_object(Bucket=bucket, Key="pool/00000001.npz", Body=bytes(damaged))
    r = ingest(f"s3://{bucket}/pool/*.parquet", f"s3://{bucket}/ds3")
    assert r.returncode != 0 and r.stderr.count("\n") == 1, r.stderr
    assert f"s3://{bucket}/pool/00000001.npz: not a readable .npz (" in r.stderr and "b32_" in r.stderr

    s3.delete_object(Bucket=bucket, Key="pool/00000001.npz")
    r = ingest(f"s3://{bucket}/pool/*.parquet", f"s3://{bucket}/ds2")
    assert r.returncode != 0 and r.stderr.count("\n") == 1, r.stderr
    assert f"s3://{bucket}/pool/00000001.parquet: DataComp shard without its embeddings file 00000001.npz" in r.stderr


def _parquet_pool(path, n=3000, row_group=400):
    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = [f"a photo number {i % 2500} of a thing" for i in range(n)]  # 500 duplicates
    urls = [f"http://127.0.0.1/img/{i % 2500}.jpg" if i % 97 else "" for i in range(n)]  # 31 rejects
    pq.write_table(pa.table({"url": urls, "caption": texts}), path, row_group_size=row_group)
    return path


def test_parquet_inputs_in_a_bucket_are_read_in_place(bucket, tmp_path, monkeypatch):
    """`curate ingest s3://bucket/pool/in.parquet`: no copy of the object on this machine (its
    footer and row groups are read by range), the tables equal a local ingest of the same file
    but for ``source_file``, the manifest fingerprints the object by size and time, and a rerun
    resumes; tasks of a few row groups each read their slice of the object."""
    import boto3
    import pyarrow.compute as pc

    from curate import storage
    from curate.engine import LocalExecutor
    from curate.ingest.job import IngestConfig, run_ingest
    from curate.ingest.plan import reads_in_place

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    src = _parquet_pool(tmp_path / "in.parquet")
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).put_object(
        Bucket=bucket, Key="pool/in.parquet", Body=src.read_bytes())
    uri = f"s3://{bucket}/pool/in.parquet"
    r = _ingest(src, str(tmp_path / "local"))
    assert r.returncode == 0, r.stderr
    r = _ingest(uri, f"s3://{bucket}/ds")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "work").exists()  # nothing copied: no input cache at all
    want, got = Dataset(tmp_path / "local"), Dataset(f"s3://{bucket}/ds")
    _assert_same_tables_but_source(want, got)
    for t in want.tables():
        if "source_file" in want.read(t).column_names:
            g = got.read(t)
            assert g.num_rows and pc.all(pc.equal(g.column("source_file"), uri)).as_py(), t
    m = json.loads(bucket_objects(bucket, "ds/_runs/")["ingest.json"])
    (fp,) = m["inputs"]
    assert fp["kind"] == "object" and fp["path"] == uri and fp["bytes"] == src.stat().st_size and "sha256" not in fp
    r = _ingest(uri, f"s3://{bucket}/ds")
    assert r.returncode == 0, r.stderr
    assert json.loads(bucket_objects(bucket, "ds/_runs/")["ingest.json"])["resumed"] is True

    # row-group slices: eight tasks read their slices of the object = the same slices of the file
    def run(inputs, sources, out):
        cfg = IngestConfig(inputs=inputs, output=out, rows_per_shard=700, task_rows=400, sources=sources)
        return run_ingest(LocalExecutor(), cfg)

    inputs, sources = storage.fetch_inputs([uri], in_place=lambda u: reads_in_place(u, None))
    assert inputs == [uri] and not (tmp_path / "work").exists()
    res = run(inputs, sources, f"s3://{bucket}/sliced")
    ref = run([str(src)], {}, str(tmp_path / "sliced"))
    assert res["counts"] == ref["counts"] and res["counts"]["input_rows"] == 3000 and res["counts"]["rejects"] == 31
    s_got, s_want = Dataset(f"s3://{bucket}/sliced").read("samples"), Dataset(tmp_path / "sliced").read("samples")
    names = [c for c in s_want.column_names if c != "source_file"]
    assert s_got.select(names).equals(s_want.select(names))
    assert len(json.loads(bucket_objects(bucket, "sliced/_runs/")["ingest.json"])["inputs"]) == 1


def test_every_streamed_format_from_a_bucket_prefix(bucket, tmp_path, monkeypatch):
    """A prefix holding CSV, TSV, JSONL, COCO JSON and a WebDataset tar (one with bad rows):
    each object streamed once, nothing copied; every table equals a local ingest of the same
    files but for the source names, row for row."""
    import io
    import tarfile

    import boto3

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    folder = tmp_path / "mixed"
    folder.mkdir()
    (folder / "a.csv").write_text("url,caption\nhttp://127.0.0.1/a/1.jpg,one\n,no url\nhttp://127.0.0.1/a/2.jpg,two\n")
    (folder / "b.tsv").write_text("url\tcaption\nhttp://127.0.0.1/b/1.jpg\tb one\nhttp://127.0.0.1/a/1.jpg\tone\n")
    (folder / "c.jsonl").write_bytes(b'{"url": "http://127.0.0.1/c/1.jpg", "caption": "c one"}\n{"url": 3}\n'
                                     b'\n{"url": "http://127.0.0.1/c/2.jpg", "caption": "\xff"}\n')
    (folder / "d.json").write_text(json.dumps({"images": [{"id": 1, "coco_url": "http://127.0.0.1/d/1.jpg"}],
                                               "annotations": [{"image_id": 1, "caption": "d one"},
                                                               {"image_id": 2, "caption": "no image"}]}))
    with tarfile.open(folder / "e.tar", "w") as tf:
        for name, data in (("0.txt", b"e zero"), ("0.json", b'{"url": "http://127.0.0.1/e/0.jpg"}'),
                           ("1.txt", b"\xff"), ("1.json", b'{"url": "http://127.0.0.1/e/1.jpg"}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    for f in folder.iterdir():
        s3.put_object(Bucket=bucket, Key=f"mixed/{f.name}", Body=f.read_bytes())
    r = _ingest(folder, str(tmp_path / "local"))
    assert r.returncode == 0, r.stderr
    r = _ingest(f"s3://{bucket}/mixed/", f"s3://{bucket}/ds")
    assert r.returncode == 0, r.stderr
    assert not (tmp_path / "work").exists()
    want, got = Dataset(tmp_path / "local"), Dataset(f"s3://{bucket}/ds")
    assert got.tables() == want.tables() and {"samples", "rejects", "duplicates"} <= set(want.tables())
    assert (want.count("samples"), want.count("rejects"), want.count("duplicates")) == (6, 5, 1)
    local_to_uri = {str(f): f"s3://{bucket}/mixed/{f.name}" for f in folder.iterdir()}
    for t in want.tables():
        w, g = want.read(t).to_pylist(), got.read(t).to_pylist()
        for row in w:
            for k, v in row.items():
                if isinstance(v, str) and v in local_to_uri:
                    row[k] = local_to_uri[v]
        key = lambda r: json.dumps(r, sort_keys=True, default=str)  # noqa: E731
        assert sorted(g, key=key) == sorted(w, key=key), t
    m = json.loads(bucket_objects(bucket, "ds/_runs/")["ingest.json"])
    assert sorted(i["kind"] for i in m["inputs"]) == ["object"] * 5


def test_objects_are_read_in_few_requests(bucket, s3_requests, tmp_path, monkeypatch):
    """Each read of a store's input stream or random-access file is a ranged request of its
    own, and readers read small (tarfile 10 KiB at a time, a text reader 8 KiB, numpy an .npz
    member 256 KiB, an input stream's ``read()`` 256 KiB). Counted in the loopback server's
    access log: a tar streamed through ``storage.open_input_stream`` and a text object read by
    lines through ``open_binary`` cost one request per ``STREAM_BLOCK``; ``read_bytes`` of an
    object one request; an .npz archive one request (a large one: per member one large read
    and at most two small ones), and the plan's header check a few requests, not the arrays."""
    import io
    import tarfile

    import boto3
    import numpy as np

    from curate import storage
    from curate.ingest.datacomp import npz_headers
    from curate.storage import readers
    from curate.storage.readers import STREAM_BLOCK

    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tf:
        for i in range(120):
            data = rng.bytes(100_000)
            info = tarfile.TarInfo(f"{i:06d}.jpg")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    tar = buf.getvalue()  # 11.5 MiB: about 1,180 requests in tarfile's own 10 KiB reads
    s3.put_object(Bucket=bucket, Key="t.tar", Body=tar)
    put = s3_requests("t.tar")  # the upload's own
    with storage.open_input_stream(f"s3://{bucket}/t.tar") as src, tarfile.open(fileobj=src, mode="r|*") as tf:
        assert sum(len(tf.extractfile(m).read()) for m in tf if m.isfile()) == 120 * 100_000
    blocks = -(-len(tar) // STREAM_BLOCK)
    assert s3_requests("t.tar") - put <= blocks + 2  # the size lookup, the blocks, the end

    text = b"".join(b"http://127.0.0.1/%d.jpg\tcaption %d\n" % (i, i) for i in range(300_000))
    s3.put_object(Bucket=bucket, Key="in.tsv", Body=text)
    put = s3_requests("in.tsv")
    with io.TextIOWrapper(storage.open_binary(f"s3://{bucket}/in.tsv"), encoding="utf-8") as f:
        assert sum(1 for _ in f) == 300_000
    assert s3_requests("in.tsv") - put <= -(-len(text) // STREAM_BLOCK) + 2

    s3.put_object(Bucket=bucket, Key="blob", Body=tar)
    put = s3_requests("blob")
    assert storage.read_bytes(f"s3://{bucket}/blob") == tar
    assert s3_requests("blob") - put == 2  # the size lookup, one read

    arrays = {"b32_img": rng.standard_normal((20_000, 64)).astype(np.float16),
              "b32_txt": rng.standard_normal((20_000, 64)).astype(np.float16)}
    np.savez(tmp_path / "s.npz", **arrays)  # two members of 2.4 MiB: numpy reads each in 10 requests
    s3.put_object(Bucket=bucket, Key="s.npz", Body=(tmp_path / "s.npz").read_bytes())
    put = s3_requests("s.npz")
    assert npz_headers(f"s3://{bucket}/s.npz") == {k: ((20_000, 64), "float16") for k in arrays}
    headers = s3_requests("s.npz") - put
    assert headers <= 6  # the size lookup, the end record (two reads), the directory, a block per member
    with storage.open_npz(f"s3://{bucket}/s.npz") as z:
        assert sorted(z.files) == sorted(arrays)
        assert all((z[k] == v).all() for k, v in arrays.items())
    assert s3_requests("s.npz") - put - headers == 2  # an archive this size: fetched whole
    monkeypatch.setattr(readers, "NPZ_WHOLE_BYTES", 1 << 20)  # a larger one: member by member
    before = s3_requests("s.npz")
    with storage.open_npz(f"s3://{bucket}/s.npz") as z:
        opened = s3_requests("s.npz") - before
        assert all((z[k] == v).all() for k, v in arrays.items())
    assert opened <= 4 and s3_requests("s.npz") - before - opened <= 2 * 3


def test_a_bucket_prefix_is_read_as_a_local_folder_is(bucket, tmp_path, monkeypatch):
    """`curate ingest s3://bucket/pool/`: the objects under the prefix get a local folder's
    outcomes: each data file read by its reader; an img2dataset shard's tar, stats and files
    folder covered by its Parquet file (not read again as WebDataset samples and COCO); a file no
    reader takes, or a JSON file that is not COCO, unsupported. Same files read, same outcomes
    (named by URI), same tables as a local ingest of the folder; with ``--format datacomp`` a
    shard's .npz is covered and imported, not read as Parquet."""
    import io
    import tarfile

    import boto3
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    pool = tmp_path / "pool"
    (pool / "nested").mkdir(parents=True)
    (pool / "i2d" / "00001").mkdir(parents=True)
    pq.write_table(pa.table({"url": ["http://127.0.0.1/a/0.jpg", "http://127.0.0.1/a/1.jpg"],
                             "caption": ["first", "second"]}), pool / "a.parquet")
    (pool / "b.csv").write_text("url,caption\nhttp://127.0.0.1/b/0.jpg,from csv\nnot a url,bad\n")
    (pool / "nested" / "h.tsv").write_text("url\tcaption\nhttp://127.0.0.1/h/0.jpg\tfrom tsv\n")
    (pool / "f.json").write_text(json.dumps({"images": [{"id": 1, "coco_url": "http://127.0.0.1/coco/1.jpg"}],
                                             "annotations": [{"image_id": 1, "caption": "a coco caption"}]}))
    (pool / "README.md").write_text("# notes\n")
    (pool / "notes.json").write_text('{"not": "coco"}')
    for shard in ("00000", "00001"):  # img2dataset shards: Parquet, tar or files folder, stats
        pq.write_table(pa.table({"url": [f"http://127.0.0.1/i2d/{shard}.jpg"], "caption": [f"i2d {shard}"]}),
                       pool / "i2d" / f"{shard}.parquet")
        (pool / "i2d" / f"{shard}_stats.json").write_text("{}")
    with tarfile.open(pool / "i2d" / "00000.tar", "w") as tf:
        for name, data in (("000000000.txt", b"i2d 00000"), ("000000000.json", b'{"url": "http://127.0.0.1/x.jpg"}')):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    (pool / "i2d" / "00001" / "000000000.txt").write_text("i2d 00001")
    for f in sorted(p for p in pool.rglob("*") if p.is_file()):
        s3.put_object(Bucket=bucket, Key=f"pool/{f.relative_to(pool).as_posix()}", Body=f.read_bytes())

    r = _ingest(pool, str(tmp_path / "local"))
    assert r.returncode == 0, r.stderr
    r = _ingest(f"s3://{bucket}/pool/", f"s3://{bucket}/ds")
    assert r.returncode == 0, r.stderr
    local = json.loads((tmp_path / "local" / "_runs" / "ingest.json").read_text())
    remote = json.loads(bucket_objects(bucket, "ds/_runs/")["ingest.json"])

    def named(path: str) -> str:
        return path.split("/pool/", 1)[1]

    assert [(named(f["path"]), f["format"], f["rows"]) for f in remote["inputs"]] == \
        [(named(f["path"]), f["format"], f["rows"]) for f in local["inputs"]]
    assert {named(f["path"]): f["outcome"] for f in remote["skipped_files"]} == \
        {named(f["path"]): f["outcome"] for f in local["skipped_files"]} == \
        {"README.md": "unsupported", "notes.json": "unsupported", "i2d/00000.tar": "covered",
         "i2d/00000_stats.json": "covered", "i2d/00001_stats.json": "covered", "i2d/00001": "covered"}
    assert remote["counts"] == local["counts"]
    _assert_same_tables_but_source(Dataset(tmp_path / "local"), Dataset(f"s3://{bucket}/ds"))

    dc = tmp_path / "dc"  # a DataComp pool by prefix: the .npz beside each shard is not a Parquet input
    dc.mkdir()
    for shard in range(2):
        _datacomp_shard(dc, shard)
    for f in sorted(dc.iterdir()):
        s3.put_object(Bucket=bucket, Key=f"dc/{f.name}", Body=f.read_bytes())
    r = subprocess.run(_ingest_cmd(f"s3://{bucket}/dc/", f"s3://{bucket}/dcds") + ["--format", "datacomp"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    m = json.loads(bucket_objects(bucket, "dcds/_runs/")["ingest.json"])
    assert [f["outcome"] for f in m["skipped_files"]] == ["covered", "covered"]
    assert Dataset(f"s3://{bucket}/dcds").count("embeddings/ViT-B-32__openai") == 80


def test_an_image_folder_in_a_bucket_is_read_in_place(bucket, tmp_path, monkeypatch, s3_requests):
    """`curate ingest s3://bucket/imgs/` (images with a captions file, one nested) reads the
    folder in place: one listing, then each image's header in one request (a ranged GET of its
    first 64 KiB); nothing is copied (a copy per object was not a folder: the run failed;
    session 17's copy of the whole folder tied the urls to the copy). Same rows as a local ingest
    of the folder but ``url`` (each object's URI), ``uid``, ``source_file`` and a reject's
    detail (the folder's URI); the same with ``--format imagefolder``. ``download
    --allow-store-prefix`` then fetches the images from the bucket."""
    import boto3
    from PIL import Image

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    folder = tmp_path / "imgs"
    (folder / "sub").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (8 + i, 8), (i * 40, 0, 0)).save(folder / f"{i}.jpg")
    Image.new("RGB", (5, 7)).save(folder / "sub" / "s.jpg")
    (folder / "captions.csv").write_text("image,caption\n0.jpg,zero\n1.jpg,one\n2.jpg,two\nsub/s.jpg,nested\n"
                                         "missing.jpg,no such image\n")
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3.put_object(Bucket=bucket, Key=f"imgs/{f.relative_to(folder).as_posix()}", Body=f.read_bytes())
    r = _ingest(folder, str(tmp_path / "local"))
    assert r.returncode == 0, r.stderr
    want = Dataset(tmp_path / "local")
    uploaded = s3_requests("imgs/sub/s.jpg")
    for extra in ([], ["--format", "imagefolder"]):
        out = f"s3://{bucket}/ds{len(extra)}"
        r = subprocess.run(_ingest_cmd(f"s3://{bucket}/imgs/", out) + extra, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        assert f"download them with --allow-store-prefix s3://{bucket}/imgs/" in r.stdout + r.stderr
        got = Dataset(out)
        assert got.tables() == want.tables()
        for t in want.tables():
            w, g = want.read(t), got.read(t)
            names = [c for c in w.column_names if c not in ("source_file", "url", "uid", "detail")]
            order = [("source_row", "ascending")] if "source_row" in names else []  # uids come from the urls
            assert g.select(names).sort_by(order).equals(w.select(names).sort_by(order)), t
        (detail,) = got.read("rejects").column("detail").to_pylist()
        assert detail == f"image 's3://{bucket}/imgs/missing.jpg' does not exist"  # named as the user did
        samples = got.read("samples")
        assert samples.num_rows == 4 and set(samples.column("source_file").to_pylist()) == {f"s3://{bucket}/imgs"}
        assert sorted(samples.column("url").to_pylist()) == [f"s3://{bucket}/imgs/{n}" for n in
                                                             ("0.jpg", "1.jpg", "2.jpg", "sub/s.jpg")]
        assert got.count("rejects") == 1
        assert not (tmp_path / "work").exists() or not any((tmp_path / "work").rglob("*.jpg"))  # nothing copied
    assert s3_requests("imgs/sub/s.jpg") - uploaded == 2  # two runs: one ranged GET each
    # the urls are the objects': any machine with the store's settings downloads them
    download = [sys.executable, "-m", "curate.cli", "download", f"s3://{bucket}/ds0", "--engine", "local"]
    r = subprocess.run(download, capture_output=True, text=True)  # no folder allowed: refused, and the summary says so
    assert r.returncode == 0 and "0 success, 4 failed of 4 samples" in r.stdout + r.stderr, r.stderr
    assert "4 rows name objects on a store" in r.stdout + r.stderr and "--allow-store-prefix" in r.stdout + r.stderr
    r = subprocess.run(download + ["--retry-failed", "--allow-store-prefix", f"s3://{bucket}/imgs/"],
                       capture_output=True, text=True)
    assert r.returncode == 0 and "4 success, 0 failed of 4 samples" in r.stdout + r.stderr, r.stderr
    local = dict(zip(*want.read("samples").select(["text", "original_width"]).to_pydict().values()))
    remote = Dataset(f"s3://{bucket}/ds0")
    width = dict(zip(*remote.read("downloads").select(["uid", "original_width"]).to_pydict().values()))
    assert {t: width[u] for u, t in zip(*remote.read("samples").select(["uid", "text"]).to_pydict().values())} == local


@pytest.mark.parametrize("engine", ["local", pytest.param("spark", marks=pytest.mark.extended)])
def test_an_image_folder_of_sidecars_in_a_bucket_matches_local(bucket, tmp_path, monkeypatch, engine):
    """A sidecar image folder (``name.txt`` beside each image) read in place from a bucket gives
    a local ingest's rows, numbered alike (images sorted by path components: ``a/b.jpg``
    before ``a.b/c.jpg``, which a plain string sort puts first), with its rejects (no caption,
    a caption not UTF-8, an image that is not one) naming the objects; hidden names and an
    output dataset inside the folder are not read. On Spark a task reads the folder in place."""
    import boto3
    from PIL import Image

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    folder = tmp_path / "side"
    for rel in ("a/b.jpg", "a.b/c.jpg", "x.jpg", "y.png", "_hidden/z.jpg", ".h.jpg", "a/.d/e.jpg"):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (6 + len(rel), 9), (len(rel) * 9, 40, 80)).save(folder / rel)
        if rel != "x.jpg":
            (folder / rel).with_suffix(".txt").write_text(f"caption of {rel}\n")
    (folder / "y.txt").write_bytes(b"caf\xe9")  # Latin-1, not UTF-8
    (folder / "broken.jpg").write_bytes(b"not a jpeg")
    (folder / "broken.txt").write_text("a broken image")
    # a header longer than the first read (a 100 KB colour profile before the pixels)
    Image.new("RGB", (13, 17), (1, 2, 3)).save(folder / "a" / "icc.jpg", icc_profile=bytes(100_000))
    (folder / "a" / "icc.txt").write_text("a long header")
    (folder / "README.md").write_text("not read: counted")
    (folder / "a" / "meta.json").write_text("{}")
    (folder / "a" / "notes.txt").write_text("no image of this name: counted")
    for f in sorted(p for p in folder.rglob("*") if p.is_file()):
        s3.put_object(Bucket=bucket, Key=f"side/{f.relative_to(folder).as_posix()}", Body=f.read_bytes())
    r = _ingest(folder, str(tmp_path / "local"))
    assert r.returncode == 0, r.stderr
    want = Dataset(tmp_path / "local")
    out = f"s3://{bucket}/side/out"  # inside the input folder: left out of it
    r = subprocess.run(_ingest_cmd(f"s3://{bucket}/side", out) + ["--engine", engine], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = Dataset(out)
    assert got.tables() == want.tables()
    for t in want.tables():
        w, g = want.read(t), got.read(t)
        names = [c for c in w.column_names if c not in ("source_file", "url", "uid", "detail", "raw")]
        order = [("source_row", "ascending")] if "source_row" in names else []
        assert g.select(names).sort_by(order).equals(w.select(names).sort_by(order)), t
    samples = got.read("samples").sort_by("source_row")
    assert samples.column("url").to_pylist() == [f"s3://{bucket}/side/{n}" for n in ("a/b.jpg", "a/icc.jpg",
                                                                                     "a.b/c.jpg")]
    assert samples.column("original_width").to_pylist()[1] == 13
    rejects = got.read("rejects").sort_by("source_row").to_pydict()
    local_detail = [d.replace(str(folder), f"s3://{bucket}/side") for d in
                    want.read("rejects").sort_by("source_row").column("detail").to_pylist()]
    assert rejects["detail"] == local_detail and len(local_detail) == 3
    assert rejects["reason"] == ["unreadable_image", "missing_text", "text_not_utf8"]
    assert rejects["detail"][1] == "no caption file x.txt beside x.jpg"
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").rglob("*.jpg"))  # nothing copied
    local_skipped = [{**f, "path": f["path"].replace(str(folder), f"s3://{bucket}/side")}
                     for f in json.loads((tmp_path / "local" / "_runs" / "ingest.json").read_text())["skipped_files"]]
    m = json.loads(bucket_objects(bucket, "side/out/_runs/")["ingest.json"])
    assert m["skipped_files"] == local_skipped and len(local_skipped) == 3  # README.md, a/meta.json, a/notes.txt
    assert {f["path"].rsplit("/side/", 1)[1]: f["outcome"] for f in local_skipped} == \
        {"README.md": "unsupported", "a/meta.json": "unsupported", "a/notes.txt": "unsupported"}
    (fp,) = m["inputs"]
    assert fp["kind"] == "folder" and fp["path"] == f"s3://{bucket}/side" and "sha256" not in fp
    from curate.ingest.plan import IngestConfig, estimate_input_rows  # --engine auto's size: the files listed

    files = [f for f in folder.rglob("*") if f.is_file() and not any(p.startswith((".", "_"))
                                                                     for p in f.relative_to(folder).parts)]
    assert estimate_input_rows(IngestConfig(inputs=[f"s3://{bucket}/side"], output=out)) == len(files)
    assert fp["bytes"] == sum(f.stat().st_size for f in folder.rglob("*") if f.is_file()
                              and not any(p.startswith((".", "_")) for p in f.relative_to(folder).parts))
    r = subprocess.run(_ingest_cmd(f"s3://{bucket}/side", out), capture_output=True, text=True)
    m = json.loads(bucket_objects(bucket, "side/out/_runs/")["ingest.json"])
    assert r.returncode == 0 and m["resumed"] and m["excluded_folders"] == [out]
    s3.put_object(Bucket=bucket, Key="side/a/b.txt", Body=b"a new caption")  # a new version: a new plan
    r = subprocess.run(_ingest_cmd(f"s3://{bucket}/side", out), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "a new caption" in got.read("samples").column("text").to_pylist()


def test_an_image_folder_in_a_bucket_cut_into_tasks(bucket, tmp_path, monkeypatch):
    """An image folder on a store is read by several tasks (``IMAGE_TASK_ROWS`` rows each; the
    rows counted from the plan's listing, or a captions object's rows estimated from its listed
    size), each reading only its rows' headers: the objects written equal one task's."""
    import boto3
    from PIL import Image

    import curate.ingest.plan as plan
    from curate.engine import LocalExecutor
    from curate.ingest.job import run_ingest

    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    for name, captions in (("side", False), ("caps", True)):
        for i in range(7):
            body = __import__("io").BytesIO()
            Image.new("RGB", (5 + i, 6)).save(body, "PNG")
            s3.put_object(Bucket=bucket, Key=f"{name}/{'sub/' if i % 3 == 0 else ''}{i}.png", Body=body.getvalue())
            if not captions and i != 4:
                s3.put_object(Bucket=bucket, Key=f"{name}/{'sub/' if i % 3 == 0 else ''}{i}.txt", Body=f"c {i % 4}".encode())
        size = None
        if captions:
            rows = "".join(f"{'sub/' if i % 7 % 3 == 0 else ''}{i % 7}.png,words {i % 5}\n" for i in range(15))
            body = f"image,caption\n{rows}gone.png,x\n".encode()
            s3.put_object(Bucket=bucket, Key=f"{name}/captions.csv", Body=body)
            size = len(body)
        got = {}
        for task_rows in (10 ** 6, 2):
            monkeypatch.setattr(plan, "IMAGE_TASK_ROWS", task_rows)
            cfg = plan.IngestConfig(inputs=[f"s3://{bucket}/{name}"], output=f"s3://{bucket}/out-{name}-{task_rows}",
                                    rows_per_shard=4, store_folders=plan.find_image_folders([f"s3://{bucket}/{name}"],
                                                                                            None))
            tasks = plan.plan_tasks(cfg)[0]
            m = run_ingest(LocalExecutor(), cfg)
            objects = bucket_objects(bucket, f"out-{name}-{task_rows}/")
            got[task_rows] = (len(tasks), _tables_only(objects), m["counts"])
        cut = 4 if name == "side" else -(-(-(-size // 40)) // 2)  # 7 images; captions: ~size / 40 rows
        assert got[10 ** 6][0] == 1 and got[2][0] == cut > 2, name
        assert got[2][1:] == got[10 ** 6][1:] and got[2][1], name
        c = got[2][2]
        assert c["input_rows"] == (7 if name == "side" else 16) and c["rejects"] == 1, name
