"""Where DuckDB spills sorts and joins past its memory limit, and how much it may write there.

Each process spills into its own folder ``curate-sql-<pid>-*`` in the system temporary folder
(never ``./.tmp`` in the user's working directory), removed when the process exits. A process
killed before that (kill -9, out of memory) leaves its folder behind: the next process that
opens a connection removes every ``curate-sql-<pid>-*`` folder of this host whose process is
gone (its ``_owner`` file names the host: a temporary folder shared by containers is never
judged by another pid namespace). The spill is capped by DuckDB's ``max_temp_directory_size``:
``DEFAULT_MAX_SPILL``, or ``$CURATE_SQL_MAX_SPILL``, or ``curate sql --max-spill``.
"""

from __future__ import annotations

import atexit
import os
import re
import shutil
import socket
import tempfile
from pathlib import Path

DEFAULT_MAX_SPILL = "20GB"
MAX_SPILL_ENV = "CURATE_SQL_MAX_SPILL"
PREFIX = "curate-sql-"
OWNER_FILE = "_owner"  # the host name of the process that made the folder
_OWNED = re.compile(rf"^{re.escape(PREFIX)}(\d+)-")

_SPILL: str | None = None


def max_spill(value: str | None = None) -> str:
    """The spill cap: ``value``, else ``$CURATE_SQL_MAX_SPILL``, else ``DEFAULT_MAX_SPILL``."""
    return value or os.environ.get(MAX_SPILL_ENV) or DEFAULT_MAX_SPILL


def spill_dir() -> str:
    """This process's spill folder, made on first use (stale ones of dead processes go first)."""
    global _SPILL
    if _SPILL is None:
        remove_stale_spill_dirs()
        path = tempfile.mkdtemp(prefix=f"{PREFIX}{os.getpid()}-")
        (Path(path) / OWNER_FILE).write_text(socket.gethostname())
        atexit.register(shutil.rmtree, path, True)
        _SPILL = path
    return _SPILL


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def remove_stale_spill_dirs(root: str | Path | None = None) -> list[Path]:
    """Remove the spill folders in ``root`` (the system temporary folder) made on this host by a
    process that is gone; returns them. Folders of live processes, of other hosts and without
    a pid in their name or an ``_owner`` file stay."""
    root = Path(root if root is not None else tempfile.gettempdir())
    host = socket.gethostname()
    removed = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return removed
    for p in entries:
        m = _OWNED.match(p.name)
        if not m or not p.is_dir() or p.is_symlink():
            continue
        pid = int(m.group(1))
        try:
            owner = (p / OWNER_FILE).read_text()
        except OSError:
            continue
        if owner != host or pid == os.getpid() or _alive(pid):
            continue
        shutil.rmtree(p, ignore_errors=True)
        removed.append(p)
    return removed
