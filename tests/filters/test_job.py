"""The filter job end to end: decisions complete, counts add up, subsets in both formats,
the same output from Spark and from the in-process engine, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from curate.engine import LocalExecutor
from curate.errors import CurateError, DatasetError
from curate.filters.job import run_filters
from curate.filters.stages import parse_filter
from curate.filters.threshold import reference_threshold
from curate.subset import read_subset
from curate.uid import DATACOMP_DTYPE


def specs(*texts):
    return [parse_filter(t) for t in texts]


def check_complete(ds, name, n_samples, stage_names):
    d = ds.read(f"decisions/{name}", schema="decisions")
    samples = set(ds.read("samples", columns=["uid"]).column("uid").to_pylist())
    for s in stage_names:
        part = d.filter(pc.equal(d.column("stage"), s))
        assert part.num_rows == n_samples
        assert set(part.column("uid").to_pylist()) == samples
        kept = part.column("kept").to_pylist()
        reasons = part.column("reason").to_pylist()
        assert all((r == "kept") == k for r, k in zip(reasons, kept))
    return d


def test_local_run_decisions_subset_manifest(pool):
    r = run_filters(pool, specs("basic", "clip_score:fraction=0.3"), LocalExecutor())
    name = "basic+clip_score"
    d = check_complete(pool, name, 60, ["basic", "clip_score"])
    c = r["counts"]
    for stage, reasons in c["filters"].items():
        assert sum(reasons.values()) == 60
    assert c["kept"] + c["removed"] == 60
    # The subset is exactly the uids both filters kept.
    kept = {}
    for row in d.to_pylist():
        kept.setdefault(row["uid"], []).append(row["kept"])
    expect = sorted(u for u, ks in kept.items() if all(ks))
    assert read_subset(pool, name) == expect and len(expect) == c["kept"]
    # DataComp's .npy: sorted u8,u8, high and low 64 bits of int(uid, 16).
    arr = np.load(pool.root / "subsets" / name / "uids.npy")
    assert arr.dtype == DATACOMP_DTYPE
    assert [(int(u[:16], 16), int(u[16:], 16)) for u in expect] == arr.tolist()
    assert read_subset(pool.root / "subsets" / name / "uids.npy") == expect
    # The threshold is DataComp's over the pool with scores, and ties are kept.
    scores = pool.read("embeddings/tiny", columns=["clip_score"]).column(0).to_numpy()
    thr = reference_threshold(scores, 0.3)
    assert r["resolved"]["clip_score"]["threshold"] == thr
    assert c["filters"]["clip_score"]["kept"] == int((scores >= thr).sum())
    assert c["filters"]["clip_score"]["no_embedding"] == 10
    # Manifest on disk, text_stats queryable beside samples.
    m = json.loads((pool.root / "_runs" / f"filter-{name}.json").read_text())
    assert m["counts"] == c and m["params"]["filters"] == ["basic", "clip_score:fraction=0.3"]
    ts = pool.read("text_stats", schema="text_stats")
    assert ts.column("uid").equals(pool.read("samples", columns=["uid"]).column("uid"))
    assert "en" in ts.column("language").to_pylist()


def test_rerun_skips_current_text_stats(pool):
    run_filters(pool, specs("basic"), LocalExecutor())
    before = [p.stat().st_mtime_ns for p in pool.shards("text_stats")]
    r = run_filters(pool, specs("basic"), LocalExecutor(), name="again")
    assert r["counts"]["text_stats"]["skipped_shards"] == 3
    assert [p.stat().st_mtime_ns for p in pool.shards("text_stats")] == before
    r = run_filters(pool, specs("basic"), LocalExecutor(), name="again", recompute_stats=True)
    assert r["counts"]["text_stats"]["skipped_shards"] == 0


def test_image_based_intersect_clip(pool):
    rng = np.random.default_rng(3)
    target = rng.normal(size=(4, 8)).astype(np.float32)
    np.save(pool.root / "target.npy", target)
    r = run_filters(pool, specs(f"image_based:k=3,target={pool.root / 'target.npy'},clip_fraction=0.5"),
                    LocalExecutor(), name="ib")
    d = check_complete(pool, "ib", 60, ["image_based"])
    info = r["resolved"]["image_based"]
    assert info["k"] == 3 and 1 <= info["target_clusters"] <= 3
    reasons = set(d.column("reason").to_pylist())
    assert {"no_embedding", "low_clip_score"} <= reasons
    centroids = np.load(pool.root / info["centroids_path"])
    assert centroids.shape == (3, 8)
    # Kept rows are in a cluster that received a target image.
    tc = set(np.argmax(target @ centroids.T, axis=1).tolist())
    kept = d.filter(d.column("kept"))
    assert set(int(v) for v in kept.column("value").to_pylist()) <= tc


def test_text_based_run(pool, tmp_path):
    from curate.wordnet import get_wordnet

    wn = get_wordnet()
    (tmp_path / "t.txt").write_text("\n".join(f"n{wn.synsets(w)[0].offset():08d}" for w in ("dog", "cat")))
    r = run_filters(pool, specs(f"text_based:synsets={tmp_path / 't.txt'}"), LocalExecutor(), name="tb")
    d = check_complete(pool, "tb", 60, ["text_based"])
    kept_text = set(d.filter(d.column("kept")).column("detail").to_pylist())
    assert kept_text == {"dog", "cat"}
    assert r["counts"]["filters"]["text_based"]["not_english"] > 0


def test_sizes_fall_back_to_downloads(tmp_dataset, writers):
    write_samples, _ = writers
    uids = write_samples(tmp_dataset, ["a dog running on the beach"] * 3, [None, None, 640], [None, None, 480])
    dl = pa.table({"uid": uids, "status": ["success", "failed", "success"], "original_width": pa.array([800, None, 10], pa.int32()),
                   "original_height": pa.array([600, None, 10], pa.int32())})
    for c in ("error_class", "error_message", "sha256", "shard", "key"):
        dl = dl.append_column(c, pa.nulls(3, pa.string()))
    for c in ("width", "height"):
        dl = dl.append_column(c, pa.nulls(3, pa.int32()))
    dl = dl.append_column("attempts", pa.array([1, 1, 1], pa.int32()))
    tmp_dataset.write_table("downloads", dl.select(["uid", "status", "error_class", "error_message", "sha256", "width",
                                                   "height", "original_width", "original_height", "shard", "key", "attempts"]),
                            schema="downloads")
    run_filters(tmp_dataset, specs("basic"), LocalExecutor())
    d = tmp_dataset.read("decisions/basic")
    by_uid = dict(zip(d.column("uid").to_pylist(), d.column("reason").to_pylist()))
    assert [by_uid[u] for u in uids] == ["kept", "missing_size", "kept"]  # samples' 640x480 wins over 10x10


def test_errors(tmp_dataset, pool, writers):
    write_embeddings = writers[1]
    with pytest.raises(DatasetError, match="empty does not exist"):
        run_filters(tmp_dataset.__class__(tmp_dataset.root / "empty"), specs("basic"), LocalExecutor())
    (tmp_dataset.root / "empty").mkdir()
    with pytest.raises(DatasetError, match="no samples table"):
        run_filters(tmp_dataset.__class__(tmp_dataset.root / "empty"), specs("basic"), LocalExecutor())
    write_embeddings(pool, "other", ["0" * 32], [0.1])
    with pytest.raises(DatasetError, match="several embedding tables"):
        run_filters(pool, specs("clip_score:threshold=0.2"), LocalExecutor())
    # one line: the table looked for, the ones there, what to do (no part said twice)
    with pytest.raises(DatasetError, match=r"clip_score: table embeddings/nope not found in .* "
                                           r"\(embeddings tables: [^;]*\); run `curate embed` first$"):
        run_filters(pool, specs("clip_score:threshold=0.2,model=nope"), LocalExecutor())
    with pytest.raises(CurateError, match="k=1000"):
        np.save(pool.root / "t.npy", np.ones((2, 8), np.float32))
        run_filters(pool, specs(f"image_based:k=1000,model=tiny,target={pool.root / 't.npy'}"), LocalExecutor())
    with pytest.raises(CurateError, match="given twice"):
        run_filters(pool, specs("basic", "basic:min_side=10"), LocalExecutor())


def test_duplicate_embedding_uids_fail(pool, writers):
    write_embeddings = writers[1]
    uids = pool.read("samples", columns=["uid"]).column("uid").to_pylist()
    write_embeddings(pool, "tiny", uids[:5] + uids[:5], [0.3] * 10)
    with pytest.raises(DatasetError, match=r"decisions for 60 samples.*tables read: samples, embeddings/tiny\)$"):
        run_filters(pool, specs("clip_score:threshold=0.2"), LocalExecutor())
    assert not pool.has_table("decisions/clip_score")  # no broken table left for the next job to read
    assert not (pool.root / "_tmp" / "filter-clip_score").exists()


def test_a_failed_rerun_leaves_the_earlier_runs_decisions_and_subset(pool, writers):
    """Decisions are staged and checked before they replace decisions/<name>: a rerun that fails
    its checks (an embeddings table with a uid twice) leaves the earlier run whole."""
    from curate.subset import read_subset

    first = run_filters(pool, specs("clip_score:threshold=0.2"), LocalExecutor())
    before = pool.read("decisions/clip_score")
    kept = read_subset(pool, "clip_score")
    uids = pool.read("samples", columns=["uid"]).column("uid").to_pylist()
    writers[1](pool, "tiny", uids[:5] + uids[:5], [0.3] * 10)
    with pytest.raises(DatasetError, match=r"decisions for 60 samples.*; decisions/clip_score of an earlier run is "
                                           r"unchanged$"):
        run_filters(pool, specs("clip_score:threshold=0.2"), LocalExecutor())
    assert pool.read("decisions/clip_score").equals(before) and read_subset(pool, "clip_score") == kept
    assert first["counts"]["kept"] == len(kept)
    assert not (pool.root / "_tmp" / "filter-clip_score").exists()


def test_options_that_would_remove_everything_are_refused_before_any_pass(pool, tmp_path):
    """A label the fastText model never gives, a NaN or infinite threshold, a parameter given
    twice, bounds; a bad synset list or target dim is found before the fastText pass."""
    from curate.filters.checks import check_filters
    from curate.filters.stages import FilterSpecError

    for spec, said in (("basic:lang=EN", "did you mean en"), ("basic:lang=english", "not a label"),
                       ("basic:lang=", "not a label")):
        with pytest.raises(DatasetError, match=f"filter basic: lang=.* {said}"):
            check_filters(pool, specs(spec))
    for spec, said in (("clip_score:threshold=nan", "finite"), ("clip_score:threshold=inf", "finite"),
                       ("basic:max_aspect=nan", ">= 1"), ("basic:min_words=-1", ">= 0"),
                       ("clip_score:fraction=0.3,fraction=0.5", "fraction is given twice")):
        with pytest.raises(FilterSpecError, match=said):
            parse_filter(spec)
    (tmp_path / "bad.txt").write_text("n02084071\nbogus_line\n")
    with pytest.raises(CurateError, match="bogus_line"):
        check_filters(pool, specs(f"text_based:synsets={tmp_path / 'bad.txt'}"))
    np.save(tmp_path / "t16.npy", np.ones((3, 16), np.float32))
    with pytest.raises(CurateError, match="target embeddings have dim 16, embeddings/tiny has 8"):
        check_filters(pool, specs(f"image_based:k=2,target={tmp_path / 't16.npy'}"))
    check_filters(pool, specs("basic", "clip_score:threshold=0.2"))


def test_a_rerun_without_image_based_leaves_no_centroids_of_the_earlier_run(pool):
    np.save(pool.root / "target.npy", np.random.default_rng(3).normal(size=(4, 8)).astype(np.float32))
    run_filters(pool, specs(f"image_based:k=3,target={pool.root / 'target.npy'}"), LocalExecutor(), name="combo")
    assert (pool.root / "decisions" / "combo" / "_image_based_centroids.npy").exists()
    run_filters(pool, specs("basic"), LocalExecutor(), name="combo")
    assert not (pool.root / "decisions" / "combo" / "_image_based_centroids.npy").exists()


@pytest.mark.slow
def test_spark_equals_local_and_cli(pool, spark, capsys):
    from curate.cli import main
    from curate.engine.spark import SparkExecutor

    np.save(pool.root / "target.npy", np.random.default_rng(0).normal(size=(3, 8)).astype(np.float32))
    f = ["basic", "clip_score:fraction=0.25", "laion2b", f"image_based:k=4,target={pool.root / 'target.npy'}"]
    run_filters(pool, specs(*f), LocalExecutor(), name="local")
    run_filters(pool, specs(*f), SparkExecutor(spark), name="spark", rows_per_shard=70)
    a, b = pool.read("decisions/local"), pool.read("decisions/spark")
    assert a.equals(b) and len(pool.shards("decisions/spark")) == 4  # 240 rows, 70 per shard
    assert read_subset(pool, "local") == read_subset(pool, "spark")
    # Same through the command line (in-process engine: one Spark session per test run is enough).
    with pytest.raises(SystemExit) as e:
        main(["filter", str(pool.root), "--filter", "basic", "-f", "clip_score:fraction=0.25", "--name", "cli",
              "--engine", "local"])
    assert e.value.code == 0
    local2 = run_filters(pool, specs("basic", "clip_score:fraction=0.25"), LocalExecutor(), name="api")
    assert read_subset(pool, "cli") == read_subset(pool, "api")
    err = capsys.readouterr().err
    assert f"kept {local2['counts']['kept']:,} of 60" in err
    assert "top 0.25 of 50 scored rows)" in err and "note:" not in err  # no ingest record here
    # an ingest that left rows out: the fraction's line says DataComp would count them
    pool.write_json("_runs/ingest.json", {"counts": {"rejects": 3, "duplicates": 2}})
    with pytest.raises(SystemExit) as e:
        main(["filter", str(pool.root), "-f", "clip_score:fraction=0.25", "--name", "cli2", "--engine", "local"])
    assert e.value.code == 0
    assert "ingest left out 5 input rows (rejects and repeats" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["filter", str(pool.root), "--filter", "clip_score", "--engine", "local"])
    assert e.value.code == 2


def test_image_based_target_folder_embedded_with_pool_model(tmp_dataset, writers, tmp_path):
    """target=FOLDER: images embedded with the model named by the pool's embed run."""
    from PIL import Image

    from curate.embed.core import embed_images
    from curate.manifest import RunManifest
    from curate.models import load_model

    write_samples, write_embeddings = writers
    rng = np.random.default_rng(0)
    colours = [(200, 30, 30), (30, 200, 30), (30, 30, 200)]

    def image(path, colour):
        px = np.clip(np.array(colour) + rng.integers(-20, 20, (32, 32, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(px).save(path)
        return path

    pool_dir, target = tmp_path / "pool", tmp_path / "target" / "red"
    pool_dir.mkdir()
    target.mkdir(parents=True)
    pool_imgs = [image(pool_dir / f"{i}.png", colours[i % 3]) for i in range(24)]
    for i in range(3):
        image(target / f"{i}.png", colours[0])
    bundle = load_model("curate-tiny", seed=0)
    x = embed_images(bundle, [str(p) for p in pool_imgs])
    uids = write_samples(tmp_dataset, ["a photo of a small coloured square"] * 24, [640] * 24, [480] * 24)
    write_embeddings(tmp_dataset, bundle.model_id, uids, [0.3] * 24, image=x)
    RunManifest("embed", {"model": "curate-tiny", "pretrained": None, "seed": 0}).write(tmp_dataset, f"embed-{bundle.model_id}")
    r = run_filters(tmp_dataset, specs(f"image_based:k=3,target={tmp_path / 'target'}"), LocalExecutor(), name="ib")
    info = r["resolved"]["image_based"]
    assert info["target_images"] == 3 and info["model"] == f"embeddings/{bundle.model_id}"
    centroids = np.load(tmp_dataset.root / info["centroids_path"])
    from curate.embed.core import embed_image_folder

    _, _, t = embed_image_folder(tmp_path / "target", bundle)
    clusters = set(np.argmax(t @ centroids.T, axis=1).tolist())
    d = tmp_dataset.read("decisions/ib")
    kept = d.filter(d.column("kept"))
    assert kept.num_rows > 0 and set(int(v) for v in kept.column("value").to_pylist()) == clusters


def test_empty_pool(tmp_dataset, writers):
    writers[0](tmp_dataset, [], [], [])
    r = run_filters(tmp_dataset, specs("basic"), LocalExecutor())
    assert r["counts"]["samples"] == 0 and r["counts"]["kept"] == 0
    assert read_subset(tmp_dataset, "basic") == []
    assert np.load(tmp_dataset.root / "subsets" / "basic" / "uids.npy").dtype == DATACOMP_DTYPE


def test_bad_shard_names_file_and_row(tmp_dataset, writers):
    import pyarrow.parquet as pq

    from curate.errors import InputFileError

    writers[0](tmp_dataset, ["a dog on a beach in summer"] * 4, [640] * 4, [480] * 4)
    p = tmp_dataset.shards("samples")[0]
    t = pq.read_table(p)
    t = t.set_column(t.column_names.index("text"), "text", pa.array(["ok text here", None, "x", "y"], pa.string()))
    pq.write_table(t, p)
    with pytest.raises(InputFileError, match=r"part-00000.parquet: row 1: column 'text' is null"):
        run_filters(tmp_dataset, specs("basic"), LocalExecutor())
    t2 = t.set_column(t.column_names.index("text"), "text", pa.array(["a", "b", "c", "d"]))
    t2 = t2.set_column(0, "uid", pa.array(["0" * 32, "1" * 32, "X" * 32, "3" * 32]))
    pq.write_table(t2, p)
    with pytest.raises(InputFileError, match=r"row 2: uid 'XXXX"):
        run_filters(tmp_dataset, specs("basic"), LocalExecutor())
    pq.write_table(t.drop_columns(["original_width"]), p)
    with pytest.raises(InputFileError, match="no column 'original_width'"):
        run_filters(tmp_dataset, specs("basic"), LocalExecutor())


@pytest.mark.slow
@pytest.mark.shared_data
def test_ingested_real_pool_basic_equals_datacomp(spark, shared_data, tmp_path):
    """Real web alt-text + COCO (with image sizes) through ingest, then the basic filter; the
    subset equals DataComp's basic_filter expressions evaluated row by row on the samples."""
    import math

    from curate.filters.langid import load_model
    from curate.ingest.job import IngestConfig, run_ingest
    from curate.engine.spark import SparkExecutor
    from curate.sql import query
    from curate.tables import Dataset

    alt = shared_data / "alttext"
    out = tmp_path / "pool"
    run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(alt / "web_alttext_10k.parquet"), str(alt / "coco_val2017_captions.json")],
                                   output=str(out), rows_per_shard=12_000))
    ds = Dataset(out)
    r = run_filters(ds, specs("basic"), LocalExecutor())
    n = ds.count("samples")
    assert r["counts"]["samples"] == n and sum(r["counts"]["filters"]["basic"].values()) == n
    samples = ds.read("samples", columns=["uid", "text", "original_width", "original_height"]).to_pylist()
    model = load_model()
    expect = []
    for s in samples:
        w, h = s["original_width"], s["original_height"]
        lang = model.predict(s["text"].replace("\n", " "))[0][0].split("__label__")[1]
        size_ok = w is not None and h is not None and min(w, h) >= 200 and (
            max(w, h) / min(w, h) if min(w, h) else math.inf) <= 3.0
        if lang == "en" and len(s["text"].split()) > 2 and len(s["text"]) > 5 and size_ok:
            expect.append(s["uid"])
    assert read_subset(ds, "basic") == sorted(expect)
    # Web alt-text has no sizes: missing_size; COCO rows are English photos with sizes.
    reasons = r["counts"]["filters"]["basic"]
    assert reasons["missing_size"] > 1000 and reasons["not_english"] > 100 and reasons["kept"] > 20_000
    lang = query(out, "SELECT language, count(*) AS n FROM text_stats GROUP BY 1 ORDER BY 2 DESC LIMIT 1").to_pylist()
    assert lang[0]["language"] == "en"


