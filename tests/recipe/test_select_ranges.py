"""``select_sql`` through the engine: one uid range per task (curate/sql/ranges.py).

Many small ranges give the same subset bytes as one range, as Spark, and as a plain DuckDB
query of the whole result; checks and counts are summed across ranges; a query that is not
uid-local (a global top-N) keeps its meaning."""

from __future__ import annotations

import hashlib

import duckdb
import pytest

from curate.engine import LocalExecutor
from curate.errors import DatasetError
from curate.manifest import read_manifest
from curate.sql.ranges import uid_ranges
from curate.sql.select import select_sql
from curate.subset import read_subset, read_subset_manifest

QUERIES = {
    "join": "SELECT s.uid FROM samples s JOIN embeddings_toy_model e USING (uid) "
            "WHERE e.clip_score > 0 AND s.text NOT LIKE 'spam%'",
    "repeats": "SELECT uid FROM embeddings_toy_model WHERE clip_score > 0.2 UNION ALL "
               "SELECT uid FROM embeddings_toy_model WHERE clip_score > 0.4",
    # not uid-local: the 17 best scores of the whole table, whatever range a task holds
    "top": "SELECT uid FROM embeddings_toy_model ORDER BY clip_score DESC, uid LIMIT 17",
    "quantile": "SELECT uid FROM embeddings_toy_model WHERE clip_score >= "
                "(SELECT quantile_cont(clip_score, 0.8) FROM embeddings_toy_model)",
}


def _files(ds, name):
    d = ds.root / "subsets" / name
    return {f: (d / f).read_bytes() for f in ("uids.parquet", "uids.npy")}


def _reference(ds, query):
    """The whole result in one DuckDB query over the table files, sorted."""
    con = duckdb.connect()
    for t in ("samples", "embeddings/toy-model"):
        files = [str(p) for p in ds.shards(t)]
        con.execute(f"CREATE VIEW {t.replace('/', '_').replace('-', '_')} AS SELECT * FROM read_parquet({files})")
    return sorted(r[0] for r in con.execute(query).fetchall())


@pytest.mark.parametrize("query", sorted(QUERIES))
def test_many_ranges_equal_one_range_and_the_whole_query(pool, query):
    q = QUERIES[query]
    one = select_sql(pool, q, "one", range_rows=10**9)
    many = select_sql(pool, q, "many", range_rows=7)
    assert read_subset_manifest(pool, "many")["counts"] == read_subset_manifest(pool, "one")["counts"]
    assert _files(pool, "many") == _files(pool, "one")
    assert read_subset(pool, "many") == _reference(pool, q)
    assert many["count"] == one["count"] == len(_reference(pool, q)) and many["distinct"] == one["distinct"]
    assert read_manifest(pool, "select-many")["ranges"] > 1 == read_manifest(pool, "select-one")["ranges"]


def test_spark_writes_the_same_subset(pool, spark):
    from curate.engine.spark import SparkExecutor

    q = QUERIES["repeats"]
    select_sql(pool, q, "local", range_rows=9)
    select_sql(pool, q, "spark", range_rows=9, executor=SparkExecutor(spark))
    assert _files(pool, "spark") == _files(pool, "local")
    assert not (pool.root / "_tmp" / "select-spark").exists()


def test_checks_sum_over_ranges(pool):
    """Nulls counted once, unknown uids counted in every range and named smallest first, a bad
    uid named whichever range finds it."""
    strangers = sorted(hashlib.md5(str(i).encode()).hexdigest() for i in range(5))
    extra = " UNION ALL ".join(f"SELECT '{u}' AS uid" for u in strangers)
    q = f"SELECT uid FROM samples UNION ALL SELECT NULL AS uid UNION ALL SELECT NULL UNION ALL {extra}"
    with pytest.raises(DatasetError, match=f"5 uids that are not in samples \\(first: {strangers[0]}\\)"):
        select_sql(pool, q, "x", range_rows=11)
    info = select_sql(pool, q, "x", range_rows=11, allow_unknown=True)
    n = pool.count("samples")
    assert (info["returned"], info["null_uid"], info["unknown_uid"], info["selected"]) == (n + 7, 2, 5, n)
    assert read_subset(pool, "x") == sorted(pool.read("samples")["uid"].to_pylist())
    with pytest.raises(DatasetError, match="'ZZ' is not a 32-char lowercase hex uid \\(2 such rows"):
        select_sql(pool, "SELECT uid FROM samples UNION ALL SELECT 'ZZ' UNION ALL SELECT 'zz'", "y", range_rows=11)
    assert not (pool.root / "subsets" / "y").exists() and not (pool.root / "_tmp" / "select-y").exists()


