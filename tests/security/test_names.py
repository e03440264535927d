"""Names that become paths: every user-given run, subset, clustering and model name, and every
output path next to a dataset, is checked by one validator (curate/names.py) before any work
starts; a bad one is a one-line error (exit 2) and the dataset is left byte for byte as it was."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pyarrow as pa
import pytest

from curate.cli import main
from curate.errors import CurateError
from curate.names import InvalidNameError, check_name, check_output_path
from curate.tables import Dataset

UIDS = ["ab" * 16, "cd" * 16]


@pytest.fixture
def ds(tmp_path) -> Dataset:
    d = Dataset(tmp_path / "ds")
    d.write_table("samples", pa.table({"uid": UIDS, "url": ["http://x/1.jpg", "http://x/2.jpg"],
                                       "text": ["a cat", "a dog"]}))
    return d


def snapshot(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "_curate.lock"}


def run_cli(capsys, argv: list[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err


BAD_NAMES = ["../samples", "/tmp/curate-escape", "..", "a/b", "a\\b", ".hidden", "_runs", "", "x" * 200,
             "samples", "Subsets", "name with space", "ok..ok", "-rf", "a\nb"]


@pytest.mark.parametrize("bad", BAD_NAMES)
def test_select_refuses_every_unsafe_name_before_writing(ds, capsys, tmp_path, bad):
    before = snapshot(ds.root)
    rc, err = run_cli(capsys, ["select", str(ds.root), "--sql", "SELECT uid FROM samples", "--name", bad])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("curate: error: --name "), err
    assert snapshot(ds.root) == before  # samples untouched, nothing written anywhere in the dataset
    assert not (tmp_path / "curate-escape").exists() and not Path("/tmp/curate-escape").exists()


def test_select_into_samples_no_longer_corrupts_the_pool(ds, capsys):
    """The attack from the report: the subset landed in samples/ and the next query counted it."""
    run_cli(capsys, ["select", str(ds.root), "--sql", "SELECT uid FROM samples", "--name", "../samples"])
    assert ds.count("samples") == 2
    assert [p.name for p in ds.shards("samples")] == ["part-00000.parquet"]
    assert not (ds.root / "samples" / "uids.parquet").exists()


D = "{ds}"
# (argv with {ds}; the option that carries the bad name). Every command whose option becomes a
# path: run names, subset outputs, clustering names, embeddings model ids, recipe outputs.
COMMANDS = [
    (["select", D, "--sql", "SELECT uid FROM samples", "--name", "{bad}"], "--name"),
    (["select", D, "--sql", "SELECT uid FROM samples", "--name", "ok", "--embedding-model", "{bad}"], "--embedding-model"),
    (["select", D, "--from-file", "{ds}/x.npy", "--name", "{bad}"], "--name"),
    (["filter", D, "--filter", "basic", "--name", "{bad}"], "--name"),
    (["cluster", D, "--k", "2", "--name", "{bad}"], "--name"),
    (["cluster", D, "--k", "2", "--embeddings", "{bad}"], "--embeddings"),
    (["dedup", "semantic", D, "--eps", "0.1", "--name", "{bad}"], "--name"),
    (["dedup", "semantic", D, "--eps", "0.1", "--output", "{bad}"], "--output"),
    (["dedup", "semantic", D, "--eps", "0.1", "--clusters", "{bad}"], "--clusters"),
    (["dedup", "exact", D, "--name", "{bad}"], "--name"),
    (["dedup", "near", D, "--name", "{bad}"], "--name"),
    (["dedup", "near", D, "--embeddings", "{bad}"], "--embeddings"),
    (["prune", "dbp", D, "--keep-fraction", "0.5", "--name", "{bad}"], "--name"),
    (["prune", "ssp", D, "--keep-fraction", "0.5", "--output", "{bad}"], "--output"),
    (["decontaminate", D, "--eval", "x", "--name", "{bad}"], "--name"),
    (["decontaminate", D, "--eval", "x", "--embeddings", "{bad}"], "--embeddings"),
    (["metadata", "balance", D, "--name", "{bad}"], "--name"),
    (["run", "recipes/demo.yaml", "--dataset", D, "--output", "{bad}"], "--output"),
    (["run", "recipes/demo.yaml", "--dataset", D, "--embedding-model", "{bad}"], "--embedding-model"),
    (["report", D, "--subset", "{bad}"], "--subset"),
    (["reshard", D, "--subset", "{bad}"], "--subset"),
]


@pytest.mark.parametrize("argv,option", COMMANDS, ids=[f"{i}-{c[0][0]}-{c[1]}" for i, c in enumerate(COMMANDS)])
@pytest.mark.parametrize("bad", ["../samples", "/tmp/curate-escape"])
def test_every_name_option_is_checked_before_spark_starts(ds, capsys, argv, option, bad):
    before = snapshot(ds.root)
    rc, err = run_cli(capsys, [a.format(ds=ds.root, bad=bad) for a in argv])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"curate: error: {option} {bad!r}"), err
    assert "Spark UI" not in capsys.readouterr().out + err  # refused while parsing, no JVM started
    assert snapshot(ds.root) == before


@pytest.mark.parametrize("argv,option", [
    (["reshard", D, "--subset", "ok", "--output", "{ds}/samples"], "--output"),
    (["reshard", D, "--subset", "ok", "--output", "{ds}/subsets/ok"], "--output"),
    (["reshard", D, "--subset", "ok", "--output", "{ds}"], "--output"),
    (["reshard", D, "--subset", "ok", "--output", "{ds}/.."], "--output"),
    (["reshard", D, "--subset", "ok", "--output", "{ds}/_runs/x"], "--output"),
    (["report", D, "--subset", "ok", "--out", "{ds}/samples/part-00001.parquet"], "--out"),
    (["sql", D, "SELECT * FROM samples", "--out", "{ds}/samples/part-00001.parquet"], "--out"),
    (["sql", D, "SELECT * FROM samples", "--out", "{ds}/subsets/ok/uids.parquet"], "--out"),
    (["metadata", "build", "{ds}/samples/metadata.json", "--dataset", D], "OUTPUT"),
])
def test_output_paths_never_land_on_the_datasets_tables(ds, capsys, argv, option):
    before = snapshot(ds.root)
    rc, err = run_cli(capsys, [a.format(ds=ds.root) for a in argv])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"curate: error: {option} "), err
    assert snapshot(ds.root) == before


def test_output_paths_outside_the_tables_are_fine(ds, tmp_path):
    assert check_output_path(ds.root / "webdataset" / "ok", ds.root) == ds.root / "webdataset" / "ok"
    assert check_output_path(ds.root / "reports" / "ok.html", ds.root) == ds.root / "reports" / "ok.html"
    assert check_output_path(tmp_path / "elsewhere", ds.root) == tmp_path / "elsewhere"


def test_sql_out_beside_the_dataset_still_writes(ds, capsys, tmp_path):
    with pytest.raises(SystemExit) as info:
        main(["sql", str(ds.root), "SELECT uid FROM samples ORDER BY uid", "--out", str(tmp_path / "r.csv")])
    assert info.value.code in (0, None)
    assert (tmp_path / "r.csv").read_text().splitlines() == ['"uid"', *[f'"{u}"' for u in UIDS]]


@pytest.mark.parametrize("good", ["kmeans", "basic+clip_score", "ViT-B-32__laion2b_s34b_b79k", "recipe-demo-text-basic",
                                  "curate-tiny__random-seed0", "v1.2", "A_b-C"])
def test_ordinary_names_pass(good):
    assert check_name(good, "--name") == good


def test_library_writers_refuse_unsafe_names_too(ds):
    """The same validator guards the library calls recipes and jobs use, not only the CLI."""
    from curate.decisions import decisions_table, write_decisions
    from curate.subset import read_subset, write_subset

    with pytest.raises(InvalidNameError):
        write_subset(ds, "../samples", UIDS)
    with pytest.raises(InvalidNameError):
        read_subset(ds, "../../etc")
    with pytest.raises(InvalidNameError):
        write_decisions(ds, "../samples", decisions_table(UIDS, "x", [True, False], ["kept", "dropped"]))
    for bad in ("../samples", "/etc", "a/../../b"):
        with pytest.raises(CurateError):
            ds.table_dir(bad)
    assert ds.count("samples") == 2


def test_recipe_stage_names_are_checked_with_file_and_line(ds, tmp_path, capsys):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: r\ndataset: {ds.root}\ninput: all\nstages:\n"
                      f"  - kind: sql\n    name: ../../escape\n    query: SELECT uid FROM samples\n")
    rc, err = run_cli(capsys, ["run", str(recipe)])
    assert rc == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"{recipe}:6:" in lines[0] and "stage name '../../escape'" in lines[0], err
    assert not (tmp_path / "escape").exists()
