"""The embedding-space and selection jobs on a dataset in s3://bucket/ds, called directly with a
``Dataset`` over the URI (no local working copy): cluster, dedup semantic/exact/near, prune,
decontaminate, select. Every table object equals the file a local-path run writes, byte for
byte; scratch (``_tmp/``) is gone afterwards; nothing the jobs wrote is invisible (unmarked)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from s3kit import bucket_objects

from curate.embedding_space.clusters import run_cluster
from curate.embedding_space.jobs import (run_decontaminate, run_exact_dedup, run_near_dedup, run_prune,
                                         run_semdedup)
from curate.engine import LocalExecutor
from curate.subset import read_subset, read_subset_array
from curate.tables import Dataset, load_schema


def _uid(i: int) -> str:
    return f"{(i * 0x9E3779B97F4A7C15) % (1 << 64):016x}{i:016x}"


def _vectors(n: int = 300, d: int = 16, seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((4, d)) * 2.5
    x = mu[rng.integers(0, 4, n)] + rng.standard_normal((n, d))
    dup = rng.choice(n, n // 5, replace=False)
    x[dup] = x[rng.integers(0, n, len(dup))] + 0.001
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def build(root: str, x: np.ndarray) -> Dataset:
    """An embeddings table (several shards) and a downloads table with repeated hashes."""
    ds = Dataset(root)
    n, d = x.shape
    uids = [_uid(i) for i in range(n)]
    f16 = x.astype(np.float16)
    vec = pa.FixedSizeListArray.from_arrays(pa.array(f16.reshape(-1)), d)
    text = pa.FixedSizeListArray.from_arrays(pa.array(x[:, ::-1].astype(np.float16).reshape(-1)), d)
    ds.write_table("embeddings/m", pa.Table.from_arrays(
        [pa.array(uids), vec, text, pa.array(np.einsum("ij,ij->i", x, x[:, ::-1]).astype(np.float32))],
        schema=load_schema("embeddings").arrow(dim=d)), schema="embeddings", rows_per_shard=70)
    ok = [i % 11 != 0 for i in range(n)]
    dl = pa.table({
        "uid": uids, "status": ["success" if o else "failed" for o in ok],
        "error_class": [None if o else "timeout" for o in ok], "error_message": [None] * n,
        "sha256": [f"{i % 97:064x}" if o else None for i, o in enumerate(ok)],
        "width": pa.array([1] * n, pa.int32()), "height": pa.array([1] * n, pa.int32()),
        "original_width": pa.array([1] * n, pa.int32()), "original_height": pa.array([1] * n, pa.int32()),
        "shard": [None] * n, "key": [None] * n, "attempts": pa.array([1] * n, pa.int32())},
        schema=load_schema("downloads").arrow())
    ds.write_table("downloads", dl, schema="downloads", rows_per_shard=120)
    return ds


def pipeline(ds: Dataset, executor, eval_source: str) -> dict:
    out = {}
    out["cluster"] = run_cluster(ds, "m", 5, executor=executor)["counts"]
    out["semdedup"] = run_semdedup(ds, "kmeans", 0.02, executor=executor)["counts"]
    out["prune"] = run_prune(ds, "kmeans", 0.6, run="dbp", input_uids=read_subset_array(ds, "semdedup"),
                             executor=executor)["counts"]
    out["exact"] = run_exact_dedup(ds, executor=executor)["counts"]
    out["near"] = run_near_dedup(ds, "m", 0.999, clusters="kmeans", nprobe=2, executor=executor,
                                 input_uids=read_subset_array(ds, "exact_dedup"))["counts"]
    out["decontaminate"] = run_decontaminate(ds, "m", eval_source, 0.95, executor=executor)["counts"]
    from curate.sql.select import select_sql

    select_sql(ds, "SELECT uid FROM subsets_near_dedup", "chosen")
    return out


def visible(files: dict) -> dict:
    return {k: v for k, v in files.items() if not any(p[:1] in "_." for p in k.split("/"))}


def local_files(root) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def write_eval(root, x: np.ndarray) -> None:
    """An evaluation set as a Parquet table: a few pool vectors (so some rows are copies)."""
    ev = Dataset(root)
    ids = [f"eval/{i}.jpg" for i in range(6)]
    sel = x[[3, 50, 120, 7, 8, 9]] if len(x) > 120 else x[:6]
    sel = sel.copy()
    sel[3:] = -sel[3:]  # three far from the pool
    vec = pa.FixedSizeListArray.from_arrays(pa.array(sel.astype(np.float16).reshape(-1)), x.shape[1])
    ev.write_table("set", pa.table({"key": ids, "image_embedding": vec}))


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", pytest.param("spark", marks=pytest.mark.extended)])
def test_jobs_on_bucket_match_local(bucket, tmp_path, engine, request):
    if engine == "spark":
        from curate.engine.spark import SparkExecutor

        executor = SparkExecutor(request.getfixturevalue("spark"))
    else:
        executor = LocalExecutor()
    x = _vectors()
    local = build(str(tmp_path / "local"), x)
    remote = build(f"s3://{bucket}/ds", x)
    write_eval(tmp_path / "evalset", x)
    write_eval(f"s3://{bucket}/evalset", x)
    want = pipeline(local, LocalExecutor(), str(tmp_path / "evalset" / "set"))
    got = pipeline(remote, executor, f"s3://{bucket}/evalset/set")
    assert got == want
    assert want["exact"]["removed"] > 0 and want["near"]["reasons"].get("near_duplicate", 0) > 0
    assert want["decontaminate"]["reasons"].get("eval_near_copy", 0) > 0

    objects = bucket_objects(bucket, "ds/")
    files = local_files(local.root)
    assert visible(objects) == visible(files)
    for t in ("clusters/kmeans", "decisions/semdedup", "decisions/dbp", "decisions/exact_dedup",
              "decisions/near_dedup", "decisions/decontaminate", "decontamination/decontaminate",
              "cluster_stats/dbp", "subsets/chosen"):
        assert any(k.startswith(t + "/") for k in visible(files)), t
    # no scratch left, every visible .parquet committed, the same run manifests
    assert not [k for k in objects if k.startswith("_tmp/")]
    marks = {k.replace("_committed/", "") for k in objects if "/_committed/" in k}
    assert {k for k in visible(objects) if k.endswith(".parquet")} <= marks
    assert {k for k in objects if k.startswith("_runs/") and k.count("/") == 1} == \
        {k for k in files if k.startswith("_runs/") and k.count("/") == 1}
    assert read_subset(remote, "chosen") == read_subset(local, "chosen")


def test_a_datacomp_subset_file_in_a_bucket_is_imported_from_a_streamed_copy(bucket, tmp_path, monkeypatch, capsys):
    """``import_subset`` and ``read_subset`` of a DataComp ``.npy`` named by URI: the object is
    streamed to the input cache (a file on disk, kept while the object is unchanged; it was read
    whole into memory), and the subset equals the import of the same file on disk, into a local
    dataset and into one in the bucket. The unsorted file's warning names the URI, not the copy."""
    import boto3
    import os

    from curate.subset_import import import_subset
    from curate.uid import DATACOMP_DTYPE

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    n = 50
    uids = sorted(_uid(i) for i in range(n))
    samples = _samples_of(uids)
    picked = [uids[i] for i in (40, 3, 17, 3, 8)]  # unsorted, one repeat
    rec = np.array([(int(u[:16], 16), int(u[16:], 16)) for u in picked], DATACOMP_DTYPE)
    np.save(tmp_path / "pick.npy", rec)
    uri = f"s3://{bucket}/subsets/pick.npy"
    boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"]).upload_file(
        str(tmp_path / "pick.npy"), bucket, "subsets/pick.npy")
    results = {}
    for kind, root in (("file", str(tmp_path / "a")), ("uri", str(tmp_path / "b")), ("both", f"s3://{bucket}/ds")):
        ds = Dataset(root)
        ds.write_table("samples", samples, schema="samples")
        out = import_subset(ds, "pick", str(tmp_path / "pick.npy") if kind == "file" else uri)
        results[kind] = (out["counts"], out["sorted_input"], read_subset(ds, "pick"))
    assert results["file"] == results["uri"] == results["both"]
    assert results["file"][2] == sorted(picked) and results["file"][1] is False  # DataComp keeps repeats
    warned = [x for x in capsys.readouterr().err.splitlines() if "is not sorted" in x]
    assert len(warned) == 3 and sum(x.startswith(f"warning: {uri} ") for x in warned) == 2
    copies = [p for p in (tmp_path / "work" / "inputs").rglob("*") if p.is_file() and p.name == "pick.npy"]
    assert len(copies) == 1 and copies[0].read_bytes() == (tmp_path / "pick.npy").read_bytes()
    assert read_subset(uri) == read_subset(str(tmp_path / "pick.npy")) == sorted(picked)
    assert f"warning: {uri} is not sorted" in capsys.readouterr().err


