"""The CLI imports only what the command it runs needs (issue 16: a small `curate filter` was
slower than DataComp's script as a process mostly from start-up imports)."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow as pa

from curate.tables import Dataset
from curate.uid import derive_uid

# (pandas is not here: pyarrow.dataset, which pq.read_table uses, imports it)
HEAVY = ("torch", "open_clip", "pyspark", "matplotlib", "duckdb", "sklearn", "faiss", "jinja2", "img2dataset",
         "webdataset", "PIL")

PROBE = """
import atexit, json, sys
atexit.register(lambda: print("MODULES " + json.dumps(sorted(sys.modules)), file=sys.stderr))
from curate.cli import main
main({argv!r})
"""


def loaded_modules(*argv: str) -> tuple[int, set[str]]:
    r = subprocess.run([sys.executable, "-c", PROBE.format(argv=list(argv))], capture_output=True, text=True,
                       timeout=300)
    line = [x for x in r.stderr.splitlines() if x.startswith("MODULES ")][-1]
    return r.returncode, set(json.loads(line[len("MODULES "):]))


def test_every_command_is_found_without_importing_the_modules():
    from curate import cli

    found = cli._command_modules()
    cli._load_commands()
    registered = {c.name for c in cli.app.registered_commands} | {g.name for g in cli.app.registered_groups}
    assert set(found) == registered
    assert found["stats"] == ["sql"] and found["stages"] == ["run"] and found["models"] == ["embed"]
    assert cli._modules_for(["-v", "filter", "ds/"]) == ["filter"]
    assert cli._modules_for(["--help"]) is None and cli._modules_for(["no-such-command"]) is None


def test_the_top_level_help_lists_every_command_in_its_panel_in_workflow_order():
    """It listed them as the modules were registered (cluster, coverage, decontaminate, demo, ...,
    the groups last): every command has one panel, and the help shows them in that order."""
    import re

    from typer.testing import CliRunner

    from curate import cli

    placed = [n for names in cli.HELP_PANELS.values() for n in names]
    assert sorted(placed) == sorted(cli._command_modules()) and len(placed) == len(set(placed))
    cli._load_commands()
    # COLUMNS only: typer reads TERMINAL_WIDTH once, at import, and 200 then held for every later test
    r = CliRunner().invoke(cli.app, ["--help"], env={"COLUMNS": "200"})
    assert r.exit_code == 0, r.output
    listed = [m.group(1) for m in re.finditer(r"^│ ([a-z]+) {2,}", r.output, re.MULTILINE)]
    assert listed == placed, listed
    panels = [m.group(1).strip() for m in re.finditer(r"╭─ ([^─]+)─", r.output)]
    assert panels == ["Options", *cli.HELP_PANELS], panels


def test_filter_imports_no_other_command_and_nothing_heavy(tmp_path):
    n = 50
    urls = [f"http://127.0.0.1/{i}.jpg" for i in range(n)]
    texts = [f"a photo of a small dog number {i}" for i in range(n)]
    Dataset(tmp_path / "ds").write_table("samples", pa.table({
        "uid": [derive_uid(u, t) for u, t in zip(urls, texts)], "url": urls, "text": texts,
        "source_file": ["pool.parquet"] * n, "source_row": pa.array(range(n), pa.int64()),
        "original_width": pa.array([300] * n, pa.int32()), "original_height": pa.array([300] * n, pa.int32()),
        "extra": pa.nulls(n, pa.string())}).sort_by("uid"), schema="samples")
    code, mods = loaded_modules("filter", str(tmp_path / "ds"), "-f", "basic", "--engine", "auto")
    assert code == 0
    assert (tmp_path / "ds" / "subsets" / "basic" / "uids.parquet").exists()
    assert not [m for m in HEAVY if m in mods]
    others = {m for m in mods if m.startswith("curate.commands.") and not m.startswith("curate.commands._")}
    assert others == {"curate.commands.filter"}  # no other command module (sql: duckdb, ingest: readers, ...)

    code, mods = loaded_modules("--help")
    assert code == 0 and {"curate.commands.sql", "curate.commands.ingest", "curate.commands.filter"} <= mods


def test_two_commands_in_one_process(tmp_path, capsys):
    """In-process callers (tests, notebooks, jobs/*.py) run one command after another."""
    import pytest

    from curate.cli import main

    for argv in (["filter", "--help"], ["stats", str(tmp_path)], ["stages"]):
        with pytest.raises(SystemExit) as e:
            main(argv)
        assert e.value.code in (0, None, 2)
    out = capsys.readouterr()
    assert "DataComp" in out.out and "scorer" in out.out  # filter's help, then the stage list


def test_stats_and_sql_read_the_downloads_without_importing_img2dataset(tmp_path):
    """Reading a downloaded dataset needs the shard layout (curate.download.job), not
    img2dataset: it imports torch, albumentations and wandb (4 s here), so `curate stats` took
    5.6 s instead of 1.4 s. img2dataset comes in only when a download runs."""
    n = 4
    urls = [f"http://127.0.0.1/{i}.jpg" for i in range(n)]
    uids = sorted(derive_uid(u, "t") for u in urls)
    ds = Dataset(tmp_path / "ds")
    ds.write_table("samples", pa.table({
        "uid": uids, "url": urls, "text": ["t"] * n, "source_file": ["p"] * n,
        "source_row": pa.array(range(n), pa.int64()), "original_width": pa.nulls(n, pa.int32()),
        "original_height": pa.nulls(n, pa.int32()), "extra": pa.nulls(n, pa.string())}), schema="samples")
    for argv in (["stats", str(ds.root)], ["sql", str(ds.root), "SELECT count(*) AS n FROM samples"]):
        code, mods = loaded_modules(*argv)
        assert code == 0, argv
        assert argv[0] != "stats" or "curate.download.job" in mods  # stats reads the shard layout
        assert not {"img2dataset", "torch", "webdataset", "albumentations", "wandb"} & mods, argv


def test_a_spark_session_that_cannot_start_is_one_line(tmp_path):
    """A bad master URL (found by the launcher, or by the SparkContext) or setting: the JVM's
    reason in one line, exit 2 (a 50-230 line Java/Py4J trace before; the launcher's reason was
    dropped unless -v)."""
    src = tmp_path / "pool.csv"
    src.write_text("url,caption\nhttp://x/1,one\n")
    for extra, said in ((["--master", "foo"], ("cannot start Spark (foo): Master must either be yarn or start with "
                                               "spark, k8s, or local (SparkException)")),
                        (["--master", "spark://127.0.0.1"], ("cannot start Spark on spark://127.0.0.1: Invalid master "
                                                             "URL: spark://127.0.0.1 (SparkException)"))):
        r = subprocess.run([sys.executable, "-m", "curate.cli", "ingest", str(src), "-o", str(tmp_path / "ds"),
                            "--engine", "spark", *extra], capture_output=True, text=True, timeout=300, check=False)
        assert r.returncode == 2 and r.stderr.strip().splitlines() == [f"curate: error: {said}"], r.stderr


def test_version_prints_one_line_and_exits():
    """`curate --version` was 'No such option'; a bug report needs the version and the commit."""
    import re

    r = subprocess.run([sys.executable, "-m", "curate", "--version"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and r.stderr == "", r.stderr
    assert re.fullmatch(r"curate \d+\.\d+\.\d+\S*( \(git [0-9a-f]{12}(, modified)?\))?, Python \d+\.\d+\.\d+\n",
                        r.stdout), r.stdout
