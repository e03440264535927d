"""User data printed through rich (captions, column names, table and run names, paths, log
lines) is printed as it is: `[/b]` does not crash, `[red]` and `:smile:` are not interpreted."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curate.cli import main
from curate.tables import Dataset

HOSTILE = ["a [/b] cat", "[red]red[/red] dog", "[bold]x", ":smile: [link=http://x]y[/link]", "[/]"]


@pytest.fixture
def ds(tmp_path) -> Dataset:
    d = Dataset(tmp_path / "pool [/b] [red]x")  # the path itself is printed in titles and messages
    uids = [f"{i:032x}" for i in range(len(HOSTILE))]
    d.write_table("samples", pa.table({"uid": uids, "url": [f"http://x/{i}.jpg" for i in range(len(HOSTILE))],
                                       "text": HOSTILE}))
    d.write_table("rejects", pa.table({"reason": ["[/b]bad"], "source_file": ["[red]f.csv"]}))
    d.write_table("decisions/[run]", pa.table({"uid": uids[:1], "stage": ["[/i]"], "kept": [False],
                                               "reason": ["[red]why"]}))
    return d


def run(capsys, argv) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as e:
        code = e.code or 0
    out = capsys.readouterr()
    return code, out.out, out.err


def test_sql_prints_captions_and_column_names_as_text(ds, capsys):
    code, out, err = run(capsys, ["sql", str(ds.root), 'SELECT text AS "[bold]caption[/bold]" FROM samples ORDER BY uid'])
    assert code == 0, err
    assert "[bold]caption[/bold]" in out
    for text in HOSTILE:
        assert text in out


def test_stats_prints_table_names_reasons_and_path_as_text(ds, capsys):
    code, out, err = run(capsys, ["stats", str(ds.root)])
    assert code == 0, err
    for text in ["[/b]bad", "[red]why", "[/i]", "[run]"]:
        assert text in out
    assert "[red]x" in out  # the dataset path in the title


def test_log_lines_print_data_as_text(capsys):
    from curate.progress import info

    info("kept [/b] of [red]x[/red] :smile:")
    assert "kept [/b] of [red]x[/red] :smile:" in capsys.readouterr().err


def test_error_messages_print_data_as_text(ds, capsys):
    code, out, err = run(capsys, ["sql", str(ds.root) + "[/b]", "SELECT 1"])
    assert code == 2
    assert err.splitlines() == [f"curate: error: dataset folder {ds.root}[/b] does not exist"]
