"""Recipe validation (errors name the line), stage execution, lineage and the per-stage cache."""

from __future__ import annotations

import json
import textwrap

import pyarrow.compute as pc
import pytest

from curate.decisions import KEPT
from curate.recipe import RecipeError, load_recipe, run_recipe
from curate.subset import read_subset, read_subset_manifest

RECIPE = """\
name: toy
dataset: {ds}
embedding_model: toy-model
input: downloaded
output: curated
stages:
  - kind: sql
    name: no-spam
    query: SELECT uid FROM samples WHERE text NOT LIKE 'spam%'
    reason: spam
  - kind: sql
    name: clip
    query: SELECT uid, clip_score AS value FROM embeddings WHERE clip_score > {threshold}
    reason: low_clip_score
  - kind: sample
    fraction: 0.5
    seed: 7
"""


def write(tmp_path, text, name="r.yaml"):
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def test_run_counts_lineage_and_subset(pool, tmp_path):
    path = write(tmp_path, RECIPE.format(ds=pool.root, threshold=-0.2))
    lineage = run_recipe(load_recipe(path), engine="local", quiet=True)
    samples = pool.read("samples")
    downloads = pool.read("downloads")
    emb = pool.read("embeddings/toy-model")
    ok = set(downloads.filter(pc.equal(downloads["status"], "success"))["uid"].to_pylist())
    spam = {u for u, t in zip(samples["uid"].to_pylist(), samples["text"].to_pylist()) if t.startswith("spam")}
    high = {u for u, s in zip(emb["uid"].to_pylist(), emb["clip_score"].to_pylist()) if s > -0.2}
    expected_after_clip = (ok - spam) & high

    assert lineage["input_count"] == len(ok)
    st = {s["name"]: s for s in lineage["stages"]}
    assert st["no-spam"]["reasons"] == {KEPT: len(ok - spam), "spam": len(ok & spam)}
    assert st["clip"]["input_count"] == len(ok - spam)
    assert st["clip"]["output_count"] == len(expected_after_clip)
    assert st["sample"]["output_count"] == round(len(expected_after_clip) * 0.5)
    for s in lineage["stages"]:  # counts add up at every stage
        assert sum(s["reasons"].values()) == s["input_count"]
        assert s["reasons"].get(KEPT, 0) == s["output_count"]
        assert s["line"] > 0 and not s["cached"]

    final = read_subset(pool, "curated")
    assert final == sorted(final) and len(final) == lineage["output_count"]
    assert set(final) <= expected_after_clip
    assert read_subset(pool.root / "subsets" / "curated" / "uids.npy") == final
    assert read_subset_manifest(pool, "curated")["lineage"]["output_hash"] == lineage["output_hash"]
    dec = pool.read("decisions/toy", schema="decisions")
    assert dec.num_rows == sum(s["input_count"] for s in lineage["stages"])
    # the clip stage stores the score as the decision value of kept rows
    clip_rows = dec.filter(pc.and_(pc.equal(dec["stage"], "clip"), dec["kept"]))
    scores = dict(zip(emb["uid"].to_pylist(), emb["clip_score"].to_pylist()))
    for u, v in zip(clip_rows["uid"].to_pylist()[:20], clip_rows["value"].to_pylist()[:20]):
        assert v == pytest.approx(scores[u], abs=1e-6)
    m = json.loads((pool.root / "_runs" / "recipe-toy.json").read_text())
    assert m["lineage"]["stages"][0]["name"] == "no-spam" and "recipe_text" in m
    assert set(m["timings_s"]) >= {"no-spam", "clip", "sample", "total"}


def test_cache_recomputes_only_changed_steps(pool, tmp_path):
    path = write(tmp_path, RECIPE.format(ds=pool.root, threshold=-0.2))
    first = run_recipe(load_recipe(path), engine="local", quiet=True)
    again = run_recipe(load_recipe(path), engine="local", quiet=True)
    assert [s["cached"] for s in again["stages"]] == [True, True, True]
    assert again["output_hash"] == first["output_hash"]

    # change the second step: the first stays cached, the second and third recompute
    path = write(tmp_path, RECIPE.format(ds=pool.root, threshold=0.1))
    changed = run_recipe(load_recipe(path), engine="local", quiet=True)
    assert [s["cached"] for s in changed["stages"]] == [True, False, False]
    assert changed["stages"][1]["output_count"] < first["stages"][1]["output_count"]

    # a change that leaves a step's output identical keeps the later steps cached
    path = write(tmp_path, RECIPE.format(ds=pool.root, threshold=0.1).replace(
        "WHERE clip_score > 0.1", "WHERE clip_score > 0.1 AND uid IS NOT NULL"))
    same_out = run_recipe(load_recipe(path), engine="local", quiet=True)
    assert [s["cached"] for s in same_out["stages"]] == [True, False, True]
    assert same_out["output_hash"] == changed["output_hash"]

    # --no-cache recomputes all and gives the same result
    fresh = run_recipe(load_recipe(path), engine="local", quiet=True, use_cache=False)
    assert not any(s["cached"] for s in fresh["stages"]) and fresh["output_hash"] == changed["output_hash"]


