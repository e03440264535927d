"""What a job says when its input or options cannot do what was asked (session 26's audits):
an empty evaluation folder before any engine or model starts, a SQL table named as its folder,
a balancing t below 1 or a tail proportion of 0, and the removal guard naming the options of
the stage that removed most of its input."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pyarrow as pa
import pytest

from curate.errors import CurateError
from curate.tables import Dataset


def test_an_empty_evaluation_folder_is_refused_before_the_engine_starts(tmp_path, monkeypatch):
    from curate.embedding_space.jobs import decontaminate as job

    sys.path.insert(0, str(Path(__file__).parents[1] / "report"))
    from toypool import make_downloaded_pool

    ds = make_downloaded_pool(tmp_path / "pool")
    (tmp_path / "eval" / "cats").mkdir(parents=True)
    (tmp_path / "eval" / "cats" / "notes.txt").write_text("no image here")

    def no_model(*_a, **_k):
        raise AssertionError("the model was resolved before the folder was checked")

    monkeypatch.setattr(job, "_eval_model_ref", no_model)
    with pytest.raises(CurateError, match="no images .* under .*eval"):
        job.check_decontaminate(ds, "toy", str(tmp_path / "eval"), 0.9)
    # a missing folder given by its absolute path is said as missing (it was "table name ... must be
    # a relative path inside the dataset")
    with pytest.raises(CurateError) as e:
        job.check_decontaminate(ds, "toy", str(tmp_path / "nonexistent_eval"), 0.9)
    assert str(e.value).startswith(f"--eval {tmp_path / 'nonexistent_eval'}: neither an image folder")
    with pytest.raises(CurateError, match="neither an image folder"):
        job.check_decontaminate(ds, "toy", "../elsewhere", 0.9)


def test_decontaminate_says_a_missing_eval_path_before_the_missing_embeddings(tmp_path, capsys):
    """On a dataset not yet embedded, a typo in --eval was said only after `curate embed` had run."""
    from curate.cli import main

    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", pa.table({"uid": ["a"]}))
    with pytest.raises(SystemExit) as e:
        main(["decontaminate", str(ds.root), "--eval", str(tmp_path / "evl"), "--engine", "local"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and f"--eval {tmp_path / 'evl'}: neither an image folder" in err, err
    (tmp_path / "evl").mkdir()
    with pytest.raises(SystemExit) as e:
        main(["decontaminate", str(ds.root), "--eval", str(tmp_path / "evl"), "--engine", "local"])
    assert e.value.code == 2 and "no embeddings table" in capsys.readouterr().err


def test_filter_says_a_missing_named_file_before_the_missing_embeddings(tmp_path):
    """image_based's target was looked for only once an embeddings table was there."""
    from curate.filters.checks import check_filters
    from curate.filters.stages import parse_filter

    sys.path.insert(0, str(Path(__file__).parents[1] / "report"))
    from toypool import make_downloaded_pool

    ds = make_downloaded_pool(tmp_path / "pool")
    shutil.rmtree(ds.root / "embeddings")  # not embedded yet
    for spec, said in ((f"image_based:target={tmp_path / 'tgt.npy'}", "image_based target does not exist"),
                       (f"image_based:target={tmp_path},centroids={tmp_path / 'c.npy'}",
                        "image_based centroids does not exist"),
                       (f"text_based:synsets={tmp_path / 's.txt'}", "synset list not found")):
        with pytest.raises(CurateError, match=said):
            check_filters(ds, [parse_filter(spec)])
    with pytest.raises(CurateError, match="needs CLIP embeddings"):  # once the named files are there
        check_filters(ds, [parse_filter(f"image_based:target={tmp_path}")])


def test_a_table_named_as_its_folder_in_sql_gets_its_view_name(tmp_path):
    from curate.sql.connection import query

    ds = Dataset(tmp_path / "ds")
    ds.write_table("subsets/bh", pa.table({"uid": ["a"]}))
    assert query(ds, "SELECT count(*) AS n FROM subsets_bh").column("n").to_pylist() == [1]
    with pytest.raises(CurateError, match="a table's view is named subsets_bh"):
        query(ds, 'SELECT count(*) FROM "subsets/bh"')


def test_balancing_prints_a_fractional_t_and_refuses_a_tail_proportion_of_zero():
    from curate.commands.metadata import _t_text
    from curate.params import parse_params
    from curate.params.metaclip import MetadataBalanceParams

    assert (_t_text(20000.0), _t_text(0.5), _t_text(1e-4), _t_text(0.0)) == ("20,000", "0.5", "0.0001", "0")
    with pytest.raises(CurateError, match="tail_proportion"):
        parse_params(MetadataBalanceParams, {"tail_proportion": 0})
    assert parse_params(MetadataBalanceParams, {"tail_proportion": 1}).tail_proportion == 1