def test_jobs_entry_point(pool):
    """jobs/filter.py (the spark-submit script) is `curate filter`."""
    import subprocess
    import sys
    from pathlib import Path

    repo = Path(__file__).resolve().parents[2]
    p = subprocess.run([sys.executable, str(repo / "jobs" / "filter.py"), str(pool.root), "--filter", "basic",
                        "--engine", "local", "--name", "job"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert "kept" in p.stderr and (pool.root / "subsets" / "job" / "uids.npy").exists()
    p = subprocess.run([sys.executable, str(repo / "jobs" / "filter.py"), str(pool.root), "--filter", "nope",
                        "--engine", "local"], capture_output=True, text=True, timeout=300)
    assert p.returncode == 2 and "unknown filter 'nope'" in p.stderr


def test_a_filter_that_keeps_nothing_says_so(tmp_dataset, writers):
    write_samples, _ = writers
    write_samples(tmp_dataset, ["a dog running on the beach"] * 4, [None] * 4, [None] * 4)  # sizes unknown
    r = run_filters(tmp_dataset, specs("basic"), LocalExecutor())
    warnings = r["guards"]["warnings"]
    assert any("4 of the 4 samples its caption rules kept have no image size" in w and "curate download" in w
               for w in warnings)
    assert any(w.startswith("basic kept none of the 4 samples (missing_size 4)") for w in warnings)
    # most of a pool removed by the caption rules first: the share is of those that reached the size
    # check (it was of the whole pool, so it was not said at all, or said with another count)
    write_samples(tmp_dataset, ["a dog running on the beach"] * 2 + ["x"] * 6, [None] * 8, [None] * 8)
    warnings = run_filters(tmp_dataset, specs("basic"), LocalExecutor())["guards"]["warnings"]
    assert any("basic: 2 of the 2 samples its caption rules kept have no image size" in w for w in warnings), warnings
