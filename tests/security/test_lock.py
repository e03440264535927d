"""One writer per dataset: every job that writes a dataset takes its lock (curate/lock.py) before
Spark starts; a second writer gets one line naming the holder; readers need no lock."""

from __future__ import annotations

import fcntl
import json
import os
import socket
import subprocess
import sys

from pathlib import Path

import pyarrow as pa
import pytest

from curate.cli import main
from curate.lock import LOCK_FILE, DatasetLockedError, acquire, dataset_lock, release
from curate.tables import Dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clikit import ROWS_PER_SHARD, curate_cmd, kill_group, start, wait_for, write_pool  # noqa: E402

HOLDER = {"pid": 4242, "host": "elsewhere", "command": "curate ingest pool.csv -o ds",
          "started": "2026-01-02T03:04:05Z"}


@pytest.fixture
def ds(tmp_path) -> Dataset:
    d = Dataset(tmp_path / "ds")
    d.write_table("samples", pa.table({"uid": ["ab" * 16], "url": ["http://x/1.jpg"], "text": ["a cat"]}))
    return d


@pytest.fixture
def held(ds):
    """Another writer (a separate open file, as another process has) holds the lock."""
    with open(ds.root / LOCK_FILE, "w") as f:
        f.write(json.dumps(HOLDER))
        f.flush()
        fcntl.flock(f, fcntl.LOCK_EX)
        yield ds
        fcntl.flock(f, fcntl.LOCK_UN)


D = "{ds}"
WRITERS = [
    ["ingest", "{pool}", "-o", D],
    ["download", D],
    ["embed", D, "--model", "curate-tiny"],
    ["filter", D, "--filter", "basic"],
    ["cluster", D, "--k", "2", "--embeddings", "m"],
    ["dedup", "semantic", D, "--eps", "0.1"],
    ["dedup", "exact", D],
    ["dedup", "near", D, "--embeddings", "m"],
    ["prune", "dbp", D, "--keep-fraction", "0.5"],
    ["prune", "ssp", D, "--keep-fraction", "0.5"],
    ["decontaminate", D, "--eval", "x", "--embeddings", "m"],
    ["metadata", "match", D, "--metadata", "{pool}"],
    ["metadata", "balance", D],
    ["select", D, "--sql", "SELECT uid FROM samples", "--name", "ok"],
    ["run", "recipes/demo.yaml", "--dataset", D],
    ["reshard", D, "--subset", "ok"],
]


@pytest.mark.parametrize("argv", WRITERS, ids=[" ".join(a[:2]) if a[0] in ("dedup", "prune", "metadata") else a[0]
                                               for a in WRITERS])
def test_every_writing_command_refuses_a_dataset_being_written(held, capsys, tmp_path, argv):
    pool = write_pool(tmp_path / "pool.jsonl", 3)
    with pytest.raises(SystemExit) as info:
        main([a.format(ds=held.root, pool=pool) for a in argv])
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.err.splitlines() == [
        f"curate: error: dataset {held.root} is being written by pid 4242 on elsewhere since 2026-01-02T03:04:05Z, "
        f"running `curate ingest pool.csv -o ds`; wait for it to finish (lock file {held.root / LOCK_FILE})"]
    assert "Spark UI" not in captured.out + captured.err  # refused before the JVM starts
    assert sorted(p.name for p in held.root.iterdir()) == [LOCK_FILE, "samples"]  # nothing else written


def test_readers_take_no_lock(held, capsys):
    for argv in (["sql", str(held.root), "SELECT count(*) AS n FROM samples"], ["stats", str(held.root)]):
        with pytest.raises(SystemExit) as info:
            main(argv)
        assert info.value.code == 0
    assert "samples" in capsys.readouterr().out