def test_cache_tracks_table_content(pool, tmp_path):
    path = write(tmp_path, RECIPE.format(ds=pool.root, threshold=-0.2))
    run_recipe(load_recipe(path), engine="local", quiet=True)
    emb = pool.read("embeddings/toy-model")
    scores = pc.multiply(emb["clip_score"], -1.0).cast("float32")
    pool.write_table("embeddings/toy-model", emb.set_column(3, "clip_score", scores), schema="embeddings")
    again = run_recipe(load_recipe(path), engine="local", quiet=True)
    assert [s["cached"] for s in again["stages"]][:2] == [True, False]


@pytest.mark.parametrize("text,line,needle", [
    ("name: x\ndataset: d\nstages:\n  - kind: sql\n    query: SELECT 1\n  - kind: nope\n", 6, "unknown stage kind 'nope'"),
    ("name: x\ndataset: d\nstages:\n  - kind: sample\n    seed: 1\n    fracton: 0.5\n", 6, "stages.0.fracton"),
    ("name: x\ndataset: d\nstages:\n  - kind: sample\n    fraction: 2.5\n", 5, "stages.0.fraction"),
    ("name: x\ndataset: d\nstages:\n  - kind: sample\n    count: 3\n    fraction: 0.1\n", 4, "exactly one"),
    ("name: x\ndataset: d\ninput: everything\nstages: []\n", 3, "input"),
    ("name: x\ndataset: d\nstages:\n  - kind: sql\n    query: [a\n", 6, "invalid YAML"),
    ("name: x\ndataset: d\nstages:\n  - kind: sql\n    query: SELECT 1\n  - kind: sql\n    query: SELECT 2\n", 6, "used twice"),
    ("name: x\ndataset: d\nstages:\n  - query: SELECT 1\n", 4, "needs a 'kind'"),
    ("name: x\ndataset: d\nstagez: []\n", 3, "stagez"),
])
def test_validation_errors_point_at_the_line(tmp_path, text, line, needle):
    p = write(tmp_path, text)
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert f"{p}:{line}:" in str(e.value)
    assert needle in str(e.value)


def test_relative_dataset_and_input_subset(pool, tmp_path):
    from curate.subset import write_subset

    some = pool.read("samples", columns=["uid"])["uid"].to_pylist()[:30]
    write_subset(pool, "start", some)
    rdir = pool.root.parent / "recipes"
    rdir.mkdir()
    p = write(rdir, "name: rel\ndataset: ../pool\ninput: subset:start\nstages:\n  - kind: sample\n    count: 10\n")
    lineage = run_recipe(load_recipe(p), engine="local", quiet=True)
    assert lineage["input_count"] == 30 and lineage["output_count"] == 10
    assert set(read_subset(pool, "rel")) <= set(some)


@pytest.mark.parametrize("dataset,want", [
    ("pool", "s3://b/recipes/pool"), ("./pool/", "s3://b/recipes/pool"), ("../pools/a", "s3://b/pools/a"),
    ("..", "s3://b"), ("gs://other/ds", "gs://other/ds"),
    ("../../ds", None), ("/abs/ds", None), ("~/ds", None)])
def test_a_recipe_on_a_store_finds_a_relative_dataset_beside_it(dataset, want):
    loaded = load_recipe("s3://b/recipes/r.yaml", text=f"name: r\ndataset: {dataset}\nstages: []\n")
    if want:
        assert loaded.dataset_path() == want
    else:
        with pytest.raises(RecipeError, match=r"^s3://b/recipes/r.yaml:2: dataset .* is not a folder beside the"):
            loaded.dataset_path()


