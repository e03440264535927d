"""Guards: every embedding-space stage reports the similarity distribution it acted on and
warns (summary, run manifest, subset manifest, report) on degenerate embeddings, on removing
most of its input, and on a k too large for the pool. Degenerate embeddings come from a real
random-init open_clip model (curate-tiny); well-spread ones are synthetic and raise nothing."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from curate.cli import main
from curate.embedding_space import guards
from curate.report.build import guard_warnings
from curate.subset import read_subset_manifest
from curate.tables import Dataset

from .helpers import clustered_embeddings, write_embeddings


def _run(args, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


def _manifest(ds: Dataset, name: str) -> dict:
    return json.loads((ds.root / "_runs" / f"{name}.json").read_text())


@pytest.fixture(scope="module")
def random_init_embeddings():
    """Image embeddings of 260 varied images from a random-init curate-tiny (no weights)."""
    import torch
    from PIL import Image, ImageDraw

    from curate.models import load_model

    bundle = load_model("curate-tiny", None, seed=0)
    rng = np.random.default_rng(1)
    imgs = []
    for i in range(260):
        im = Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8))
        d = ImageDraw.Draw(im)
        d.ellipse([int(v) for v in sorted(rng.integers(0, 48, 2))] * 2, fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
        imgs.append(im)
    with torch.no_grad():
        x = bundle.model.encode_image(torch.stack([bundle.preprocess(im) for im in imgs])).float().numpy()
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _write_eval(path, x: np.ndarray) -> str:
    d = x.shape[1]
    pq.write_table(pa.table({"uid": [f"e{i}" for i in range(len(x))],
                             "image_embedding": pa.FixedSizeListArray.from_arrays(
                                 pa.array(x.astype(np.float16).reshape(-1)), d)}), path)
    return str(path)


def test_histogram_quantiles():
    h = guards.histogram(np.linspace(-1, 1, 10001))
    q = guards.quantiles(h)
    assert h.sum() == 10001 and abs(q["p50"]) < 0.01 and abs(q["p10"] + 0.8) < 0.01 and abs(q["p90"] - 0.8) < 0.01
    # summing per-task histograms is the histogram of all values
    a, b = np.random.default_rng(0).uniform(-1, 1, (2, 500))
    assert np.array_equal(guards.histogram(a) + guards.histogram(b), guards.histogram(np.r_[a, b]))


def test_random_init_model_warns_everywhere(tmp_path, capsys, random_init_embeddings):
    x = random_init_embeddings
    pool, evals = x[:220], x[220:]
    ds = Dataset(tmp_path / "d")
    write_embeddings(ds, "curate-tiny__random-seed0", pool, rows_per_shard=80)
    root = str(ds.root)
    code, out, _ = _run(["cluster", root, "-k", "20", "--engine", "local"], capsys)
    assert code == 0
    assert "warning: embeddings look degenerate" in out and "warning: k=20 is too large for 220 samples" in out
    assert "cosine to the assigned centroid (n=220)" in out
    g = _manifest(ds, "cluster-kmeans")["guards"]
    assert g["distributions"]["embeddings"]["median"] > guards.DEGENERATE_MEDIAN
    assert any("too large" in w for w in g["warnings"])
    if _manifest(ds, "cluster-kmeans")["counts"]["empty_clusters"]:
        assert any("clusters are empty" in w for w in g["warnings"])

    code, out, _ = _run(["dedup", "semantic", root, "--eps", "0.05", "--engine", "local"], capsys)
    assert code == 0 and "warning: embeddings look degenerate" in out
    assert "largest cosine to an earlier item of the same cluster" in out
    g = _manifest(ds, "semdedup")["guards"]
    assert g["distributions"]["acted_on"]["quantiles"]["p50"] > 0.9
    kept = _manifest(ds, "semdedup")["counts"]["kept"]
    assert (kept < 110) == any("semdedup removed" in w for w in g["warnings"])

    ev = _write_eval(tmp_path / "eval.parquet", evals)
    code, out, _ = _run(["decontaminate", root, "--eval", ev, "--threshold", "0.9", "--engine", "local"], capsys)
    assert code == 0
    m = _manifest(ds, "decontaminate")
    assert m["counts"]["removed"] > 110  # a random-init model makes every image a "copy"
    assert any("decontaminate removed" in w for w in m["guards"]["warnings"])
    assert "warning: decontaminate removed" in out and "cosine to the nearest evaluation image (n=220)" in out
    # the kept subset's manifest carries the guards, and the report shows them
    sub = read_subset_manifest(ds, "decontaminate")
    assert sub["guards"]["warnings"] == m["guards"]["warnings"]
    assert ("decontaminate", m["guards"]["warnings"][0]) in guard_warnings(sub)

    code, out, _ = _run(["dedup", "near", root, "--threshold", "0.99", "--engine", "local"], capsys)
    assert code == 0 and "warning: embeddings look degenerate" in out
    code, out, _ = _run(["prune", "ssp", root, "--keep-fraction", "0.3", "--engine", "local"], capsys)
    assert code == 0 and "warning: embeddings look degenerate" in out
    assert "ssp removed" not in out  # pruning to 30% is what was asked for


def test_well_spread_embeddings_raise_no_warning(tmp_path, capsys):
    ds = Dataset(tmp_path / "d")
    x = clustered_embeddings(n=900, d=32, centers=6, dup_frac=0.1, seed=3)
    write_embeddings(ds, "m", x, rows_per_shard=300)
    root = str(ds.root)
    outs = []
    for args in (["cluster", root, "-k", "6", "--name", "km"],
                 ["dedup", "semantic", root, "--eps", "0.01", "-c", "km"],
                 ["prune", "dbp", root, "--keep-fraction", "0.4", "-c", "km", "--subset", "semdedup"],
                 ["dedup", "near", root, "--threshold", "0.99"]):
        code, out, err = _run([*args, "--engine", "local"], capsys)
        assert code == 0, err
        outs.append(out)
    assert all("warning" not in o for o in outs), outs
    assert all("pairwise cosine among a random sample" in o for o in outs)
    for run in ("cluster-km", "semdedup", "dbp", "near_dedup"):
        g = _manifest(ds, run)["guards"]
        assert g["warnings"] == []
        med = g["distributions"]["embeddings"]["median"]
        assert -0.5 < med < 0.5 and g["distributions"]["embeddings"]["spread_p10_p90"] > 0.3
    ev = _write_eval(tmp_path / "eval.parquet", np.random.default_rng(9).standard_normal((30, 32)))
    code, out, _ = _run(["decontaminate", root, "--eval", ev, "--threshold", "0.9", "--engine", "local"], capsys)
    assert code == 0 and "warning" not in out and _manifest(ds, "decontaminate")["guards"]["warnings"] == []


def test_cluster_warns_on_large_k_and_empty_clusters(tmp_path, capsys):
    ds = Dataset(tmp_path / "d")
    # 8 distinct vectors, 25 copies each: k=40 gives 5 points a cluster and leaves most clusters empty
    x = np.repeat(clustered_embeddings(n=8, d=16, centers=8, dup_frac=0.0, seed=2), 25, axis=0)
    write_embeddings(ds, "m", x, rows_per_shard=200)
    code, out, _ = _run(["cluster", str(ds.root), "-k", "40", "--engine", "local"], capsys)
    assert code == 0
    c = _manifest(ds, "cluster-kmeans")["counts"]
    assert "warning: k=40 is too large for 200 samples (5.0 per cluster" in out
    assert c["empty_clusters"] >= 30 and f"warning: {c['empty_clusters']} of 40 clusters are empty" in out
    assert f"{c['empty_clusters']} of 40 clusters are empty" in _manifest(ds, "cluster-kmeans")["guards"]["warnings"]
    code, out, _ = _run(["cluster", str(ds.root), "-k", "4", "--engine", "local"], capsys)
    assert code == 0 and "too large" not in out and "clusters are empty" not in out


def test_recipe_stages_carry_warnings_to_lineage_and_report(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).parents[1] / "report"))
    from toypool import make_downloaded_pool

    from curate.recipe import load_recipe, run_recipe

    ds = make_downloaded_pool(tmp_path / "pool")
    p = tmp_path / "r.yaml"
    p.write_text(f"name: g\ndataset: {ds.root}\nembedding_model: toy\noutput: g\nstages:\n  - kind: cluster\n    k: 20\n")
    lin = run_recipe(load_recipe(p), engine="local", quiet=True)
    warns = lin["stages"][0]["stats"]["warnings"]
    assert any("k=20 is too large" in w for w in warns)
    assert any(st == "cluster" and "k=20 is too large" in w for st, w in guard_warnings(read_subset_manifest(ds, "g")))
    # the report shows them near the top, before the funnel
    from curate.report import build_report

    html = build_report(ds, "g", out=tmp_path / "r.html").read_text()
    assert "id=warnings" in html and "<b>cluster</b>: k=20 is too large" in html
    assert html.index("id=warnings") < html.index("id=funnel")
