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


def kill_group(p: subprocess.Popen) -> None:
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    p.wait(timeout=60)


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