def test_bad_query_names_the_stage(pool, tmp_path):
    p = write(tmp_path, f"name: bad\ndataset: {pool.root}\nstages:\n  - kind: sql\n    query: SELECT uid FROM nosuchtable\n")
    from curate.errors import CurateError

    with pytest.raises(CurateError, match=rf"{p}:4: stage 'sql': .*nosuchtable"):
        run_recipe(load_recipe(p), engine="local", quiet=True)


def test_a_stage_with_nothing_left_is_not_run(pool, tmp_path):
    p = write(tmp_path, f"name: empty\ndataset: {pool.root}\ninput: all\nstages:\n"
                        "  - kind: sql\n    query: SELECT uid FROM samples WHERE false\n"
                        "  - kind: sample\n    count: 3\n")
    lin = run_recipe(load_recipe(p), engine="local", quiet=True)
    assert [s["output_count"] for s in lin["stages"]] == [0, 0]
    assert lin["stages"][1]["reasons"] == {} and lin["output_count"] == 0
    assert read_subset(pool, "empty") == []


def test_converted_stages_bring_no_rows_and_the_legacy_adapter_is_bounded(pool, tmp_path, monkeypatch):
    """sql runs in DuckDB, `sample` in the engine; their decisions are checked by the engine and
    no row of them reaches the driver. A stage still on the legacy array interface (none ships;
    one registered here) brings its input to the driver, counted and bounded."""
    import curate.recipe.stage_run as stage_run
    from curate.decisions import decisions_table
    from curate.engine import LocalExecutor
    from curate.recipe import registry
    from curate.recipe.registry import Params, StageResult, get_kind, register

    path = write(tmp_path, RECIPE.format(ds=pool.root, threshold=-0.2))
    ex = LocalExecutor()
    lineage = run_recipe(load_recipe(path), engine="local", quiet=True, executor=ex, use_cache=False)
    sample = {s["name"]: s for s in lineage["stages"]}["sample"]
    assert "legacy_stage_decisions" not in ex.driver_counter.by_call
    assert ex.driver_counter.by_call["collect_small"] < sample["input_count"] // 2, ex.driver_counter.by_call

    class KeepParams(Params):
        pass

    def keep(ctx, uids, p):
        import pyarrow.compute as pc

        d = pc.unique(uids)
        return StageResult(decisions_table(d, ctx.stage_name, [True] * len(d), [KEPT] * len(d)))

    get_kind("sample")  # the shipped stages first
    register("test_legacy_keep", KeepParams, family="test")(keep)
    try:
        legacy = write(tmp_path, f"name: leg\ndataset: {pool.root}\ninput: all\nstages:\n  - kind: test_legacy_keep\n",
                       name="leg.yaml")
        ex = LocalExecutor()
        lin = run_recipe(load_recipe(legacy), engine="local", quiet=True, executor=ex, use_cache=False)
        assert ex.driver_counter.by_call["legacy_stage_decisions"] == lin["stages"][0]["input_count"]
        monkeypatch.setattr(stage_run, "LEGACY_MAX_ROWS", lin["stages"][0]["input_count"] - 1)  # a smaller bound
        with pytest.raises(RecipeError, match="stage 'test_legacy_keep'.*still takes its input on the driver"):
            run_recipe(load_recipe(legacy), engine="local", quiet=True, use_cache=False)
    finally:
        registry._REGISTRY.pop("test_legacy_keep", None)


def test_upsampled_input_keeps_its_repeats(pool, tmp_path):
    from curate.subset import write_subset

    uids = pool.read("samples")["uid"].to_pylist()
    write_subset(pool, "up", uids[:30] + uids[:10])  # ten uids twice
    path = write(tmp_path, f"""\
        name: upr
        dataset: {pool.root}
        input: subset:up
        stages:
          - kind: sql
            query: SELECT uid FROM input_subset WHERE uid NOT IN (SELECT uid FROM input_subset ORDER BY uid LIMIT 3)
            reason: first_three
        """)
    lineage = run_recipe(load_recipe(path), engine="local", quiet=True)
    st = lineage["stages"][0]
    assert st["input_count"] == 40 and st["reasons"] == {KEPT: 27, "first_three": 3}
    out = read_subset(pool, "upr")
    first3 = set(sorted(set(uids[:30]))[:3])
    assert out == sorted(u for u in uids[:30] + uids[:10] if u not in first3)
    assert lineage["output_count"] == len(out) and lineage["output_distinct"] == 27
    assert (st["input_distinct"], st["output_distinct"]) == (30, 27) and lineage["input_distinct"] == 30
    # the report's funnel counts distinct samples, as the stage's reasons do: its removals add up
    from curate.engine import LocalExecutor
    from curate.report.build import _funnel_view
    from curate.report.collect import _funnel

    rows = _funnel_view(_funnel(LocalExecutor(), pool, "upr", lineage, None, len(out)))["rows"]
    steps = {r["name"]: r for r in rows}
    assert steps["recipe input (subset:up), 40 rows with repeats"]["count"] == 30
    sql = steps["sql (sql)"]
    assert sql["count"] == 27 and sql["removed"] == 3 == dict(sql["reasons"])["first_three"]


