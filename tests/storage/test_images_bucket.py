"""Jobs that read the downloaded image shards (tars) of a dataset in s3://bucket/ds: `curate embed`
(CLI, in-process engine and Spark local mode) and perceptual dedup (job function). The tars are
streamed from the store; embeddings and hashes are written to it. Every visible object equals a
local-path run's file."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from s3kit import bucket_objects

from curate.download import DownloadOptions, FetchPolicy, run_download
from curate.engine import LocalExecutor
from curate.tables import Dataset
from tests.shared_sets import first_captions, photo_samples, write_eval_sets
from curate.tables.publish import publish

MODEL_ID = "curate-tiny__random-seed0"


@pytest.fixture(scope="module")
def downloaded_template(tmp_path_factory, shared_data) -> Path:
    """12 flickr8k photos with their captions in 2 image shards of 6 (the real download job, file:// URLs)."""
    photos = sorted((shared_data / "flickr8k" / "images").glob("*.jpg"))[:12]
    captions = first_captions(shared_data)
    samples = photo_samples(photos, [captions.get(p.name, "") for p in photos])
    n = samples.num_rows
    root = tmp_path_factory.mktemp("images") / "template"
    ds = Dataset(root)
    ds.write_table("samples", samples, schema="samples")
    stats = run_download(ds, LocalExecutor(), DownloadOptions(samples_per_shard=6, thread_count=4,
                                                              policy=FetchPolicy(allow_file_urls=True)))
    assert stats["success"] == n, stats
    return root


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True, text=True)


def _visible(files: dict, prefix: str = "") -> dict:
    return {k: v for k, v in files.items() if k.startswith(prefix) and not any(p[:1] in "_." for p in k.split("/"))}


def _local(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _pair(template: Path, tmp_path: Path, bucket: str) -> tuple[Dataset, str]:
    shutil.copytree(template, tmp_path / "local")
    uri = f"s3://{bucket}/ds"
    publish(template, uri)
    return Dataset(tmp_path / "local"), uri


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["local", pytest.param("spark", marks=pytest.mark.extended)])
def test_embed_on_bucket_matches_local(downloaded_template, tmp_path, bucket, engine):
    local, uri = _pair(downloaded_template, tmp_path, bucket)
    for root in (str(local.root), uri):
        args = ["embed", root, "--model", "curate-tiny", "--batch-size", "4", "--engine", engine]
        if engine == "spark":
            args += ["--master", "local[2]"]
        r = _cli(*args)
        assert r.returncode == 0, r.stderr
    want = _visible(_local(local.root), f"embeddings/{MODEL_ID}/")
    assert len(want) == 2
    objects = bucket_objects(bucket, "ds/")
    assert _visible(objects, f"embeddings/{MODEL_ID}/") == want
    assert _visible(objects, f"embed_failures/{MODEL_ID}/") == _visible(_local(local.root), f"embed_failures/{MODEL_ID}/")
    assert Dataset(uri).count(f"embeddings/{MODEL_ID}") == 12
    # a rerun skips every committed shard
    r = _cli("embed", uri, "--model", "curate-tiny", "--engine", "local")
    assert r.returncode == 0 and "2 of 2 shards already done" in r.stderr, r.stderr


@pytest.mark.parametrize("engine", ["local", pytest.param("spark", marks=pytest.mark.extended)])
def test_embed_with_a_checkpoint_in_a_bucket(downloaded_template, tmp_path, bucket, engine, monkeypatch):
    """``--pretrained s3://.../model.pt`` (or ``--model`` naming it, the architecture from the
    train.json beside it): the checkpoint copied to each machine's input cache, the same model
    id and embeddings as the same file on disk; a missing object is one line."""
    import json

    from curate import outputs
    from curate.models import load_model, save_checkpoint

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    run = tmp_path / "run"
    save_checkpoint(load_model("curate-tiny", seed=5).model, run / "model.pt", arch="curate-tiny")
    (run / "train.json").write_text(json.dumps({"model": "curate-tiny", "seed": 5}))
    for f in ("model.pt", "train.json"):
        outputs.write_bytes(f"s3://{bucket}/runs/r/{f}", (run / f).read_bytes())
    extra = ["--batch-size", "4", "--engine", engine] + (["--master", "local[2]"] if engine == "spark" else [])
    tables = {}
    for name, model in (("disk", ["--model", "curate-tiny", "--pretrained", str(run / "model.pt")]),
                        ("store", ["--model", "curate-tiny", "--pretrained", f"s3://{bucket}/runs/r/model.pt"]),
                        ("store-arch", ["--model", f"s3://{bucket}/runs/r/model.pt"])):
        root = tmp_path / name
        shutil.copytree(downloaded_template, root)
        r = _cli("embed", str(root), *model, *extra)
        assert r.returncode == 0, r.stderr
        emb = [t for t in Dataset(root).tables() if t.startswith("embeddings/")]
        assert len(emb) == 1, emb
        tables[name] = (emb[0], _visible(_local(root), emb[0] + "/"))
    (table, files), *others = tables.values()
    assert table.startswith("embeddings/curate-tiny__model-") and len(files) == 2
    assert all(o == (table, files) for o in others)
    r = _cli("embed", str(tmp_path / "disk"), "--model", "curate-tiny", "--pretrained", f"s3://{bucket}/runs/none.pt")
    assert r.returncode != 0 and f"checkpoint s3://{bucket}/runs/none.pt does not exist" in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_perceptual_dedup_on_bucket_matches_local(downloaded_template, tmp_path, bucket):
    from curate.perceptual.job import run_perceptual_dedup

    local, uri = _pair(downloaded_template, tmp_path, bucket)
    want = run_perceptual_dedup(local, radius=4)["counts"]
    got = run_perceptual_dedup(Dataset(uri), radius=4)["counts"]
    for c in (want, got):
        c["hash"].pop("seconds")
    assert got == want and want["input"] == 12
    objects, files = bucket_objects(bucket, "ds/"), _local(local.root)
    for t in ("phashes/", "decisions/perceptual_dedup/", "subsets/perceptual_dedup/"):
        assert _visible(files, t) and _visible(objects, t) == _visible(files, t), t
    assert not [k for k in objects if k.startswith("_tmp/")]


