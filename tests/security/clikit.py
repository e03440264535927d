"""Helpers of the CLI safety tests: run `curate` as a real process group, a small JSONL pool."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ROWS_PER_SHARD = 5  # 120 samples shards from 600 rows: a long write stage to interrupt


def write_pool(path: Path, rows: int = 600) -> Path:
    lines = [json.dumps({"url": f"http://example.com/{i}.jpg", "caption": f"a photo number {i}"}) for i in range(rows)]
    path.write_text("\n".join(lines) + "\n")
    return path


def curate_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "curate.cli", *args]


def start(cmd: list[str], log: Path) -> subprocess.Popen:
    """``cmd`` in its own process group, stdout and stderr into ``log``."""
    env = dict(os.environ, PYSPARK_PYTHON=sys.executable, SPARK_LOCAL_IP="127.0.0.1")
    return subprocess.Popen(cmd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, env=env, cwd=REPO,
                            start_new_session=True)


def kill_group(p: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    try:
        os.killpg(p.pid, sig)
    except ProcessLookupError:
        pass


def wait_for(cond, proc: subprocess.Popen, timeout: float, log: Path, what: str) -> None:
    t0 = time.time()
    while time.time() - t0 < timeout:
        if cond():
            return
        if proc.poll() is not None:
            pytest.fail(f"process ended (rc {proc.returncode}) before {what}:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    kill_group(proc)
    proc.wait(60)
    pytest.fail(f"timed out waiting for {what}:\n{log.read_text()[-3000:]}")


def shards(table_dir: Path) -> list[Path]:
    return sorted(p for p in table_dir.glob("part-*.parquet"))


def digests(root: Path, tables=("samples", "rejects", "duplicates")) -> dict:
    return {t: {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted((root / t).glob("*.parquet"))}
            for t in tables}