def test_renamed_stage_hits_the_cache_under_its_new_name(pool, tmp_path):
    text = RECIPE.format(ds=pool.root, threshold=-0.2)
    run_recipe(load_recipe(write(tmp_path, text)), engine="local", quiet=True)
    lineage = run_recipe(load_recipe(write(tmp_path, text.replace("name: clip\n", "name: clip2\n"))),
                         engine="local", quiet=True)
    st = {s["name"]: s for s in lineage["stages"]}
    assert st["clip2"]["cached"]  # the key is the work, not the name
    dec = pool.read("decisions/toy")
    assert set(dec["stage"].to_pylist()) == {"no-spam", "clip2", "sample"}


def test_a_stage_that_removes_every_sample_is_said(pool, tmp_path, capsys):
    path = write(tmp_path, f"""\
        name: none
        dataset: {pool.root}
        input: all
        stages:
          - kind: sql
            query: SELECT uid FROM input_subset WHERE false
            reason: nothing
        """)
    lineage = run_recipe(load_recipe(path), engine="local")
    st = lineage["stages"][0]
    assert st["output_count"] == 0 and st["warnings"][0].startswith("removed every one of its")
    said = capsys.readouterr()
    assert "warning: removed every one of its 200 input samples" in said.out + said.err


def test_missing_tables_fail_before_the_first_stage_naming_the_line(pool, tmp_path):
    """A stage reading a table the dataset lacks (and no earlier stage makes) fails before any
    stage runs, even when an earlier stage would remove everything; a cluster stage's clustering
    and a scorer stage's embeddings count as made."""
    from curate.recipe.preflight import check_dataset_inputs

    emptying = "  - kind: sql\n    query: SELECT uid FROM samples WHERE false\n"
    p = write(tmp_path, f"name: m\ndataset: {pool.root}\nembedding_model: nope\ninput: all\nstages:\n"
                        f"{emptying}  - kind: clip_score\n    threshold: 0.1\n")
    with pytest.raises(RecipeError, match=rf"{p}:8: stage 'clip_score' reads embeddings/nope, which is not in "
                                          r".*set embedding_model to one of the dataset's: toy-model"):
        run_recipe(load_recipe(p), engine="local", quiet=True)
    assert not pool.has_table("decisions/recipe-m-sql")  # nothing ran
    p = write(tmp_path, f"name: m\ndataset: {pool.root}\nembedding_model: toy-model\ninput: all\nstages:\n"
                        "  - kind: semdedup\n    clusters: c9\n    eps: 0.1\n")
    with pytest.raises(RecipeError, match=r":6: stage 'semdedup' reads clusters/c9, .*add a cluster stage before it"):
        check_dataset_inputs(load_recipe(p), pool)
    ok = write(tmp_path, f"name: m\ndataset: {pool.root}\nembedding_model: toy-model\ninput: all\nstages:\n"
                         "  - kind: cluster\n    k: 2\n  - kind: semdedup\n    eps: 0.1\n")
    check_dataset_inputs(load_recipe(ok), pool)  # the cluster stage makes clusters/recipe-m
    scorer = write(tmp_path, f"name: m\ndataset: {pool.root}\nembedding_model: dfn\ninput: all\nstages:\n"
                             "  - kind: scorer\n    name: dfn\n    seed_set: trusted/\n  - kind: clip_score\n"
                             "    fraction: 0.5\n")
    check_dataset_inputs(load_recipe(scorer), pool)
    sub = write(tmp_path, f"name: m\ndataset: {pool.root}\ninput: subset:gone\nstages: []\n")
    with pytest.raises(RecipeError, match=r":3: input 'subset:gone' needs subsets/gone, which is not in .*subsets here: none"):
        check_dataset_inputs(load_recipe(sub), pool)


