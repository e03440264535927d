"""Outputs a user names as a URI: `curate sql --out`, `curate report --out`, `curate eval
--output`, `curate train --output` write objects in the loopback S3 server (curate.outputs:
written locally, uploaded whole), equal to a local-path run's files where the output is
deterministic."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from s3kit import bucket_objects

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _cli(*args, env=None):
    return subprocess.run([sys.executable, "-m", "curate.cli", *args], capture_output=True, text=True, env=env)


def test_sql_and_report_out_to_a_bucket(bucket, tmp_path):
    from report.toypool import make_downloaded_pool, run_two_stage_recipe

    ds = make_downloaded_pool(tmp_path / "pool")
    run_two_stage_recipe(tmp_path, ds)
    root = str(ds.root)
    query = "SELECT uid, text FROM samples ORDER BY uid"
    for name in ("q.parquet", "q.csv"):
        for out in (str(tmp_path / name), f"s3://{bucket}/out/{name}"):
            r = _cli("sql", root, query, "--out", out)
            assert r.returncode == 0 and "wrote 60 rows" in r.stdout, (out, r.stderr)
    r = _cli("sql", root, "SELECT uid FROM samples WHERE false", "--out", f"s3://{bucket}/out/empty.csv")
    assert r.returncode == 0, r.stderr
    for out in (str(tmp_path / "report.html"), f"s3://{bucket}/out/report.html"):
        r = _cli("report", root, "--subset", "curated", "--out", out)
        assert r.returncode == 0 and out in r.stdout, (out, r.stderr)
    objects = bucket_objects(bucket, "out/")
    assert sorted(objects) == ["empty.csv", "q.csv", "q.parquet", "report.html"]  # no markers, no temporaries
    for name in ("q.parquet", "q.csv"):
        assert objects[name] == (tmp_path / name).read_bytes(), name
    assert objects["empty.csv"] == b""

    def unstamped(page: bytes) -> str:  # the report says when it was made, to the minute
        return re.sub(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", "STAMP", page.decode())

    assert unstamped(objects["report.html"]) == unstamped((tmp_path / "report.html").read_bytes())
    # a URI inside the dataset's tables is refused, as a local path is
    r = _cli("sql", f"s3://{bucket}/ds", "SELECT 1", "--out", f"s3://{bucket}/ds/samples/x.csv")
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0, r.stderr


def test_report_of_a_bucket_dataset_in_place(bucket, tmp_path, monkeypatch):
    """`curate report s3://bucket/ds` reads the dataset in place (its image shards streamed for
    the thumbnails) and writes DATASET/reports/SUBSET.html there: the page a local run makes."""
    from report.toypool import make_downloaded_pool, run_two_stage_recipe

    from curate.tables.publish import publish

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    ds = make_downloaded_pool(tmp_path / "pool")
    run_two_stage_recipe(tmp_path, ds)
    publish(ds.root, f"s3://{bucket}/ds")
    for root in (str(ds.root), f"s3://{bucket}/ds"):
        r = _cli("report", root, "--subset", "curated")
        assert r.returncode == 0 and "reports/curated.html" in r.stdout, (root, r.stderr)
    page = bucket_objects(bucket, "ds/reports/")["curated.html"]
    assert b"data:image/" in page  # thumbnails from the shards in the bucket
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC")
    local = (ds.root / "reports" / "curated.html").read_bytes().decode()
    def plain(text: str) -> str:  # the page names the dataset it reports on; everything else is the same
        return stamp.sub("STAMP", text).replace(f"s3://{bucket}/ds", "DS").replace(str(ds.root), "DS")

    assert plain(page.decode()) == plain(local)
    assert not (tmp_path / "work").exists() or not any((tmp_path / "work").rglob("*.parquet"))  # no working copy


def test_eval_output_to_a_bucket(bucket, tmp_path, shared_data):
    from shared_sets import write_eval_sets

    sets = write_eval_sets(shared_data, tmp_path / "sets", ["airplane", "cat"], per_class=2, photos=4)
    for out in (str(tmp_path / "random.eval.json"), f"s3://{bucket}/evals/random.eval.json"):
        r = _cli("eval", "--model", "curate-tiny", "-z", str(sets / "cifar"), "-o", out)
        assert r.returncode == 0 and out in r.stdout, r.stderr
    got = json.loads(bucket_objects(bucket, "evals/")["random.eval.json"])
    want = json.loads((tmp_path / "random.eval.json").read_text())
    for d in (got, want):  # the run's seconds and code version differ between runs
        d.pop("wall_s"), d.pop("code")
    assert got == want and got["zeroshot"]["cifar"]["n_images"] == 4


def test_eval_templates_file_in_a_bucket(bucket, tmp_path):
    from curate import outputs
    from curate.evaluate import load_templates
    from curate.evaluate.tasks import EvalError

    text = "# prompts\na drawing of a {}\na photo of a {c}.\n"
    outputs.write_bytes(f"s3://{bucket}/prompts.txt", text.encode())
    (tmp_path / "prompts.txt").write_text(text)
    assert load_templates(f"s3://{bucket}/prompts.txt") == load_templates(str(tmp_path / "prompts.txt")) == [
        "a drawing of a {}", "a photo of a {}."]
    with pytest.raises(EvalError, match=f"templates: s3://{bucket}/none.txt is neither"):
        load_templates(f"s3://{bucket}/none.txt")


def test_eval_of_a_checkpoint_in_a_bucket(bucket, tmp_path, shared_data, monkeypatch):
    """`curate eval s3://.../run` (or its model.pt): the checkpoint and its train.json copied to
    the input cache, the results beside it on the store, the same numbers as the local run."""
    from shared_sets import write_eval_sets

    from curate import outputs
    from curate.models import load_model, save_checkpoint

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    sets = write_eval_sets(shared_data, tmp_path / "sets", ["airplane", "cat"], per_class=2, photos=4)
    run = tmp_path / "run"
    save_checkpoint(load_model("curate-tiny", seed=5).model, run / "model.pt", arch="curate-tiny")
    (run / "train.json").write_text(json.dumps({"model": "curate-tiny", "preset": "tiny", "seed": 5}))
    for f in ("model.pt", "train.json"):
        outputs.write_bytes(f"s3://{bucket}/runs/r/{f}", (run / f).read_bytes())
    r = _cli("eval", str(run / "model.pt"), "-z", str(sets / "cifar"))
    assert r.returncode == 0, r.stderr
    want = json.loads((run / "model.eval.json").read_text())
    r = _cli("eval", f"s3://{bucket}/runs/r", "-z", str(sets / "cifar"))  # the run folder
    assert r.returncode == 0 and f"s3://{bucket}/runs/r/model.eval.json" in r.stdout, r.stderr
    got = json.loads(bucket_objects(bucket, "runs/r/")["model.eval.json"])
    assert got["checkpoint"] == f"s3://{bucket}/runs/r/model.pt" and got["train"]["seed"] == 5
    for d in (got, want):
        d.pop("wall_s", None), d.pop("code", None), d.pop("checkpoint", None)
    assert got == want
    # the checkpoint's own URI: the same local copy, its train.json beside it
    from curate.evaluate.remote import checkpoint_copy

    local, uri = checkpoint_copy(f"s3://{bucket}/runs/r/model.pt")
    assert uri == f"s3://{bucket}/runs/r/model.pt" and local.read_bytes() == (run / "model.pt").read_bytes()
    assert json.loads((local.parent / "train.json").read_text())["seed"] == 5
    r = _cli("eval", f"s3://{bucket}/runs/none", "-z", str(sets / "cifar"))
    assert r.returncode == 2 and "does not exist" in r.stderr and r.stderr.strip().count("\n") == 0, r.stderr


def _shards(d: Path) -> Path:
    """Two WebDataset tars of solid-colour squares (the train tests' shards)."""
    from train.conftest import write_colour_shards

    return write_colour_shards(d)


@pytest.mark.slow
def test_train_output_to_a_bucket(bucket, tmp_path, monkeypatch):
    """open_clip_train writes locally (a working folder), the finished run's files are uploaded
    whole; the same call again returns the finished run and uploads the same bytes."""
    from curate.train import train
    from curate.train.output_uri import work_dir

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    shards = _shards(tmp_path / "shards")
    uri = f"s3://{bucket}/runs/tiny"
    info = train(shards, uri, "tiny", seed=1, samples_seen=64, batch_size=16, progress=False)
    assert info["output_uri"] == uri
    objects = bucket_objects(bucket, "runs/tiny/")
    assert {"train.json", "model.pt", "out.log"} <= set(objects), sorted(objects)
    local = work_dir(uri)
    assert {str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()} == set(objects)
    for key, data in objects.items():
        assert (local / key).read_bytes() == data, key
    again = train(shards, uri, "tiny", seed=1, samples_seen=64, batch_size=16, progress=False)
    assert again["config_hash"] == info["config_hash"] and bucket_objects(bucket, "runs/tiny/") == objects
    # a run that starts from that checkpoint on the store (copied here; its URI recorded)
    more = train(shards, tmp_path / "more", "tiny", seed=1, samples_seen=64, batch_size=16, progress=False,
                 pretrained=f"{uri}/model.pt")
    assert more["pretrained"] == f"{uri}/model.pt" and (tmp_path / "more" / "model.pt").is_file()


def _seed_folder(seed: Path, n: int) -> Path:
    """``n`` solid-colour squares with a caption file beside each (a DFN seed set)."""
    from train.conftest import COLOURS, jpeg_square

    seed.mkdir()
    for i in range(n):
        c = list(COLOURS)[i % 4]
        (seed / f"{i:03d}.jpg").write_bytes(jpeg_square(COLOURS[c]))
        (seed / f"{i:03d}.txt").write_text(f"a {c} square\n")
    return seed


def _members(tar: Path) -> list[tuple[str, bytes]]:
    import tarfile

    with tarfile.open(tar) as tf:
        return [(m.name, tf.extractfile(m).read()) for m in tf.getmembers() if m.isfile()]


def test_scorer_seed_set_in_a_bucket(bucket, tmp_path, monkeypatch):
    """A seed set named by URI: an image folder on the store is copied and packed into the same
    shards as the folder on disk, its URI recorded; shards on a store are left for the trainer
    to read in place; a seed set that is not there is one error naming it."""
    from curate import storage
    from curate.tables import Dataset
    from curate.train.scorer import ScorerError, prepare_seed_set, seed_kind

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    seed = _seed_folder(tmp_path / "trusted", 12)
    for f in seed.iterdir():
        storage.put_bytes(storage.resolve(f"s3://{bucket}/trusted/{f.name}"), f.read_bytes())
    storage.put_bytes(storage.resolve(f"s3://{bucket}/shards/00000.tar"), b"")
    ds = Dataset(tmp_path / "ds")
    packed = {}
    for name, where in (("disk", str(seed)), ("store", f"s3://{bucket}/trusted")):
        data, desc = prepare_seed_set(ds, where, tmp_path / name)
        assert desc["kind"] == "images" and desc["samples"] == 12 and desc["source"] == (
            str(seed.resolve()) if name == "disk" else where)
        packed[name] = {p.name: _members(p) for p in sorted(Path(data).glob("*.tar"))}
    assert packed["disk"] == packed["store"] and len(packed["disk"]["00000000.tar"]) == 24  # jpg and txt each
    assert seed_kind(ds, f"s3://{bucket}/shards") == "webdataset"
    assert seed_kind(ds, f"s3://{bucket}/shards/00000.tar") == "webdataset"
    with pytest.raises(ScorerError, match=f"seed set s3://{bucket}/none: no such file or folder"):
        seed_kind(ds, f"s3://{bucket}/none")


@pytest.mark.slow
def test_scorer_on_a_bucket_dataset(bucket, tmp_path, monkeypatch):
    """`curate scorer train s3://bucket/ds`: the scorer is trained in a local working folder and
    uploaded to ds/scorers/NAME/ (manifest last); `resolve_scorer` reads it back from the bucket
    (the weights copied to the local input cache) with the model id the manifest records."""
    import numpy as np

    from curate.models.scorers import list_scorers, resolve_scorer
    from curate.tables import Dataset
    from curate.train.output_uri import work_dir
    from filters.conftest import write_samples

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    seed = _seed_folder(tmp_path / "trusted", 24)
    uri = f"s3://{bucket}/ds"
    write_samples(Dataset(uri), ["a red square"] * 4, [24] * 4, [24] * 4)
    r = _cli("scorer", "train", uri, "--seed-set", str(seed), "--name", "dfn", "--samples-seen", "64",
             "--batch-size", "16", "--progress-every", "0")
    assert r.returncode == 0, r.stderr
    objects = bucket_objects(bucket, "ds/scorers/dfn/")
    local = work_dir(f"{uri}/scorers/dfn")
    assert {str(p.relative_to(local)) for p in local.rglob("*") if p.is_file()} == set(objects)
    assert all((local / k).read_bytes() == v for k, v in objects.items())
    m = json.loads(objects["scorer.json"])
    assert m["dataset"] == uri and m["seed_set"]["samples"] == 24 and np.isfinite(m["loss_last"])
    assert list_scorers(uri) == ["dfn"]
    ref = resolve_scorer("dfn", uri)
    assert ref is not None and ref.model_id == m["model_id"] and ref.checkpoint.read_bytes() == objects["dfn.pt"]
    assert resolve_scorer(f"{uri}/scorers/dfn", None).model_id == m["model_id"]  # by folder URI
    assert resolve_scorer("nope", uri) is None
    r = _cli("scorer", "list", uri)
    assert r.returncode == 0 and json.loads(r.stdout)["model_id"] == m["model_id"], r.stderr


def test_coverage_on_a_bucket_dataset(bucket, tmp_path, monkeypatch):
    """`curate coverage s3://bucket/ds` works on a local copy and publishes coverage/NAME (its
    table and plots) back: the objects equal a local run's files."""
    import importlib.util

    from curate.subset import write_subset
    from curate.tables.publish import publish

    def load(name: str):
        spec = importlib.util.spec_from_file_location(f"coverage_{name}", Path(__file__).parents[1] / "coverage" / f"{name}.py")
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod

    cov = load("conftest")
    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    texts = ["a dog on the grass", "two dogs", "a cat, a dog.", "a hot dog stand", "a red bird", "nothing here"]
    ds = cov.write_pool(tmp_path / "pool", texts * 3, shards=2)
    u = cov.uid_of(ds)
    write_subset(ds, "a", [u[i] for i in (0, 1, 4, 5)])
    concepts = tmp_path / "animals.txt"
    concepts.write_text("dog\ncat\nbird\nhot dog\nzebra\n")
    uri = f"s3://{bucket}/ds"
    publish(str(ds.root), uri)
    for root in (str(ds.root), uri):
        r = _cli("coverage", root, "--concepts", str(concepts), "--subset", "a", "--engine", "local", env=dict(os.environ))
        assert r.returncode == 0 and "coverage animals: 5 concepts" in r.stdout, r.stderr
    local = {p.relative_to(ds.root).as_posix(): p.read_bytes() for p in (ds.root / "coverage").rglob("*") if p.is_file()}
    objects = {k: v for k, v in bucket_objects(bucket, "ds/").items() if k.startswith("coverage/")}
    visible = {k: v for k, v in objects.items() if not any(part[:1] in "_." for part in k.split("/")[1:])}
    want = {k: v for k, v in local.items() if not any(part[:1] in "_." for part in k.split("/")[1:])}
    assert want and visible == want, (sorted(visible), sorted(want))


def test_metadata_build_with_inputs_and_output_in_a_bucket(bucket, tmp_path, monkeypatch):
    """`metadata build` from a corpus and an entry list on the store, into the store: the same
    list as a local build (the record names the URIs and the list's sha256); a worldwide build
    into a folder URI uploads each language then `_build.json`, and a rebuild with fewer
    languages deletes the lists of ours it no longer makes; a corpus that is not there is one
    error naming its URI."""
    from curate import outputs
    from curate.errors import InputFileError
    from curate.metaclip.build_job import run_build

    monkeypatch.setenv("CURATE_WORK_DIR", str(tmp_path / "work"))
    corpus = "\n".join(["Golden Gate Bridge view", "the Golden Gate Bridge", "Golden Gate park"] * 4
                       + ["a cat on a mat", "a dog on a log"] * 10)
    (tmp_path / "corpus.txt").write_text(corpus, encoding="utf-8")
    (tmp_path / "mine.txt").write_text("my entry\nGolden Gate\n", encoding="utf-8")
    for f in ("corpus.txt", "mine.txt"):
        outputs.write_bytes(f"s3://{bucket}/in/{f}", (tmp_path / f).read_bytes())
    kw = dict(wordnet=False, wordfreq_top=500, bigram_min_count=3, bigram_min_pmi=1.0)
    local = run_build(tmp_path / "m.json", corpus=[str(tmp_path / "corpus.txt")],
                      entry_lists=[str(tmp_path / "mine.txt")], **kw)
    remote = run_build(f"s3://{bucket}/meta/m.json", corpus=[f"s3://{bucket}/in/corpus.txt"],
                       entry_lists=[f"s3://{bucket}/in/mine.txt"], **kw)
    objects = bucket_objects(bucket, "meta/")
    assert objects["m.json"] == (tmp_path / "m.json").read_bytes() and remote["sha256"] == local["sha256"]
    side = json.loads(objects["m.json.build.json"])
    assert side["output"] == f"s3://{bucket}/meta/m.json" and side["bigrams"]["mined"] >= 2
    assert f"user:s3://{bucket}/in/mine.txt" in side["sources"] and side["bigrams"]["corpus"] == [
        f"s3://{bucket}/in/corpus.txt"]
    with pytest.raises(InputFileError, match=f"s3://{bucket}/in/none.txt: corpus file not found"):
        run_build(f"s3://{bucket}/meta/x.json", corpus=[f"s3://{bucket}/in/none.txt"], **kw)
    r = _cli("metadata", "build", f"s3://{bucket}/meta/cli.json", "--bigram-corpus", f"s3://{bucket}/in/corpus.txt",
             "--no-wordnet", "--wordfreq-top", "500", "--bigram-min-count", "3", "--bigram-min-pmi", "1.0")
    assert r.returncode == 0, r.stderr
    assert json.loads(bucket_objects(bucket, "meta/")["cli.json"])[:3] == ["0", "1", "2"]
    from curate.tables import Dataset
    from filters.conftest import write_samples

    write_samples(Dataset(f"s3://{bucket}/ds"), corpus.splitlines(), [64] * 32, [64] * 32)
    r = _cli("metadata", "build", f"s3://{bucket}/meta/pool.json", "--dataset", f"s3://{bucket}/ds", "--no-wordnet",
             "--wordfreq-top", "0", "--bigram-min-count", "3", "--bigram-min-pmi", "1.0", "--engine", "local")
    assert r.returncode == 0, r.stderr
    assert "Golden Gate" in json.loads(bucket_objects(bucket, "meta/")["pool.json"])
    r = _cli("metadata", "build", str(tmp_path / "pool-ww"), "--dataset", f"s3://{bucket}/ds", "--languages", "en,fr",
             "--no-wordnet", "--wordfreq-top", "0", "--bigram-min-count", "3", "--bigram-min-pmi", "1.0",
             "--engine", "local")  # the worldwide corpus pass reads the pool's shards from the store too
    assert r.returncode == 0, r.stderr
    assert "Golden Gate" in json.loads((tmp_path / "pool-ww" / "en.json").read_text())
    ww = dict(wordnet=False, wordfreq_top=50, bigrams=False)
    run_build(f"s3://{bucket}/ww", languages=["en", "de", "fr"], **ww)
    assert {"en.json", "de.json", "fr.json", "_build.json"} <= set(bucket_objects(bucket, "ww/"))
    run_build(tmp_path / "ww", languages=["en", "de"], **ww)
    again = run_build(f"s3://{bucket}/ww", languages=["en", "de"], **ww)
    got = bucket_objects(bucket, "ww/")
    assert set(got) == {"en.json", "de.json", "_build.json"}
    assert all(got[f] == (tmp_path / "ww" / f).read_bytes() for f in ("en.json", "de.json"))
    assert json.loads(got["_build.json"])["output"] == again["output"] == f"s3://{bucket}/ww"
