"""A full disk or a read-only output folder: one clear error line naming the path, and the
tables committed before are left exactly as they were. Uses real mounts (a 1 MiB tmpfs, a
read-only bind mount); skipped where this process may not mount (not root, no CAP_SYS_ADMIN)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from faultkit import curate_cmd, digests

from curate.ingest.job import IngestConfig, run_ingest
from curate.engine.spark import SparkExecutor

REPO = Path(__file__).resolve().parents[2]


def _mount(*args: str) -> bool:
    return subprocess.run(["mount", *args], capture_output=True).returncode == 0


@pytest.fixture
def mounts():
    done: list[Path] = []
    yield done
    for m in reversed(done):
        subprocess.run(["umount", "-l", str(m)], capture_output=True)


def _need_mount(ok: bool):
    if not ok:
        pytest.skip("cannot mount here (needs root with CAP_SYS_ADMIN)")


@pytest.fixture
def small_pool(tmp_path) -> Path:
    rows = [{"url": f"http://example.com/{i}.jpg", "caption": f"a small photo of a dog number {i}",
             "width": 400, "height": 300} for i in range(40)]
    p = tmp_path / "pool.jsonl"
    p.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return p


def _curate(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable)
    return subprocess.run(curate_cmd(*args), capture_output=True, text=True, env=env, cwd=REPO, timeout=600)


def _one_clear_line(r: subprocess.CompletedProcess, path_part: str, os_error: str) -> None:
    assert r.returncode == 2, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    line = [x for x in r.stderr.splitlines() if x.startswith("curate: error:")]
    assert len(line) == 1 and path_part in line[0] and os_error in line[0], r.stderr[-3000:]


def test_disk_full_is_a_clear_error_and_committed_tables_stay(spark, small_pool, tmp_path, mounts):
    disk = tmp_path / "disk"
    disk.mkdir()
    _need_mount(_mount("-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)))
    mounts.append(disk)
    ds = disk / "ds"
    run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(small_pool)], output=str(ds), rows_per_shard=10))
    before = digests(ds)
    # Fill the disk to the last byte.
    try:
        with open(disk / "ballast", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError:
        pass
    r = _curate("filter", str(ds), "--filter", "basic", "--engine", "local")
    _one_clear_line(r, str(ds), "No space left on device")
    assert digests(ds) == before  # samples, rejects, duplicates untouched
    left = [p for p in ds.rglob("*") if p.is_file() and p.name.startswith(".") and p.suffix == ".tmp"]
    assert left == []  # no temp files stranded on the full disk
    assert not list((ds / "text_stats").glob("*.parquet")) if (ds / "text_stats").exists() else True

    (disk / "ballast").unlink()  # room again: the same command now completes
    r = _curate("filter", str(ds), "--filter", "basic", "--engine", "local")
    assert r.returncode == 0, r.stderr[-3000:]
    assert digests(ds) == before and list((ds / "subsets" / "basic").glob("uids.*"))


def test_read_only_output_folder_is_a_clear_error_and_leaves_the_dataset(spark, small_pool, tmp_path, mounts):
    ds = tmp_path / "ds"
    run_ingest(SparkExecutor(spark), IngestConfig(inputs=[str(small_pool)], output=str(ds), rows_per_shard=10))
    before = digests(ds)
    _need_mount(_mount("--bind", str(tmp_path), str(tmp_path)))
    mounts.append(tmp_path)
    assert _mount("-o", "remount,bind,ro", str(tmp_path))

    r = _curate("filter", str(ds), "--filter", "basic", "--engine", "local")
    _one_clear_line(r, str(ds), "Read-only file system")
    assert digests(ds) == before

    r = _curate("ingest", str(small_pool), "-o", str(tmp_path / "new"), "--master", "local[1]")
    _one_clear_line(r, str(tmp_path / "new"), "Read-only file system")
