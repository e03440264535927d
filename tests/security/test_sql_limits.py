"""`curate sql` runs under a time limit and a memory limit (with defaults); hitting either is
one line and exit 2, and results are streamed, never all held in memory to be printed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pyarrow as pa
import pytest

from curate.cli import main
from curate.errors import CurateError
from curate.tables import Dataset

ENDLESS = "SELECT * FROM range(10000000000) ORDER BY random()"


@pytest.fixture
def ds(tmp_path) -> Dataset:
    d = Dataset(tmp_path / "ds")
    d.write_table("samples", pa.table({"uid": ["ab" * 16], "url": ["http://x/1.jpg"], "text": ["a cat"]}))
    return d


def run(capsys, argv) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code, capsys.readouterr().err


def test_a_query_past_its_timeout_is_stopped_with_one_line(ds, capsys):
    code, err = run(capsys, ["sql", str(ds.root), ENDLESS, "--timeout", "2"])
    assert code == 2
    assert err.splitlines() == ["curate: error: SQL stopped after 2 s (--timeout 2); narrow the query or raise "
                                "--timeout (0: no limit)"]


def test_a_query_past_its_memory_limit_fails_with_one_line(ds, capsys):
    code, err = run(capsys, ["sql", str(ds.root), "SELECT list(x) FROM range(100000000) t(x)",
                             "--memory-limit", "20MB", "--timeout", "300"])
    assert code == 2
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("curate: error: SQL needs more memory than --memory-limit 20MB"), err


def test_a_bad_memory_limit_is_one_line(ds, capsys):
    code, err = run(capsys, ["sql", str(ds.root), "SELECT 1", "--memory-limit", "lots"])
    assert code == 2 and len(err.splitlines()) == 1 and "--memory-limit 'lots'" in err


def test_the_library_query_has_the_same_limits_by_default(ds):
    from curate.sql import DEFAULT_MEMORY_LIMIT, DEFAULT_TIMEOUT_S, connect, query

    assert DEFAULT_TIMEOUT_S > 0 and DEFAULT_MEMORY_LIMIT
    with pytest.raises(CurateError, match="stopped after 1 s"):
        query(ds.root, ENDLESS, timeout=1)
    con = connect(ds.root, memory_limit="1GB")
    assert con.execute("SELECT current_setting('memory_limit')").fetchone()[0] == "953.6 MiB"
    # spills go to a private temporary folder, not to ./.tmp in the user's working directory
    assert "curate-sql-" in con.execute("SELECT current_setting('temp_directory')").fetchone()[0]
    con.close()


def test_printing_streams_a_large_result(ds, capsys):
    """20 million rows: only --limit of them are kept to print; the rest are counted."""
    with pytest.raises(SystemExit) as info:
        main(["sql", str(ds.root), "SELECT * FROM range(20000000)", "--limit", "3"])
    assert info.value.code in (0, None)
    out = capsys.readouterr().out
    assert "... 19999997 more rows (use --limit or --out)" in out


def test_ctrl_c_stops_a_running_query_with_one_line(ds, tmp_path):
    """DuckDB holds the main thread in C++; SIGINT still stops it at once (exit 130)."""
    spill = tmp_path / "tmp"
    spill.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "curate.cli", "sql", str(ds.root),
                             "SELECT count(*) FROM (" + ENDLESS + ")", "--timeout", "0"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True, cwd=tmp_path,
                            env=dict(os.environ, TMPDIR=str(spill)))
    t0 = time.time()
    while not list(spill.glob("curate-sql-*")):  # the connection exists: the query is next
        assert proc.poll() is None and time.time() - t0 < 300, proc.communicate()
        time.sleep(0.05)
    time.sleep(2)  # into the query
    assert proc.poll() is None
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C does: the whole process group
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err.decode()[-3000:]
    assert err.decode().splitlines() == ["curate: interrupted; rerun the same command to resume"]
    assert not (tmp_path / ".tmp").exists()  # nothing spilled into the working directory


def test_result_columns_that_share_a_name_each_print_their_own_values(ds, capsys, monkeypatch):
    for width in ("200", "10"):  # a grid, and the expanded "column: value" lines of a narrow terminal
        monkeypatch.setenv("COLUMNS", width)
        with pytest.raises(SystemExit) as info:
            main(["sql", str(ds.root), "SELECT 1 AS a, 2 AS a, 'x' AS b"])
        assert info.value.code in (0, None)
        out = capsys.readouterr().out
        cells = out.split()
        assert cells.index("1") < cells.index("2") < cells.index("x"), out
        if width == "10":
            assert "a: 1" in out and "a: 2" in out and "b: x" in out, out

