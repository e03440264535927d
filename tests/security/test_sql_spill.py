"""DuckDB's spill folder: capped (``max_temp_directory_size``: a default, ``$CURATE_SQL_MAX_SPILL``
or ``--max-spill``), named after its process, and removed by the next run when a killed
process left it behind."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pyarrow as pa
import pytest

from curate.cli import main
from curate.sql import DEFAULT_MAX_SPILL, MAX_SPILL_ENV, connect, query, remove_stale_spill_dirs
from curate.sql.spill import OWNER_FILE
from curate.tables import Dataset


@pytest.fixture
def ds(tmp_path) -> Dataset:
    d = Dataset(tmp_path / "ds")
    d.write_table("samples", pa.table({"uid": ["ab" * 16], "url": ["http://x/1.jpg"], "text": ["a cat"]}))
    return d


def setting(con) -> str:
    return con.execute("SELECT current_setting('max_temp_directory_size')").fetchone()[0]


def test_the_spill_cap_is_applied(ds, monkeypatch):
    monkeypatch.delenv(MAX_SPILL_ENV, raising=False)
    assert DEFAULT_MAX_SPILL == "20GB"
    for kwargs, env, shown in [({}, None, "18.6 GiB"), ({}, "2GB", "1.8 GiB"),
                               ({"max_spill_size": "1GB"}, "2GB", "953.6 MiB")]:
        if env:
            monkeypatch.setenv(MAX_SPILL_ENV, env)
        con = connect(ds.root, **kwargs)
        try:
            assert setting(con) == shown
        finally:
            con.close()


def test_a_query_past_the_spill_cap_fails_with_one_line(ds, capsys):
    sql = "SELECT count(*) FROM (SELECT * FROM range(30000000) t(x) ORDER BY x * 7 % 1000003)"
    with pytest.raises(SystemExit) as info:
        main(["sql", str(ds.root), sql, "--memory-limit", "30MB", "--max-spill", "1MB"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and len(err.splitlines()) == 1, err
    assert err.startswith("curate: error: SQL spilled more than --max-spill allows"), err
    with pytest.raises(SystemExit) as info:
        main(["sql", str(ds.root), "SELECT 1", "--max-spill", "plenty"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.splitlines() == [err.strip()] and "--max-spill 'plenty'" in err


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def spill_folder(root, pid: int, host: str | None, tag: str):
    d = root / f"curate-sql-{pid}-{tag}"
    d.mkdir()
    (d / "duckdb_temp_block-1.block").write_bytes(b"\0" * 1024)
    if host is not None:
        (d / OWNER_FILE).write_text(host)
    return d


def test_stale_spill_folders_of_dead_processes_are_removed(tmp_path):
    host = socket.gethostname()
    live = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        stale = spill_folder(tmp_path, dead_pid(), host, "stale")
        kept = [spill_folder(tmp_path, live.pid, host, "live"),           # its process still runs
                spill_folder(tmp_path, dead_pid(), "another-host", "x"),  # another host's pid space
                spill_folder(tmp_path, dead_pid(), None, "noowner")]      # not ours to judge
        (tmp_path / "curate-sql-old1234").mkdir()                         # no pid in the name
        assert remove_stale_spill_dirs(tmp_path) == [stale]
        assert not stale.exists() and all(d.exists() for d in kept)
        assert (tmp_path / "curate-sql-old1234").exists()
    finally:
        live.kill()
        live.wait()


def test_curate_sql_removes_a_killed_runs_spill_folder_and_its_own(ds, tmp_path):
    """A run removes the folder a kill -9'd run left, and its own at exit."""
    spill_root = tmp_path / "tmp"
    spill_root.mkdir()
    stale = spill_folder(spill_root, dead_pid(), socket.gethostname(), "killed")
    proc = subprocess.run([sys.executable, "-m", "curate.cli", "sql", str(ds.root), "SELECT count(*) AS n FROM samples"],
                          capture_output=True, text=True, env=dict(os.environ, TMPDIR=str(spill_root)), timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert not stale.exists()
    assert list(spill_root.iterdir()) == []


def test_the_library_query_spills_into_a_folder_named_after_its_process(ds):
    con = connect(ds.root)
    try:
        folder = con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
    finally:
        con.close()
    assert os.path.basename(folder).startswith(f"curate-sql-{os.getpid()}-")
    assert open(os.path.join(folder, OWNER_FILE)).read() == socket.gethostname()
    assert query(ds.root, "SELECT count(*) AS n FROM samples").column("n").to_pylist() == [1]