def test_check_lists_the_stages_and_checks_the_dataset_when_there(pool, tmp_path):
    from curate.cli import main

    p = write(tmp_path, f"name: m\ndataset: {pool.root}\nembedding_model: nope\ninput: all\nstages:\n"
                        "  - kind: clip_score\n    threshold: 0.1\n")
    with pytest.raises(SystemExit) as e:
        main(["run", str(p), "--check"])
    assert e.value.code == 2
    with pytest.raises(SystemExit) as e:
        main(["run", str(p), "--check", "--embedding-model", "toy-model"])
    assert e.value.code == 0
    gone = write(tmp_path, f"name: m\ndataset: {tmp_path / 'later'}\nstages:\n  - kind: sample\n    count: 3\n")
    with pytest.raises(SystemExit) as e:
        main(["run", str(gone), "--check"])
    assert e.value.code == 0


def test_a_recipe_without_a_dataset_takes_the_command_s(pool, tmp_path, capsys):
    """`dataset:` may be left to `curate run --dataset` (the docs' example); without either,
    one line says so."""
    from curate.cli import main

    p = write(tmp_path, "name: nods\ninput: all\nstages:\n  - kind: sample\n    count: 3\n")
    for args, code in ((["--check"], 0), (["--engine", "local"], 2),
                       (["--engine", "local", "--dataset", str(pool.root), "-o", "three"], 0)):
        with pytest.raises(SystemExit) as e:
            main(["run", str(p), *args])
        assert e.value.code == code
    assert "no dataset: set 'dataset:' in the recipe or run it with --dataset DATASET" in capsys.readouterr().err
    assert len(read_subset(pool, "three")) == 3


def test_a_stage_s_relative_file_is_found_in_the_dataset_then_beside_the_recipe_then_here(pool, tmp_path,
                                                                                         monkeypatch):
    from curate.recipe.registry import StageContext

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    ctx = StageContext(dataset=pool, embedding_model=None, stage_name="s", recipe_dir=str(recipes))
    monkeypatch.chdir(tmp_path)
    assert ctx.find_path("m.json") == str(tmp_path / "m.json")  # nowhere: here, for the stage's own error
    (recipes / "m.json").write_text("[]")
    assert ctx.find_path("m.json") == str(recipes / "m.json")
    (pool.root / "m.json").write_text("[]")
    assert ctx.find_path("m.json") == str(pool.root / "m.json")
    assert ctx.find_path(str(tmp_path / "x.json")) == str(tmp_path / "x.json")
    assert ctx.find_path("s3://b/m.json") == "s3://b/m.json"


SAMPLE_ONLY = "name: {name}\ndataset: {ds}\ninput: downloaded\nstages:\n  - kind: sample\n    fraction: 0.5\n    seed: {seed}\n"


def test_a_renamed_recipe_writes_its_own_tables_instead_of_taking_the_other_s_cache_entry(pool, tmp_path):
    """A stage's tables are named after the recipe (decisions/recipe-<recipe>-<stage>, a
    clustering): a hit made under another recipe's name left this one's tables unwritten, and a
    later stage reading them failed."""
    run_recipe(load_recipe(write(tmp_path, SAMPLE_ONLY.format(name="a", ds=pool.root, seed=7))),
               engine="local", quiet=True)
    b = run_recipe(load_recipe(write(tmp_path, SAMPLE_ONLY.format(name="b", ds=pool.root, seed=7))),
                   engine="local", quiet=True)
    assert [s["cached"] for s in b["stages"]] == [False]
    assert pool.read("decisions/recipe-b-sample").equals(pool.read("decisions/recipe-a-sample"))


def test_a_cached_stage_whose_table_a_later_run_rewrote_runs_again(pool, tmp_path):
    """seed 7, seed 8, seed 7 under one recipe name: the third run's entry is the first's, but
    the second rewrote decisions/recipe-r-sample; a hit would leave it holding seed 8's draw."""
    tables = []
    for seed in (7, 8, 7):
        lineage = run_recipe(load_recipe(write(tmp_path, SAMPLE_ONLY.format(name="r", ds=pool.root, seed=seed))),
                             engine="local", quiet=True)
        tables.append((lineage["stages"][0]["cached"], pool.read("decisions/recipe-r-sample")))
    assert [c for c, _ in tables] == [False, False, False]
    assert tables[2][1].equals(tables[0][1]) and not tables[1][1].equals(tables[0][1])
    again = run_recipe(load_recipe(tmp_path / "r.yaml"), engine="local", quiet=True)
    assert again["stages"][0]["cached"]  # nothing rewrote it since: the hit stands


