"""Run manifests: what a job read, with which parameters and code, what it counted, how long it took.

Written to ``DATASET/_runs/<job>.json`` (latest run of that job) and
``DATASET/_runs/history/<job>-<UTC time>.json``. Plain JSON, never pickle.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import os
import platform
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import curate
from curate import storage
from curate.tables import Dataset, atomic_write_bytes


def code_version() -> dict:
    """Package version plus the git commit of the source tree when there is one."""
    out = {"curate": curate.__version__, "python": platform.python_version()}
    root = Path(curate.__file__).resolve().parents[1]
    try:
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        if sha:
            out["git_commit"] = sha
            out["git_dirty"] = bool(dirty)
    except (OSError, subprocess.SubprocessError):
        pass
    return out


def file_fingerprint(path: str | os.PathLike, chunk: int = 1 << 20) -> dict:
    """Size, mtime and full-content SHA-256 of a file (a folder: of each file inside)."""
    p = Path(path)
    if p.is_dir():
        h = hashlib.sha256()
        size = 0
        for f in sorted(x for x in p.rglob("*") if x.is_file()):
            fp = file_fingerprint(f)
            h.update(f"{f.relative_to(p).as_posix()}:{fp['sha256']}\n".encode())
            size += fp["bytes"]
        return {"path": str(p), "bytes": size, "sha256": h.hexdigest(), "kind": "folder"}
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while True:
            b = f.read(chunk)
            if not b:
                break
            h.update(b)
    st = p.stat()
    return {"path": str(p), "bytes": st.st_size, "sha256": h.hexdigest(), "mtime": st.st_mtime}


def stable_hash(obj: Any) -> str:
    """SHA-256 of the canonical JSON of ``obj``: the cache/plan key of a step."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


class RunManifest:
    """Collects one job run's facts; ``write`` saves them next to its output."""

    def __init__(self, job: str, params: dict):
        self.job = job
        self.data: dict[str, Any] = {
            "job": job,
            "params": params,
            "code": code_version(),
            "started_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(),
            "inputs": [],
            "counts": {},
            "timings_s": {},
            "outputs": {},
        }
        self._t0 = time.perf_counter()

    @contextmanager
    def stage(self, name: str):
        """Time a stage; the wall time lands in ``timings_s[name]``."""
        t = time.perf_counter()
        try:
            yield
        finally:
            self.data["timings_s"][name] = round(self.data["timings_s"].get(name, 0) + time.perf_counter() - t, 4)

    def __setitem__(self, key: str, value: Any) -> None:
        self.data[key] = value

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    def write(self, dataset: Dataset, name: str | None = None, current: bool = True) -> Path | str:
        self.data["finished_utc"] = _dt.datetime.now(_dt.timezone.utc).isoformat()
        self.data["timings_s"]["total"] = round(time.perf_counter() - self._t0, 4)
        body = (json.dumps(_json_safe(self.data), indent=2, sort_keys=True, default=str, allow_nan=False)
                + "\n").encode()
        stem = name or self.job
        stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        history = dataset.path(f"_runs/history/{stem}-{stamp}.json")
        atomic_write_bytes(history, body)
        if not current:  # ``current`` False: a run that changed nothing leaves _runs/<stem>.json as it was
            return history
        path = dataset.path(f"_runs/{stem}.json")
        atomic_write_bytes(path, body)
        return path


def _json_safe(v: Any) -> Any:
    """Non-finite floats as the strings "inf", "-inf" and "nan": JSON has no such numbers, and
    Python's ``Infinity`` is refused by strict parsers (JavaScript's, ``jq --strict``)."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_safe(x) for x in v]
    return v


def read_manifest(dataset: Dataset, name: str) -> dict | None:
    p = dataset.path(f"_runs/{name}.json")
    if dataset.remote:
        return json.loads(storage.read_bytes(p)) if storage.exists(p) else None
    return json.loads(p.read_text()) if p.exists() else None
