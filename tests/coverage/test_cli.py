"""`curate coverage` through the real CLI: the summary it prints, the table in `curate sql`,
and bad input rejected with one line (exit 2) before any engine starts."""

from __future__ import annotations

import json
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from curate.cli import main
from curate.subset import write_subset

from .conftest import uid_of, write_pool
from .test_counts import CONCEPTS, SUBSET_A, TEXTS


def run(argv) -> int:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code or 0


@pytest.fixture
def cli_pool(tmp_path):
    ds = write_pool(tmp_path / "pool", TEXTS * 3, shards=2)
    u = uid_of(ds)
    write_subset(ds, "a", [u[i] for i in SUBSET_A])
    (tmp_path / "animals.txt").write_text(CONCEPTS)
    return ds, tmp_path / "animals.txt"


def test_command_prints_summary_and_table_is_queryable(cli_pool, capsys):
    ds, concepts = cli_pool
    assert run(["coverage", str(ds.root), "--concepts", str(concepts), "--subset", "a",
                "--min-pool-count", "2", "--engine", "local"]) == 0
    out = capsys.readouterr().out
    assert "coverage animals: 5 concepts" in out and "-> coverage/animals" in out
    assert "caption: pool 30 samples, 4 concepts seen" in out
    assert "subset a: 5 samples, 3 concepts seen, 1 lost" in out
    assert "most starved (pool count >= 2): hot dog (3 -> 0, drop +1.00), dog (12 -> 1, drop +0.50)" in out
    result = ds.root.parent / "q.parquet"
    assert run(["sql", str(ds.root), "--out", str(result),
                "SELECT concept, pool_count, count FROM coverage_animals WHERE subset = 'a' "
                "ORDER BY relative_drop DESC NULLS LAST, concept_id LIMIT 2"]) == 0
    rows = pq.read_table(result).to_pylist()
    assert rows == [{"concept": "hot dog", "pool_count": 3, "count": 0}, {"concept": "dog", "pool_count": 12, "count": 1}]


_PROBE = r"""
import contextlib, io, json, sys
from curate.cli import main
out = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    code = None
    with contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as e:
            code = e.code
    out.append({"code": code, "err": err.getvalue(), "pyspark": "pyspark" in sys.modules})
print(json.dumps(out))
"""


def test_bad_input_fails_in_one_line_before_spark(cli_pool, tmp_path):
    ds, concepts = cli_pool
    root = str(ds.root)
    bad = tmp_path / "bad.txt"
    bad.write_text("dog\ncat\nbird, small\n")
    cases = {
        "bad line": (["coverage", root, "--concepts", str(bad)], f"{bad}:3: concept 'bird, small' holds ,"),
        "no source": (["coverage", root], "give exactly one concept source"),
        "two sources": (["coverage", root, "--concepts", str(concepts), "--eval", str(tmp_path)],
                        "give exactly one concept source"),
        "no dataset": (["coverage", str(tmp_path / "nope"), "--concepts", str(concepts)], "does not exist"),
        "no subset": (["coverage", root, "--concepts", str(concepts), "--subset", "zz"], "subset 'zz' not found"),
        "threshold alone": (["coverage", root, "--concepts", str(concepts), "--threshold", "0.3"],
                            "needs both --embeddings and --threshold"),
        "no embeddings": (["coverage", root, "--concepts", str(concepts), "--embeddings", "curate-tiny",
                           "--threshold", "0.3"], "table embeddings/curate-tiny not found"),
        "pool": (["coverage", root, "--concepts", str(concepts), "--pool", "downloaded"], "no downloads table"),
        "accuracy": (["coverage", root, "--concepts", str(concepts), "--subset", "a", "--accuracy",
                      f"b={concepts}"], "subset 'b' is not one of the --subset names"),
    }
    argvs = [[*a, "--engine", "spark"] for a, _ in cases.values()]
    res = subprocess.run([sys.executable, "-c", _PROBE, json.dumps(argvs)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    for (label, (_, words)), r in zip(cases.items(), json.loads(res.stdout.strip().splitlines()[-1])):
        lines = [ln for ln in r["err"].splitlines() if ln.strip() and not ln.startswith("WARNING:")]
        assert r["code"] == 2, (label, r)
        assert len(lines) == 1 and lines[0].startswith("curate: error: ") and words in lines[0], (label, r["err"])
        assert not r["pyspark"], label
    assert not ds.table_dir("coverage").exists()  # nothing written for a failed start