def test_a_sql_stage_over_a_union_view_runs_again_when_a_member_table_changes(pool, tmp_path):
    """``decisions`` (and ``subsets``, ``embeddings`` without a model) are unions of a folder's
    tables; a rerun of one filter changes what they hold, so the stage's key covers them all."""
    import pyarrow as pa

    from curate.sql.select import tables_in_query

    uids = pool.read("downloads")["uid"].to_pylist()

    def decisions(n_removed: int) -> pa.Table:
        kept = [i >= n_removed for i in range(len(uids))]
        return pa.table({"uid": uids, "stage": ["f"] * len(uids), "kept": kept,
                         "reason": ["kept" if k else "low" for k in kept], "value": pa.nulls(len(uids), pa.float64()),
                         "detail": pa.nulls(len(uids), pa.string())})

    pool.write_table("decisions/f2", decisions(10), schema="decisions")
    pool.write_table("decisions/other", decisions(0), schema="decisions")
    assert tables_in_query("SELECT uid FROM decisions WHERE _table = 'f2'", pool, None) == \
        ["decisions/f2", "decisions/other"]
    assert tables_in_query("SELECT uid FROM embeddings", pool, None) == ["embeddings/toy-model"]
    assert tables_in_query("SELECT uid FROM embeddings", pool, "toy-model") == ["embeddings/toy-model"]
    text = (f"name: u\ndataset: {pool.root}\ninput: downloaded\nstages:\n  - kind: sql\n    mode: remove\n"
            "    query: SELECT uid FROM decisions WHERE _table = 'f2' AND NOT kept\n")
    first = run_recipe(load_recipe(write(tmp_path, text)), engine="local", quiet=True)
    pool.write_table("decisions/f2", decisions(30), schema="decisions")
    second = run_recipe(load_recipe(write(tmp_path, text)), engine="local", quiet=True)
    dl = pool.read("downloads")
    ok = {u for u, st in zip(dl["uid"].to_pylist(), dl["status"].to_pylist()) if st == "success"}
    assert first["stages"][0]["output_count"] == len(ok - set(uids[:10]))
    assert not second["stages"][0]["cached"] and second["stages"][0]["output_count"] == len(ok - set(uids[:30]))


@pytest.mark.parametrize("text, line, needle", [
    ("name: d\nstages:\n  - kind: sample\n    count: 3\nstages:\n  - kind: sample\n    count: 4\n", 5,
     "key 'stages' is given twice (first at line 2)"),
    ("name: d\nstages:\n  - kind: sample\n    count: 3\n    count: 4\n", 5, "key 'count' is given twice (first at line 4)"),
    ("name: samples\nstages: []\n", 1, "recipe name 'samples' is the name of a dataset table"),
    ("name: a..b\nstages: []\n", 1, "recipe name 'a..b' contains '..'"),
    ("name: a\ninput: subset:../samples\nstages: []\n", 2, "input subset '../samples' contains a path separator"),
    (f"name: {'b' * 129}\nstages: []\n", 1, "is longer than 128 characters"),
    (f"name: {'b' * 110}\nstages:\n  - kind: sample\n    name: {'s' * 20}\n    count: 3\n", 4,
     "table name (recipe-<recipe>-<stage>) 'recipe-bbb"),
])
def test_duplicate_keys_and_names_that_make_no_table_fail_at_load_naming_the_line(tmp_path, text, line, needle):
    """YAML keeps the last of two equal keys in silence (a stages list was lost); a recipe name
    is checked as a subset name is (it names subsets/<name>), and its stages' table names fit."""
    p = write(tmp_path, text)
    with pytest.raises(RecipeError) as e:
        load_recipe(p)
    assert str(e.value).startswith(f"{p}:{line}:") and needle in str(e.value) and "\n" not in str(e.value)


