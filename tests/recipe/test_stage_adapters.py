"""The stage families of other issues, run through the recipe: filters, clustering, SemDeDup,
near-dup, DBP pruning. Real jobs on the local engine over a small downloaded pool."""

from __future__ import annotations

import sys
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest

sys.path.insert(0, str(Path(__file__).parents[1] / "report"))
from toypool import make_downloaded_pool  # noqa: E402

from curate.recipe import RecipeError, load_recipe, run_recipe  # noqa: E402
from curate.subset import read_subset  # noqa: E402

RECIPE = """\
name: es
dataset: {ds}
embedding_model: toy
stages:
  - kind: basic
    min_side: 32
    min_words: 2
  - kind: clip_score
    fraction: {fraction}
  - kind: cluster
    k: 2
  - kind: semdedup
    eps: 0.3
  - kind: near_dedup
    threshold: 0.95
  - kind: prune
    keep_fraction: 0.8
"""


def test_filters_and_embedding_space_stages(tmp_path):
    pytest.importorskip("curate.embedding_space.jobs")
    pytest.importorskip("curate.filters.job")
    ds = make_downloaded_pool(tmp_path / "pool")
    p = tmp_path / "r.yaml"
    p.write_text(RECIPE.format(ds=ds.root, fraction=0.8))
    lin = run_recipe(load_recipe(p), engine="local", quiet=True)
    st = {s["name"]: s for s in lin["stages"]}
    assert sum(st["basic"]["reasons"].values()) == 54  # every downloaded sample decided once
    # clip_score fraction is of the stage's input: top 80% of what basic kept (DataComp's rule)
    n_in = st["clip_score"]["input_count"]
    assert st["clip_score"]["output_count"] >= int(n_in * 0.8)
    thr = st["clip_score"]["stats"]["threshold_from_fraction"]["threshold"]
    emb = ds.read("embeddings/toy")
    kept_scores = emb.filter(pc.is_in(emb["uid"], value_set=pa.array(read_subset(ds, "es"))))["clip_score"]
    assert pc.min(kept_scores).as_py() >= thr - 1e-6
    assert st["cluster"]["reasons"] == {"kept": st["clip_score"]["output_count"]}
    assert ds.has_table("clusters/recipe-es")
    assert st["semdedup"]["input_count"] == st["cluster"]["output_count"]
    assert st["prune"]["output_count"] == round(st["prune"]["input_count"] * 0.8)
    for s in lin["stages"]:
        assert sum(s["reasons"].values()) == s["input_count"]
    assert lin["output_count"] == len(read_subset(ds, "es"))

    # the report finds the run's clustering: cluster sizes before (downloaded) and after
    from curate.report import collect

    cs = collect(ds, "es")["distributions"]["cluster_sizes"]
    assert cs["table"] == "clusters/recipe-es"
    assert cs["total"]["pool"] == 54 and cs["total"]["curated"] == lin["output_count"]

    again = run_recipe(load_recipe(p), engine="local", quiet=True)
    assert all(s["cached"] for s in again["stages"])
    p.write_text(RECIPE.format(ds=ds.root, fraction=0.6))
    changed = run_recipe(load_recipe(p), engine="local", quiet=True)
    assert [s["cached"] for s in changed["stages"]] == [True, False, False, False, False, False]


def test_filter_parameter_errors_point_at_the_stage(tmp_path):
    pytest.importorskip("curate.filters.job")
    p = tmp_path / "r.yaml"
    p.write_text("name: x\ndataset: d\nstages:\n  - kind: sql\n    query: SELECT 1\n  - kind: clip_score\n    model: m\n")
    with pytest.raises(RecipeError, match=rf"{p}:6: .*exactly one of threshold"):
        load_recipe(p)
    p.write_text("name: x\ndataset: d\nstages:\n  - kind: basic\n    min_words: many\n")
    with pytest.raises(RecipeError, match=rf"{p}:5: stages.0.min_words"):
        load_recipe(p)
