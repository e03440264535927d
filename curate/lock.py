"""One writer per dataset: an advisory lock every job that writes a dataset takes.

The lock is ``flock`` on ``DATASET/_curate.lock`` (hidden from table discovery). The holder
writes who it is into the file (pid, host, command, start time), so a second writer fails at
once with one line naming it, before it starts Spark or touches a file. The kernel drops the
lock when the holder exits, kill -9 included, so a crashed run never leaves a stale lock.
Readers (``curate sql``, ``stats``, ``report``) take no lock.

Within one process the lock is re-entrant: a CLI command holds it until it returns
(``hold_dataset_lock``), and the jobs it calls may take it again (``dataset_lock``).

A dataset on an object store (``s3://...``) has no flock: the lock is the object
``DATASET/_curate.lock`` holding the holder's line, created with a conditional PUT
(``If-None-Match: *``), so of two writers starting at once exactly one gets it; it is deleted
when the command ends. A kill -9 leaves it behind: a lock left by a dead process on this host
is taken over; one from another host names its holder and says to delete the object when that
holder is gone. Stores without conditional create (other schemes, or an S3 server that
answers NotImplemented) get an advisory lock: check, then write (docs/storage.md).
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from curate import storage
from curate.errors import DatasetError

LOCK_FILE = "_curate.lock"

_held: dict = {}  # resolved dataset root (Path, or URI str) -> [fd or lock body, depth]
_guard = threading.Lock()


class DatasetLockedError(DatasetError):
    """Another process is writing this dataset."""


def _holder_text(info: dict) -> str:
    if not info:
        return "another process (no holder information yet)"
    return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')}, "
            f"running `{info.get('command')}`")


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
            raise DatasetLockedError(f"dataset {root} is being written by {_holder_text(info)}; wait for it to "
                                     f"finish (lock file {path})") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(),
                "command": " ".join(["curate", *sys.argv[1:]]) if sys.argv else "curate",
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        except OSError:  # a full disk: the lock holds all the same; the job itself will say why it fails
            pass
        _held[root] = [fd, 1]
        return root


def _holder_info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "command": " ".join(["curate", *sys.argv[1:]]) if sys.argv else "curate",
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True


def _create_if_absent(loc: storage.Location, body: bytes) -> bool | None:
    """Conditional create of the lock object: True created, False it exists, None the store
    cannot do a conditional create (the caller falls back to check-then-write)."""
    if loc.scheme != "s3":
        return None
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, _, key = loc.path.partition("/")
    try:
        storage.s3_client().put_object(Bucket=bucket, Key=key, Body=body, IfNoneMatch="*")
        return True
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or \
                e.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
            return False
        if code in ("NotImplemented", "501"):
            return None
        raise DatasetError(f"cannot create the lock object {loc}: {code or e}") from None
    except BotoCoreError as e:
        raise DatasetError(f"cannot create the lock object {loc}: {e}") from None


def _acquire_remote(root: storage.Location) -> str:
    key = root.uri
    with _guard:
        if key in _held:
            _held[key][1] += 1
            return key
        loc = root.join(LOCK_FILE)
        body = (json.dumps(_holder_info()) + "\n").encode()
        for _ in range(2):  # a second try only after taking over a dead holder's lock
            created = _create_if_absent(loc, body)
            if created is None:  # advisory: check, then write
                created = not storage.exists(loc)
                if created:
                    storage.put_bytes(loc, body)
            if created:
                _held[key] = [body, 1]
                return key
            try:
                info = json.loads(storage.read_bytes(loc).decode() or "{}")
            except (OSError, ValueError, storage.StorageError):
                info = {}
            if info.get("host") == socket.gethostname() and not _pid_alive(info.get("pid")):
                storage.delete(loc)  # its holder died (kill -9) on this host: the lock is stale
                continue
            break
        raise DatasetLockedError(f"dataset {key} is being written by {_holder_text(info)}; wait for it to finish "
                                 f"(lock object {loc}; delete it if that process is gone)")


def _release_remote(root: storage.Location, body: bytes) -> None:
    loc = root.join(LOCK_FILE)
    try:
        if storage.read_bytes(loc) == body:  # never delete a lock another writer took since
            storage.delete(loc)
    except (OSError, storage.StorageError):
        pass


def release(root: str | os.PathLike) -> None:
    """Drop one hold of the lock; the last one unlocks (the file stays, empty of meaning; a
    remote lock object is deleted)."""
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
                _release_remote(storage.resolve(root), entry[0])
                return
            fcntl.flock(entry[0], fcntl.LOCK_UN)
            os.close(entry[0])


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


def release_command_locks() -> None:
    """Drop the holds ``hold_dataset_lock`` took (the end of a CLI command)."""
    while _command_holds:
        release(_command_holds.pop())


_command_holds: list[Path] = []