def test_a_subset_file_with_unknown_uids_into_a_bucket_dataset(bucket, tmp_path, monkeypatch):
    """A subset imported into a dataset in the bucket is checked against its samples by the
    engine's tasks, which read the staged file from the bucket (it is made on the driver's disk):
    the same error and, with ``allow_unknown``, the same objects as into a local dataset; no
    scratch object is left."""
    from curate.errors import DatasetError
    from curate.sql import ranges
    from curate.subset_import import import_subset
    from curate.uid import DATACOMP_DTYPE

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setattr(ranges, "RANGE_ROWS", 9)
    n = 40
    uids = sorted(_uid(i) for i in range(n))
    samples = _samples_of(uids)
    picked = sorted([uids[i] for i in (3, 8, 8, 17, 39)] + ["0" * 31 + "1", "f" * 32])  # _uid(0) is all 0s
    np.save(tmp_path / "pick.npy", np.array([(int(u[:16], 16), int(u[16:], 16)) for u in picked], DATACOMP_DTYPE))
    got = {}
    for kind, root in (("local", str(tmp_path / "a")), ("bucket", f"s3://{bucket}/ds")):
        ds = Dataset(root)
        ds.write_table("samples", samples, schema="samples", rows_per_shard=10)
        with pytest.raises(DatasetError, match=f"2 uids are not in samples of .* \\(first: {'0' * 31}1\\)"):
            import_subset(ds, "pick", str(tmp_path / "pick.npy"))
        out = import_subset(ds, "pick", str(tmp_path / "pick.npy"), allow_unknown=True)
        assert out["counts"] == {"file_rows": 7, "unknown_uid": 2, "selected": 5}, kind
        got[kind] = {f: bytes(_read(ds, f"subsets/pick/{f}")) for f in ("uids.parquet", "uids.npy")}
    assert got["local"] == got["bucket"]
    assert read_subset(Dataset(f"s3://{bucket}/ds"), "pick") == [u for u in picked if u in uids]
    assert not [k for k in bucket_objects(bucket) if k.startswith("ds/_tmp/")]