def test_a_stage_s_missing_file_fails_before_the_first_stage_naming_the_line(pool, tmp_path):
    """Even when an earlier stage would remove everything (the stage then never runs to say it)."""
    emptying = "  - kind: sql\n    query: SELECT uid FROM samples WHERE false\n"
    for stage in ("  - kind: decontaminate\n    eval: nosuch_eval_dir\n",
                  "  - kind: text_based\n    synsets: nosuch.txt\n",
                  "  - kind: metaclip_balance\n    metadata: nosuch.json\n"):
        p = write(tmp_path, f"name: m\ndataset: {pool.root}\nembedding_model: toy-model\ninput: all\nstages:\n"
                            f"{emptying}{stage}")
        with pytest.raises(RecipeError, match=rf"^{p}:8: stage '\w+': .*nosuch\S* does not exist"):
            run_recipe(load_recipe(p), engine="local", quiet=True)
    assert not pool.has_table("decisions/recipe-m-sql")  # nothing ran


def test_a_stage_s_file_is_found_beside_the_recipe_for_the_filters_too(pool, tmp_path, monkeypatch):
    """text_based's synsets (and image_based's target/centroids) were opened as written, relative
    to where curate runs, while every other stage's files are found in the dataset or beside
    the recipe."""
    from curate.recipe.registry import StageContext, get_kind

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    (recipes / "syn.txt").write_text("n02084071\n")
    monkeypatch.chdir(tmp_path)
    kind = get_kind("text_based")
    ctx = StageContext(dataset=pool, embedding_model=None, stage_name="t", recipe_dir=str(recipes))
    assert kind.files(kind.params.model_validate({"synsets": "syn.txt"}), ctx) == [str(recipes / "syn.txt")]
    p = write(recipes, f"name: m\ndataset: {pool.root}\ninput: all\nstages:\n  - kind: text_based\n"
                       "    synsets: syn.txt\n")
    from curate.recipe.preflight import check_dataset_inputs

    check_dataset_inputs(load_recipe(p), pool)  # found beside the recipe: no error


def test_the_basic_filter_stage_reads_no_embeddings(pool):
    """basic decides on captions and sizes: the recipe's model is no input of it (a missing
    model was blamed on its line, and a re-embed invalidated its cache)."""
    from curate.recipe.registry import get_kind, tables_read

    kind = get_kind("basic")
    assert not [t for t in tables_read(kind, kind.params.model_validate({}), pool, "dfn") if t.startswith("embeddings")]
    clip = get_kind("clip_score")
    assert "embeddings/dfn" in tables_read(clip, clip.params.model_validate({"threshold": 0.1}), pool, "dfn")


def test_a_run_into_a_missing_dataset_names_the_recipe_line(tmp_path, capsys):
    from curate.cli import main

    p = write(tmp_path, f"name: m\ndataset: {tmp_path / 'nods'}\nstages:\n  - kind: sample\n    count: 3\n")
    with pytest.raises(SystemExit) as e:
        main(["run", str(p), "--engine", "local"])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and err == [f"curate: error: {p}:2: dataset folder {tmp_path / 'nods'} does not exist"]
    assert not (tmp_path / "nods").exists()


def test_a_sql_stage_s_query_that_does_not_parse_fails_before_the_first_stage(pool, tmp_path):
    """A typo failed only when the stage ran, after the stages before it; a table name the query
    uses is not checked then (an earlier stage may make it)."""
    from curate.recipe.preflight import check_dataset_inputs

    emptying = "  - kind: sql\n    query: SELECT uid FROM samples WHERE false\n"
    for query, said in (("SELEC uid FROM samples", "SQL error"),
                        ("SELECT 1 AS uid; SELECT 2 AS uid", "one statement at a time"),
                        ("DELETE FROM samples", "read-only")):
        p = write(tmp_path, f"name: m\ndataset: {pool.root}\ninput: all\nstages:\n{emptying}  - kind: sql\n"
                            f"    name: typo\n    query: \"{query}\"\n")
        with pytest.raises(RecipeError, match=rf"^{p}:7: stage 'typo': .*{said}"):
            run_recipe(load_recipe(p), engine="local", quiet=True)
        assert not pool.has_table("decisions/recipe-m-sql")  # nothing ran
    later = write(tmp_path, f"name: m\ndataset: {pool.root}\ninput: all\nstages:\n  - kind: sql\n"
                            "    query: SELECT uid FROM decisions_recipe_m_basic WHERE kept\n")
    check_dataset_inputs(load_recipe(later), pool)  # parsed, not bound: the table may come from a stage