def test_select_and_reshard_on_bucket_match_local(downloaded_template, tmp_path, bucket):
    """`curate select` (SQL and --from-file from the bucket) and `curate reshard --out s3://...`:
    the WebDataset tars are whole objects equal to a local run's files."""
    local, uri = _pair(downloaded_template, tmp_path, bucket)
    outs = {uri: f"s3://{bucket}/shards", str(local.root): str(tmp_path / "shards")}
    for root, out in outs.items():
        r = _cli("select", root, "--sql", "SELECT uid FROM samples WHERE source_row % 3 <> 1", "--name", "some")
        assert r.returncode == 0, r.stderr
        r = _cli("select", root, "--from-file", f"{uri}/subsets/some/uids.npy", "--name", "again")
        assert r.returncode == 0, r.stderr
        r = _cli("reshard", root, "--subset", "again", "--out", out, "--shard-size", "3", "--engine", "local")
        assert r.returncode == 0, r.stderr
    files = _local(local.root)
    objects = bucket_objects(bucket, "ds/")
    for t in ("subsets/some/", "subsets/again/"):
        assert _visible(files, t) and _visible(objects, t) == _visible(files, t)
    assert files["subsets/again/uids.npy"] == files["subsets/some/uids.npy"]
    want = {k: v for k, v in _local(tmp_path / "shards").items() if not k.endswith("_stats.json") and k != "meta.json"}
    got = {k: v for k, v in bucket_objects(bucket, "shards/").items()
           if not k.endswith("_stats.json") and k != "meta.json"}
    assert got == want and sum(k.endswith(".tar") for k in want) == 3
    from curate.reshard import read_meta, shard_urls

    urls, total = shard_urls(f"s3://{bucket}/shards")
    assert total == 8 and urls[0] == f"s3://{bucket}/shards/00000000.tar"
    assert read_meta(f"s3://{bucket}/shards")["counts"]["written"] == 8


def test_training_shards_read_from_bucket(downloaded_template, tmp_path, bucket):
    """The training input of `curate train` for a reshard in a bucket: webdataset reads the
    shards through ``pipe:`` URLs (curate.storage_cat) and yields the local shards' samples."""
    import webdataset as wds

    from curate.reshard import reshard
    from curate.train import resolve_train_data

    local, uri = _pair(downloaded_template, tmp_path, bucket)
    for ds, out in ((local, str(tmp_path / "shards")), (Dataset(uri), f"s3://{bucket}/shards")):
        from curate.subset import write_subset

        write_subset(ds, "all", ds.read("samples", columns=["uid"]).column("uid"))
        reshard(ds, "all", out, shard_size=5)
    info = resolve_train_data(f"s3://{bucket}/shards")
    assert info["shards"] == 3 and info["samples"] == 12 and info["reshard"]["counts"]["written"] == 12
    assert info["urls"].startswith("pipe:")

    def samples(urls):
        return [(s["__key__"], s["jpg"]) for s in wds.WebDataset(urls.split("::"), shardshuffle=False)]

    want = samples(resolve_train_data(str(tmp_path / "shards"))["urls"])
    assert len(want) == 12 and samples(info["urls"]) == want


def test_eval_sets_in_a_bucket(shared_data, tmp_path, bucket, monkeypatch):
    """`curate eval -z s3://.../cifar -r s3://.../flickr/captions.csv`: the same scores as the local folders."""
    import json

    import boto3

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    s3 = boto3.client("s3")
    root = tmp_path / "evals"
    write_eval_sets(shared_data, root, ["cat", "dog", "ship"], per_class=3, photos=6)
    for p in root.rglob("*"):
        if p.is_file():
            s3.put_object(Bucket=bucket, Key=f"evals/{p.relative_to(root).as_posix()}", Body=p.read_bytes())
    out = {}
    for where, base in (("local", str(root)), ("bucket", f"s3://{bucket}/evals")):
        r = _cli("eval", "--model", "curate-tiny", "-z", f"{base}/cifar", "-r", f"{base}/flickr/captions.csv",
                 "-o", str(tmp_path / f"{where}.json"), "--device", "cpu")
        assert r.returncode == 0, r.stderr
        out[where] = json.loads((tmp_path / f"{where}.json").read_text())
    assert out["bucket"]["zeroshot"]["cifar"].pop("dataset") == f"s3://{bucket}/evals/cifar"
    assert out["bucket"]["retrieval"]["flickr"].pop("dataset").startswith(f"s3://{bucket}/evals/flickr")
    for group, name in (("zeroshot", "cifar"), ("retrieval", "flickr")):
        out["local"][group][name].pop("dataset")
        assert out["bucket"][group][name] == out["local"][group][name]
    assert out["local"]["zeroshot"]["cifar"]["n_images"] == 9
    r = _cli("eval", "--model", "curate-tiny", "-z", f"s3://{bucket}/evals/nothing")
    assert r.returncode == 2 and "does not exist" in r.stderr
