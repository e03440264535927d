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


@pytest.mark.parametrize("engine", ["local", pytest.param("spark", marks=pytest.mark.extended)])
def test_a_stage_s_decisions_are_checked_and_restaged_by_the_engine(engine, request):
    """``check_stage_decisions``: counts per reason and kept from one aggregate, which also finds
    rows whose ``kept`` disagrees with their reason (a null flag is false); ``with_stage`` names
    the stage on every row without a pass through Python."""
    from curate.engine import LocalExecutor
    from curate.errors import DatasetError
    from curate.recipe.stage_run import check_stage_decisions, with_stage
    from curate.recipe.uid_tables import UidTable
    from curate.selection import DECISIONS

    ex = LocalExecutor()
    if engine == "spark":
        from curate.engine.spark import SparkExecutor

        ex = SparkExecutor(request.getfixturevalue("spark"))

    def frame(rows):
        t = pa.table({"uid": [f"{i:032x}" for i in range(len(rows))], "stage": ["job"] * len(rows),
                      "kept": [k for k, _ in rows], "reason": [r for _, r in rows],
                      "value": pa.nulls(len(rows), pa.float64()), "detail": pa.nulls(len(rows), pa.string())})
        nullable = pa.schema([f.with_nullable(True) for f in DECISIONS])  # as a stage's own table may be
        return with_stage(ex.frame_from_table(t.select(DECISIONS.names).cast(nullable)), "mine")

    inp = UidTable("unused", rows=5, distinct=5)
    good = frame([(True, "kept"), (True, "kept"), (False, "low"), (False, "low"), (False, "dup")])
    assert check_stage_decisions(good, inp, "s") == ({"dup": 1, "kept": 2, "low": 2}, 2)
    assert set(good.collect_small(5).column("stage").to_pylist()) == {"mine"}
    assert good.schema.names == DECISIONS.names
    for bad in ([(True, "kept")] * 4 + [(True, "low")], [(True, "kept")] * 4 + [(None, "kept")],
                [(True, "kept")] * 4 + [(False, "kept")]):
        with pytest.raises(DatasetError, match="reason must be 'kept' exactly where kept is true"):
            check_stage_decisions(frame(bad), inp, "s")
    with pytest.raises(DatasetError, match="returned 4 decision rows for 5 distinct"):
        check_stage_decisions(frame([(True, "kept")] * 4), inp, "s")


def test_a_cached_cluster_stage_runs_again_when_its_clustering_was_overwritten(tmp_path):
    """k = 3, then k = 2, then k = 3 again under the same clustering name: the third run's
    cluster stage hits its first run's cache entry, whose clusters/<name> the second run
    overwrote; it runs again rather than hand the later stages the k = 2 clustering."""
    ds = make_downloaded_pool(tmp_path / "pool")
    recipe = "name: kk\ndataset: {ds}\nembedding_model: toy\nstages:\n  - kind: cluster\n    k: {k}\n" \
             "  - kind: semdedup\n    eps: 0.3\n"
    runs = []
    for k in (3, 2, 3):
        p = tmp_path / f"r{k}.yaml"
        p.write_text(recipe.format(ds=ds.root, k=k))
        lineage = run_recipe(load_recipe(p), engine="local", quiet=True)
        name = lineage["stages"][0]["stats"]["writes"][0]  # clusters/<name>
        ids = pc.unique(ds.read(name, columns=["cluster_id"]).column("cluster_id")).to_pylist()
        runs.append((len(ids), [s["cached"] for s in lineage["stages"]], read_subset(ds, "kk")))
    assert [n for n, _, _ in runs] == [3, 2, 3]
    # the clustering made again; semdedup's k = 3 entry too: the k = 2 run rewrote its
    # decisions/recipe-kk-semdedup, which a hit would leave holding the k = 2 decisions
    assert runs[2][1] == [False, False]
    assert runs[2][2] == runs[0][2]
    again = run_recipe(load_recipe(tmp_path / "r3.yaml"), engine="local", quiet=True)
    assert [s["cached"] for s in again["stages"]] == [True, True]


def test_a_sql_stage_whose_query_returns_malformed_uids_is_an_error_not_a_silent_removal(tmp_path):
    """As `curate select --sql`: an uppercased uid matches no sample; the stage names the first
    and counts them instead of removing every input row with exit 0."""
    from curate.errors import CurateError

    ds = make_downloaded_pool(tmp_path / "pool")
    for query, ok in (("SELECT upper(uid) AS uid FROM input_subset", False), ("SELECT 1 AS uid", False),
                      ("SELECT uid FROM input_subset", True)):
        p = tmp_path / "q.yaml"
        p.write_text(f"name: q\ndataset: {ds.root}\nstages:\n  - kind: sql\n    query: \"{query}\"\n")
        if ok:
            lineage = run_recipe(load_recipe(p), engine="local", quiet=True)
            assert lineage["stages"][0]["output_count"] == lineage["input_count"]
            continue
        with pytest.raises(CurateError, match="is not a 32-char lowercase hex uid"):
            run_recipe(load_recipe(p), engine="local", quiet=True, use_cache=False)
