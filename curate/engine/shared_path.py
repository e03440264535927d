"""Whether a cluster's executors see the dataset folder at the driver's path.

Tasks write their shards straight into ``DATASET/<table>/`` and the driver reads them, so on a
cluster the folder must be one shared path (docs/deploy.md). When it is not (a local disk on
each node, a mount missing on some), jobs fail late with a misleading message ("0 decisions",
"Path does not exist", a missing ``sums-00000.npz``). Before a job on a cluster master, the
driver writes a probe file into ``DATASET/_tmp/`` and a few tasks read it and answer with a
file of their own: any task that cannot is one line naming its host.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from pathlib import Path

from curate.errors import EngineStartError


def probe_task(task: dict) -> dict:
    """A task's view of the probe: whether it reads the driver's file, and its answer written."""
    folder = Path(task["folder"])
    try:
        seen = (folder / "driver").read_text() == task["token"]
    except OSError:
        seen = False
    if seen:
        try:
            (folder / f"task-{task['i']}").write_text(task["token"])
        except OSError:
            seen = False
    return {"i": task["i"], "seen": seen, "host": socket.gethostname()}


def check_shared_path(executor, folder: str, tasks: int) -> None:
    """Refuse, in one line, a dataset folder some executor does not share with the driver."""
    root = Path(folder)
    probe = root / "_tmp" / f"shared-path-{uuid.uuid4().hex[:12]}"
    token = uuid.uuid4().hex
    try:
        probe.mkdir(parents=True, exist_ok=True)
        (probe / "driver").write_text(token)
    except OSError:  # a folder this process cannot write (a read-only query): the job says so itself
        shutil.rmtree(probe, ignore_errors=True)
        return
    try:
        results = executor.map_tasks([{"folder": str(probe), "token": token, "i": i} for i in range(tasks)],
                                     probe_task, "check the dataset folder is shared")
        answered = {int(p.name.split("-", 1)[1]) for p in probe.glob("task-*")}
    finally:
        shutil.rmtree(probe, ignore_errors=True)
        try:
            (root / "_tmp").rmdir()  # only when it was empty (made for the probe)
        except OSError:
            pass
    blind = sorted({r["host"] for r in results if not r["seen"]})
    unheard = sorted({r["host"] for r in results if r["seen"] and r["i"] not in answered})
    if blind or unheard:
        hosts = ", ".join(blind or unheard)
        what = "cannot read" if blind else "write files the driver does not see in"
        raise EngineStartError(f"executors on {hosts} {what} {os.path.abspath(folder)}: on a cluster the dataset "
                               "must be one shared path on the driver and every executor (NFS, Lustre, a mounted "
                               "bucket), or an s3:// / gs:// URI (docs/deploy.md)")
