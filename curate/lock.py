"""One writer per dataset: an advisory lock every job that writes a dataset takes.

The lock is ``flock`` on ``DATASET/_curate.lock`` (hidden from table discovery). The holder
writes who it is into the file (pid, host, command, start time), so a second writer fails at
once with one line naming it, before it starts Spark or touches a file. The kernel drops the
lock when the holder exits, kill -9 included, so a crashed run never leaves a stale lock.
Readers (``curate sql``, ``stats``, ``report``) take no lock.

Within one process the lock is re-entrant: a CLI command holds it until it returns
(``hold_dataset_lock``), and the jobs it calls may take it again (``dataset_lock``).

A dataset on an object store (``s3://...``) has no flock: the lock is the object
``DATASET/_curate.lock`` holding the holder's line and a lease its holder renews
(``curate.object_lock``): of two writers starting at once exactly one gets it; it is deleted
when the command ends; one a kill -9 left behind is taken over at once on the same host and,
from any host, once its lease ran out unrenewed (docs/storage.md).
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from curate import storage
from curate.errors import DatasetError
from curate.object_lock import LOCK_FILE, DatasetLockedError, ObjectLock, holder_info, holder_text

__all__ = ["LOCK_FILE", "DatasetLockedError", "acquire", "dataset_lock", "hold_dataset_lock", "release",
           "release_command_locks"]

_held: dict = {}  # resolved dataset root (Path, or URI str) -> [fd or ObjectLock, depth]
_created: set = set()  # dataset folders this process made to write a new dataset into
_guard = threading.RLock()  # re-entrant: the Ctrl-C handler may release while the main thread holds it


def acquire(root: str | os.PathLike, create: bool = False) -> Path:
    """Take the write lock of the dataset at ``root`` (re-entrant in this process).

    ``create`` makes the dataset folder first (a job writing a new dataset); otherwise a
    missing folder is a one-line ``DatasetError``. A held lock raises ``DatasetLockedError``.
    """
    if storage.is_uri(root):
        return _acquire_remote(storage.resolve(root))
    root = Path(root).expanduser().resolve()
    with _guard:
        if root in _held:
            _held[root][1] += 1
            return root
        if create:
            if not root.exists():  # made here: a command that writes nothing into it leaves no folder
                _created.add(root)
            try:
                root.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise DatasetError(f"cannot create dataset folder {root}: {e.strerror or e}") from e
        elif not root.is_dir():
            raise DatasetError(f"dataset folder {root} does not exist")
        path = root / LOCK_FILE
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)  # never truncate: the holder's line is in it
        except OSError as e:
            raise DatasetError(f"cannot open the lock file {path}: {e.strerror or e}") from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            try:
                info = json.loads(os.pread(fd, 65536, 0).decode() or "{}")
            except (OSError, ValueError):
                info = {}
            os.close(fd)
            raise DatasetLockedError(f"dataset {root} is being written by {holder_text(info)}; wait for it to "
                                     f"finish (lock file {path})") from None
        info = holder_info()
        info["job"] = _job_name()
        info["unfinished"] = _unfinished_before(fd, info["job"])
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError:  # a full disk: the lock holds all the same; the job itself will say why it fails
            pass
        _say_unfinished(root, info["unfinished"], info["job"])
        _held[root] = [fd, 1, info]
        _remove_dead_writers_temp_files(root)
        return root


# writers that did not finish, remembered in the lock file until a run of the same job finishes
UNFINISHED_KEPT = 5


def _job_name() -> str | None:
    """The running command's words (``curate dedup semantic``), without its arguments."""
    try:  # typer's own copy of click, where it has one (as curate.cli imports its exceptions)
        from typer._click.globals import get_current_context
    except ImportError:
        try:
            from click import get_current_context
        except ImportError:
            return None
    ctx = get_current_context(silent=True)
    return ctx.command_path if ctx is not None else None


def _unfinished_before(fd: int, job: str | None) -> list[dict]:
    """The writers before this one that did not finish: the last holder's line when it was not
    marked finished (kill -9, Ctrl-C, a crash), and those it still carried; a run of the same
    job as this one is left out (this run takes it up)."""
    try:
        last = json.loads(os.pread(fd, 65536, 0).decode() or "{}")
    except (OSError, ValueError):
        return []
    if not isinstance(last, dict):
        return []
    carried = [u for u in last.get("unfinished") or [] if isinstance(u, dict)]
    if last.get("job") and not last.get("finished"):  # a command's (a library caller's has no job)
        carried.append({k: last.get(k) for k in ("command", "job", "pid", "host", "started")})
    return [u for u in carried if u.get("job") != job][-UNFINISHED_KEPT:]


