"""Names a user types or reads: SQL views of tables whose names meet on one view name, the
command a report says made a subset, and the error classes `--retry-class` takes."""

from __future__ import annotations

import subprocess
import sys

import pyarrow as pa

from curate.download.error_classes import ERROR_CLASSES, classify_error
from curate.report.collect import MADE_BY
from curate.sql.connection import connect
from curate.sql.views import view_names
from curate.tables import Dataset


def test_tables_that_meet_on_one_view_name_each_keep_a_view(tmp_path):
    ds = Dataset(tmp_path / "ds")
    ds.write_table("decisions/basic+clip_score", pa.table({"uid": ["a", "b"]}))
    ds.write_table("decisions/basic_clip_score", pa.table({"uid": ["c"]}))
    names = view_names(ds.tables())
    assert names["decisions/basic_clip_score"] == "decisions_basic_clip_score"
    other = names["decisions/basic+clip_score"]
    assert other.startswith("decisions_basic_clip_score_") and len(other) == len("decisions_basic_clip_score") + 7
    con = connect(ds)
    assert con.execute("SELECT count(*) FROM decisions_basic_clip_score").fetchone() == (1,)
    assert con.execute(f"SELECT count(*) FROM {other}").fetchone() == (2,)
    # a name never changes when another table comes or goes
    assert view_names(["decisions/basic+clip_score"])["decisions/basic+clip_score"] == "decisions_basic_clip_score"
    assert view_names(sorted(names, reverse=True)) == names


def test_a_report_names_commands_that_exist():
    import click
    from typer.main import get_command

    from curate.cli import _load_commands, app

    _load_commands()  # every command module registers itself (the CLI loads only what argv names)
    cli = get_command(app)
    for stage, made_by in MADE_BY.items():
        words = made_by.split(" (")[0].split()[1:]
        cmd = cli
        for w in (w for w in words if not w.startswith("-")):
            cmd = cmd.get_command(click.Context(cmd), w)
            assert cmd is not None, (stage, made_by)  # the report names a command curate does not have


def test_retry_class_takes_only_error_classes(tmp_path):
    assert classify_error("no match at all") in ERROR_CLASSES and "not_downloaded" in ERROR_CLASSES
    r = subprocess.run([sys.executable, "-m", "curate.cli", "download", str(tmp_path / "ds"), "--retry-failed",
                        "--retry-class", "http404"], capture_output=True, text=True, check=False)
    assert r.returncode == 2 and "'http404' is not an error class" in r.stderr and "http_404" in r.stderr
    assert r.stderr.strip().count("\n") == 0, r.stderr


def test_the_funnel_starts_a_recipe_from_its_input_subset_and_shows_no_negative_removal(tmp_path):
    from curate.engine import LocalExecutor
    from curate.report.build import _funnel_view
    from curate.report.collect import _funnel

    ds = Dataset(tmp_path / "ds")
    ds.write_table("other", pa.table({"uid": ["a"]}))  # no samples or downloads: the steps are the lineage's
    lineage = {"input": "subset:few", "input_count": 5,
               "stages": [{"name": "c", "kind": "cluster", "output_count": 4, "input_count": 5,
                           "reasons": {"kept": 4, "no_embedding": 1}}]}
    steps = _funnel(LocalExecutor(), ds, "out", lineage, None, 4)
    assert [(s["name"], s["count"]) for s in steps] == [("recipe input (subset:few)", 5), ("c (cluster)", 4)]
    rows = _funnel_view(steps)["rows"]
    assert [r["removed"] for r in rows] == [None, 1]
    grown = _funnel_view([{"name": "downloaded", "count": 280, "reasons": {}},
                          {"name": "subset s (select_sql)", "count": 300, "reasons": {}}])["rows"]
    assert grown[1]["removed"] is None  # repeats or never-downloaded uids: nothing was removed