def test_ranges_cover_every_string_and_follow_the_uids(pool):
    n = pool.count("samples")
    rs = uid_ranges(pool, ["samples"], range_rows=10)
    assert rs[0][0] is None and rs[-1][1] is None and len(rs) == -(-n // 10)
    assert all(a[1] == b[0] for a, b in zip(rs, rs[1:])) and all(lo < hi for lo, hi in rs[1:-1])
    # cut between the smallest and largest uid: every range holds about its share
    uids = pool.read("samples")["uid"].to_pylist()
    sizes = [sum((lo is None or u >= lo) and (hi is None or u < hi) for u in uids) for lo, hi in rs]
    assert sum(sizes) == n and max(sizes) <= 3 * 10
    assert uid_ranges(pool, ["samples"], range_rows=10**9) == [(None, None)]


def test_a_uid_local_query_takes_the_range_into_every_scan(pool):
    """What keeps a task to about one range: for a query joined on uid, DuckDB pushes the
    range given on the result into the Parquet scan of each table (row groups outside it are
    skipped by their uid statistics)."""
    from curate.sql.select import relation_sql, selection_connection

    con = selection_connection(pool)
    rel = relation_sql(con, QUERIES["join"])
    plan = con.execute(f"EXPLAIN SELECT uid FROM ({rel}) AS r WHERE uid >= '4' AND uid < '8'").fetchall()[0][1]
    flat = "".join(plan.split())
    assert flat.count("READ_PARQUET") == 2 and flat.count("uid>='4'") == 2, plan


RECIPE = """name: ranged
dataset: {root}
input: all
output: out
stages:
  - kind: sql
    name: no-spam
    query: SELECT uid FROM samples WHERE text NOT LIKE 'spam%'
    reason: spam
  - kind: sql
    name: clip
    query: SELECT uid, clip_score AS value FROM embeddings WHERE clip_score > 0
  - kind: sql
    name: above-median
    mode: remove
    query: >
      SELECT uid FROM input_subset JOIN embeddings USING (uid)
      WHERE clip_score < (SELECT median(clip_score) FROM input_subset JOIN embeddings USING (uid))
"""


def test_recipe_sql_stage_by_ranges_equals_one_range(tmp_path, monkeypatch):
    """The recipe's ``sql`` stage runs one uid range per task too: values, remove mode and a
    query relative to the stage's whole input (``input_subset``'s median) are unchanged."""
    from curate.recipe import load_recipe, run_recipe
    from curate.sql import ranges

    from .conftest import make_pool

    out = {}
    for label, rows in (("one", 10**9), ("many", 13)):
        monkeypatch.setattr(ranges, "RANGE_ROWS", rows)
        ds = make_pool(tmp_path / label)
        p = tmp_path / f"{label}.yaml"
        p.write_text(RECIPE.format(root=ds.root))
        lin = run_recipe(load_recipe(p), engine="local", quiet=True)
        out[label] = ([(s["input_count"], s["output_count"]) for s in lin["stages"]], _files(ds, "out"),
                      ds.read("decisions/ranged").sort_by([("uid", "ascending"), ("stage", "ascending")]),
                      [s["output_hash"] for s in lin["stages"]])
    assert out["many"][0] == out["one"][0] and out["one"][0][-1][1] > 0
    assert out["many"][1] == out["one"][1]
    assert out["many"][2].equals(out["one"][2]) and out["many"][3] == out["one"][3]


def test_a_task_carries_only_the_views_its_query_names(pool):
    """Each task's payload lists the shards of the tables the query can name (and samples, for
    the checks), not every table of the dataset: at a billion rows that list is megabytes."""
    seen = []

    class Recording(LocalExecutor):
        def map_tasks(self, tasks, fn, description=""):
            seen.extend(tasks)
            return super().map_tasks(tasks, fn, description)

    select_sql(pool, QUERIES["repeats"].replace("embeddings_toy_model", "EMBEDDINGS_TOY_MODEL"), "v",
               range_rows=50, executor=Recording())
    assert len(seen) > 1 and all(set(t["views"]) == {"samples", "embeddings_toy_model"} for t in seen)


@pytest.mark.parametrize("query", ["SELECT uid FROM samples ORDER BY random() LIMIT 10",
                                   "SELECT uid FROM samples USING SAMPLE 10 ROWS",
                                   "SELECT uid FROM samples WHERE uid IN (SELECT uid FROM samples TABLESAMPLE 10 ROWS)"])
def test_a_query_that_draws_at_random_runs_as_one_task_and_returns_its_whole_draw(pool, query):
    """Each range task would draw a sample of its own and keep only its range of it: 10 asked
    for, a few returned. A random draw is one task; a word in a string is not a draw."""
    from curate.sql.ranges import draws_at_random

    r = select_sql(pool, query, "rnd", range_rows=7)
    assert r["count"] == 10 and len(set(read_subset(pool, "rnd"))) == 10
    assert read_manifest(pool, "select-rnd")["ranges"] == 1
    assert not draws_at_random("SELECT uid FROM samples WHERE text NOT LIKE '%random() USING SAMPLE%'")
    select_sql(pool, "SELECT uid FROM samples WHERE text NOT LIKE '%random()%'", "word", range_rows=7)
    assert read_manifest(pool, "select-word")["ranges"] > 1