def _say_unfinished(root: Path, unfinished: list[dict], job: str | None) -> None:
    from curate.progress import info

    for u in unfinished:
        info(f"warning: an earlier writer of {root} did not finish: `{u.get('command')}` (pid {u.get('pid')} "
             f"on {u.get('host')}, started {u.get('started')}); tables it was writing may be partial, and jobs "
             f"reading them see only part of the pool. Rerun it to complete them (said until a `{u.get('job')}` "
             f"run finishes)")


def _mark_finished(fd: int, info: dict) -> None:
    """The holder's line, marked finished (the command returned, or stopped on a user error):
    the next writer has nothing to warn about, but what earlier writers left unfinished."""
    done = {**info, "finished": True}
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(done) + "\n").encode(), 0)
    except OSError:
        pass


def _remove_dead_writers_temp_files(root: Path) -> None:
    """The hidden ``.*.tmp`` files a killed writer left mid-write (``atomic_path``) anywhere in
    the dataset's folders: no other writer is alive now that this one holds the lock, so none
    is in use. Files at the top (a report's page may be written there, lock-free) are left, and
    ``images/`` is not walked: img2dataset writes its tars itself (no ``.tmp`` files), and a
    pool's tars are most of its files (1.3M at DataComp's 12.8B)."""
    for dirpath, dirnames, filenames in os.walk(root):
        if dirpath == str(root):
            dirnames[:] = [d for d in dirnames if d != "images"]
            continue
        for name in filenames:
            if name.startswith(".") and name.endswith(".tmp"):
                try:
                    os.unlink(os.path.join(dirpath, name))
                except OSError:
                    pass


def _acquire_remote(root: storage.Location) -> str:
    key = root.uri
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return key
        held = ObjectLock(root)
        held.acquire()
        _held[key] = [held, 1]
        return key


def release(root: str | os.PathLike, finished: bool = True) -> None:
    """Drop one hold of the lock; the last one unlocks (the file stays, with the holder's line
    marked finished, unless ``finished`` is False: an interrupted or crashed command; a remote
    lock object is deleted)."""
    remote = storage.is_uri(root)
    root = storage.resolve(root).uri if remote else Path(root).expanduser().resolve()
    with _guard:
        entry = _held.get(root)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _held[root]
            if remote:
                entry[0].release()
                return
            if finished:
                _mark_finished(entry[0], entry[2])
                try:  # the jobs' scratch folder, once every job took its files away
                    os.rmdir(root / "_tmp")
                except OSError:
                    pass
            fcntl.flock(entry[0], fcntl.LOCK_UN)
            os.close(entry[0])
            if root in _created:
                _created.discard(root)
                _remove_if_only_the_lock(root)


def _remove_if_only_the_lock(root: Path) -> None:
    """A folder this process made for a new dataset that still holds only its lock file (the
    command failed before writing: an input that reads as nothing, a bad option) is removed,
    so a failed first ingest leaves nothing behind."""
    try:
        if [p.name for p in root.iterdir()] == [LOCK_FILE]:
            (root / LOCK_FILE).unlink()
            root.rmdir()
    except OSError:  # another writer came in, or the folder is not ours to empty: leave it
        pass


@contextmanager
def dataset_lock(root: str | os.PathLike, create: bool = False) -> Iterator[Path]:
    """Hold the dataset's write lock for the ``with`` block."""
    path = acquire(root, create=create)
    try:
        yield path
    finally:
        release(path)


def hold_dataset_lock(root: str | os.PathLike, create: bool = False) -> Path:
    """Take the lock for the rest of the command (one line in a CLI command, before Spark
    starts); ``curate.cli.main`` lets go of it when the command returns."""
    path = acquire(root, create=create)
    _command_holds.append(path)
    return path


def release_all() -> None:
    """Drop every hold this process has (a process about to ``os._exit``: interrupted, so its
    writes are not marked finished)."""
    with _guard:
        roots = list(_held)
        for root in roots:
            _held[root][1] = 1
    for root in roots:
        release(root, finished=False)
    _command_holds.clear()


def release_command_locks(finished: bool = True) -> None:
    """Drop the holds ``hold_dataset_lock`` took (the end of a CLI command; ``finished`` False:
    it was interrupted or crashed, and the next writer says so)."""
    while _command_holds:
        release(_command_holds.pop(), finished=finished)


_command_holds: list[Path] = []
