"""Helpers of the fault tests: run curate as a killable process group, compare table bytes."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROWS = 600
ROWS_PER_SHARD = 5  # 120 samples shards: one write task each, so the write stage is long


def digests(root: Path, tables=("samples", "rejects", "duplicates")) -> dict:
    out = {}
    for t in tables:
        files = sorted((root / t).glob("*.parquet"))
        out[t] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    return out


def curate_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "curate.cli", *args]


def start_group(cmd: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    """Start ``cmd`` in its own process group (its JVM and Python workers die with it)."""
    e = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    e.update(env or {})
    return subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=e, cwd=REPO,
                            start_new_session=True)


def _descendants(pid: int) -> list[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    kids.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(int(d))
            except (OSError, IndexError, ValueError):
                continue
    out, todo = [], list(kids.get(pid, []))
    while todo:
        out.append(todo.pop())
        todo.extend(kids.get(out[-1], []))
    return out


def kill_group(p: subprocess.Popen) -> None:
    """SIGKILL ``p``'s process group and every process group under it, as a lost machine loses
    them: pyspark's daemon puts itself and its Python workers in a group of their own
    (``os.setpgid`` in pyspark/daemon.py), so killing the driver's group alone left workers
    that could still write a shard's temp file after the test's rerun had cleaned them."""
    groups = {p.pid}
    for pid in _descendants(p.pid):  # before the kill: then the daemon's parent is init
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            pass
    groups.discard(os.getpgrp())
    for g in sorted(groups):
        try:
            os.killpg(g, signal.SIGKILL)
        except ProcessLookupError:
            pass
    p.wait(timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline and _running(groups):
        time.sleep(0.05)


def _running(groups: set[int]) -> bool:
    """Whether a process of ``groups`` still runs (a zombie waiting for its parent does not)."""
    for d in os.listdir("/proc"):
        try:
            with open(f"/proc/{d}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) in groups:
            return True
    return False


def wait_for(cond, proc: subprocess.Popen, timeout: float, log: Path, what: str) -> None:
    """Poll ``cond`` until true; fail if ``proc`` ends first or time runs out."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        if proc.poll() is not None:
            pytest.fail(f"process ended (rc {proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    kill_group(proc)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def visible_shards(table_dir: Path) -> list[Path]:
    return sorted(p for p in table_dir.glob("*.parquet") if not p.name.startswith((".", "_")))