def _samples_of(uids: list[str]) -> pa.Table:
    n = len(uids)
    return pa.table({"uid": uids, "url": [f"http://x/{i}.jpg" for i in range(n)], "text": ["t"] * n,
                     "source_file": ["p"] * n, "source_row": list(range(n)),
                     "original_width": pa.nulls(n, pa.int32()), "original_height": pa.nulls(n, pa.int32()),
                     "extra": pa.nulls(n, pa.string())})


def _read(ds: Dataset, rel: str) -> bytes:
    from curate import storage

    return storage.read_bytes(ds.path(rel))


def test_a_subset_from_workers_parts_in_a_bucket(bucket, tmp_path, spark, monkeypatch):
    """A selection's subset written from the workers' parts (``subset_parts``, Spark) into a
    bucket: every object equals the local one-pass write's file, a multi-stage uid straddling
    shards included; the parts' scratch is gone."""
    from test_object_store import local_files

    from curate.decisions import decisions_table
    from curate.engine.spark import SparkExecutor
    from curate import subset_parts
    from curate.subset_parts import write_subset_from_table

    monkeypatch.setattr(subset_parts, "PARTS_MIN_SLOTS", 2)  # local[2] as a cluster
    uids = sorted(_uid(i) for i in range(50))
    rng = np.random.default_rng(3)
    kept = rng.random((50, 2)) < 0.8
    dec = pa.concat_tables([decisions_table(uids, f"s{j}", kept[:, j].tolist(),
                                            np.where(kept[:, j], "kept", "no").tolist()) for j in range(2)])
    dec = dec.sort_by([("uid", "ascending"), ("stage", "ascending")])
    want = [u for u, k in zip(uids, kept) if k.all()]
    local, remote = Dataset(tmp_path / "ds"), Dataset(f"s3://{bucket}/ds")
    for ds, ex in ((local, LocalExecutor()), (remote, SparkExecutor(spark))):
        ds.write_table("decisions/r", dec, schema="decisions", rows_per_shard=7)  # pairs cut at odd rows
        write_subset_from_table(ex, ds, "s", "decisions/r", "kept", len(want), {"stage": "t"}, stages=2)
    objects = bucket_objects(bucket, "ds/")
    assert not [k for k in objects if k.startswith("_tmp/")]
    subset_files = {k: v for k, v in objects.items() if k.startswith("subsets/") and "/_committed/" not in k}
    assert subset_files == {k: v for k, v in local_files(local.root).items() if k.startswith("subsets/")}
    assert read_subset(remote, "s") == want