def test_the_removal_guard_names_the_stages_own_options():
    from curate.embedding_space.guards import removal_warning

    assert removal_warning("perceptual_dedup", 43, 42)[0].endswith("check --radius and --hash")
    assert removal_warning("semdedup", 10, 9)[0].endswith("check the threshold and the embeddings")
    assert removal_warning("dbp", 10, 4) == []


def test_stats_and_sql_refuse_a_folder_that_is_not_a_dataset(tmp_path, capsys):
    """`curate stats docs` listed nothing with exit 0; a folder of several datasets listed their
    tables as its own; a file was said not to exist."""
    from curate.cli import main

    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("x")
    (tmp_path / "note.txt").write_text("x")
    many = tmp_path / "many"
    Dataset(many / "one").write_table("samples", pa.table({"uid": ["ab" * 16]}))
    for argv, said in ((["stats", str(tmp_path / "docs")], "is not a curate dataset"),
                       (["sql", str(tmp_path / "docs"), "SELECT 1"], "is not a curate dataset"),
                       (["stats", str(many)], "is not a curate dataset"),
                       (["stats", str(tmp_path / "note.txt")], "is a file, not a dataset folder")):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(err) == 1 and said in err[0], (argv, err)
    with pytest.raises(SystemExit) as info:
        main(["stats", str(many / "one")])
    assert info.value.code in (0, None)


def test_sql_says_what_it_does_with_no_rows_two_statements_and_a_negative_limit(tmp_path, capsys):
    """LIMIT 0 printed nothing at all; two statements showed the last one's rows only; --limit -1
    printed "... 2 more rows" for a 1-row result."""
    from curate.cli import main

    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", pa.table({"uid": ["ab" * 16], "text": ["a cat"]}))
    with pytest.raises(SystemExit) as info:
        main(["sql", str(ds.root), "SELECT uid, text FROM samples LIMIT 0"])
    assert info.value.code in (0, None) and capsys.readouterr().out.strip() == "(no rows)"
    for argv, said in (([str(ds.root), "SELECT 1 AS a; SELECT 2 AS b"], "one statement at a time (2 given"),
                       ([str(ds.root), "SELECT uid FROM samples", "--limit", "-1"], "--limit")):
        with pytest.raises(SystemExit) as info:
            main(["sql", *argv])
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(err) == 1 and said in err[0], (argv, err)


@pytest.mark.parametrize("argv, said", [
    (["filter"], "Missing argument 'DATASET'. (see `curate filter --help`)"),
    (["filter", "ds", "--filtre", "basic"], "No such option: --filtre (Possible options: --filter)"),
    (["filtr"], "No such command 'filtr'. Did you mean 'filter'?"),
    (["reshard", "ds", "mine"], "Got unexpected extra argument(s) (mine)"),
])
def test_a_usage_error_is_one_line_too(argv, said):
    """click's usage errors were a five-line box; every other error is one line."""
    import subprocess

    r = subprocess.run([sys.executable, "-m", "curate.cli", *argv], capture_output=True, text=True, check=False)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("curate: error: ") and said in lines[0]
    nothing = subprocess.run([sys.executable, "-m", "curate.cli"], capture_output=True, text=True, check=False)
    assert nothing.returncode == 2 and "Usage: curate" in nothing.stdout  # no arguments: the help, as before


def test_an_end_of_file_anywhere_is_a_line_not_a_silent_exit(tmp_path, monkeypatch, capsys):
    """click turns an EOFError raised by any command into a bare Abort (a blank line, exit 1):
    the CLI says what it was."""
    from curate.cli import main
    import curate.stats

    Dataset(tmp_path / "ds").write_table("samples", pa.table({"uid": ["ab" * 16]}))

    def cut_short(ds):
        raise EOFError("Ran out of input")

    monkeypatch.setattr(curate.stats, "table_rows", cut_short)
    with pytest.raises(SystemExit) as info:
        main(["stats", str(tmp_path / "ds")])
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert info.value.code == 2 and err == ["curate: error: unexpected end of a file or input (EOFError: Ran out of input)"]


def test_a_failed_first_ingest_leaves_no_dataset_folder_behind(tmp_path, capsys):
    """The folder it made held only _curate.lock; a folder that was there before stays."""
    from curate.cli import main

    src = tmp_path / "src"
    src.mkdir()
    (src / "README.md").write_text("no pool here")
    for out, existed in ((tmp_path / "new" / "ds", False), (tmp_path / "mine", True)):
        if existed:
            out.mkdir()
        with pytest.raises(SystemExit) as info:
            main(["ingest", str(src), "-o", str(out), "--engine", "local"])
        assert info.value.code == 2 and "no readable input files" in capsys.readouterr().err
        assert out.exists() == existed
    assert (tmp_path / "new").is_dir()  # only the folder the dataset was to be made in