def test_the_lock_is_reentrant_in_one_process_and_released(ds):
    with dataset_lock(ds.root):
        with dataset_lock(ds.root):  # a command holds it, the job it calls takes it again
            pass
        holder = json.loads((ds.root / LOCK_FILE).read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == socket.gethostname()
        probe = subprocess.run([sys.executable, "-c", f"from curate.lock import acquire; acquire({str(ds.root)!r})"],
                               capture_output=True, text=True)
        assert probe.returncode != 0 and "DatasetLockedError" in probe.stderr
    acquire(ds.root)  # free again
    release(ds.root)


def test_taking_the_lock_removes_the_temp_files_a_killed_writer_left(ds):
    """A kill -9 mid-write leaves hidden ``.*.tmp`` files (atomic_path) in whatever table,
    subset or cache folder it was writing; the next writer removes them all when it takes the
    lock, since no other writer can be alive. The dataset's top level (a report page) is left."""
    left = [ds.root / "decisions/f2/.part-00000.parquet.19d3.tmp", ds.root / "subsets/r/.uids.npy.aa.tmp",
            ds.root / "_cache/recipe/input-r1/uids/.part-00000.parquet.54c6.tmp"]
    for p in left:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    kept = [ds.root / ".report.html.77.tmp", ds.root / "decisions/f2/part-00000.parquet", ds.root / "subsets/r/a.tmp",
            ds.root / "images/.00000001.tar.x.tmp"]  # img2dataset's own folder (and the pool's bulk) is not walked
    (ds.root / "images").mkdir()
    for p in kept:
        p.write_bytes(b"x")
    with dataset_lock(ds.root):
        assert not any(p.exists() for p in left) and all(p.exists() for p in kept)
        left[0].write_bytes(b"mine")  # this writer's own: a re-entrant hold leaves it
        with dataset_lock(ds.root):
            assert left[0].exists()


def test_a_writer_that_did_not_finish_is_said_by_the_next_until_its_job_runs_to_the_end(tmp_path, capsys):
    """kill -9 leaves the lock file's holder line unmarked (a finished command marks it); the next
    writers warn that its tables may be partial, until a run of the same job finishes. A command
    that stops on a user error has said why: it counts as finished."""
    src = tmp_path / "p.csv"
    src.write_text("url,text\nhttp://127.0.0.1/a.jpg,a cat\n")
    ds = tmp_path / "ds"

    def run(*argv, code=0):
        with pytest.raises(SystemExit) as e:
            main([*argv, "--engine", "local"])
        assert e.value.code == code
        return capsys.readouterr().err

    assert "did not finish" not in run("ingest", str(src), "-o", str(ds))
    lock = ds / LOCK_FILE
    assert json.loads(lock.read_text())["finished"] is True
    # what a kill -9 of `curate ingest` leaves: its line, not marked finished
    killed = {"pid": 4242, "host": "elsewhere", "command": f"curate ingest {src} -o {ds}", "job": "curate ingest",
              "started": "2026-01-02T03:04:05Z", "unfinished": []}
    lock.write_text(json.dumps(killed) + "\n")
    select = ("select", str(ds), "--sql", "SELECT uid FROM samples", "--name", "a")
    for _ in range(2):  # said by every writer until it is taken up
        err = run(*select)
        assert f"warning: an earlier writer of {ds.resolve()} did not finish: `curate ingest {src} -o {ds}`" in err
        assert "(said until a `curate ingest` run finishes)" in err
    assert "did not finish" in run("select", str(ds), "--sql", "SELECT 1 AS nope", "--name", "b", code=2)
    assert "did not finish" not in run("ingest", str(src), "-o", str(ds))  # the same job: it takes it up
    assert "did not finish" not in run(*select)
    assert json.loads(lock.read_text())["unfinished"] == []
    assert not (ds / "_tmp").exists()  # the jobs' scratch folder goes once empty


def test_a_missing_dataset_is_not_created_by_the_lock(tmp_path):
    from curate.errors import DatasetError

    with pytest.raises(DatasetError, match="does not exist"):
        acquire(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()
    assert DatasetLockedError.__mro__[1] is DatasetError


def test_two_concurrent_ingests_the_second_gets_one_line_naming_the_first(tmp_path):
    pool = write_pool(tmp_path / "pool.jsonl")
    out = tmp_path / "ds"
    first = start(curate_cmd("ingest", str(pool), "-o", str(out), "--rows-per-shard", str(ROWS_PER_SHARD),
                             "--master", "local[2]"), tmp_path / "first.log")
    try:
        lock = out / LOCK_FILE

        def first_holds_it() -> bool:
            try:
                return json.loads(lock.read_text() or "{}").get("pid") == first.pid
            except (OSError, ValueError):
                return False

        wait_for(first_holds_it, first, 300, tmp_path / "first.log", "the first ingest to take the lock")
        second = subprocess.run(curate_cmd("ingest", str(pool), "-o", str(out), "--master", "local[2]"),
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        lines = second.stderr.strip().splitlines()
        assert len(lines) == 1, second.stderr
        assert lines[0].startswith(f"curate: error: dataset {out} is being written by pid {first.pid} on "
                                   f"{socket.gethostname()} since ")
        assert f"running `curate ingest {pool} -o {out} --rows-per-shard {ROWS_PER_SHARD} --master local[2]`" in lines[0]
        assert "Traceback" not in second.stderr and "Exception" not in second.stderr
        assert first.poll() is None  # the first writer was not disturbed
    finally:
        kill_group(first)
        first.wait(60)
    left = json.loads((out / LOCK_FILE).read_text())  # its line, never marked finished: the next writer says so
    assert left["pid"] == first.pid and left["job"] == "curate ingest" and not left.get("finished")
    acquire(out)  # kill -9 of the holder leaves no stale lock
    release(out)
    assert json.loads((out / LOCK_FILE).read_text())["unfinished"][0]["pid"] == first.pid


def test_an_in_process_command_lets_go_of_the_lock_when_it_returns(ds, capsys):
    with pytest.raises(SystemExit):
        main(["select", str(ds.root), "--sql", "SELECT uid FROM samples", "--name", "ok"])
    probe = subprocess.run([sys.executable, "-c", f"from curate.lock import acquire; acquire({str(ds.root)!r})"],
                           capture_output=True, text=True)
    assert probe.returncode == 0, probe.stderr
