"""The dataset's write lock on an object store: an object with a lease its holder renews.

``DATASET/_curate.lock`` holds the holder's line (pid, host, command, start time), a random
token that says which acquisition it is, and the lease: how long the lock stands without being
renewed. A daemon thread of the holder rewrites the object every ``lease / 5`` seconds, so a
lock whose holder is gone (kill -9, a lost machine, a driver pod rescheduled onto another host)
goes stale ``lease`` seconds after its last renewal and the next writer takes it over, from
any host. A dead holder on the writer's own host is taken over at once (its pid is gone).

On S3 every step is conditional, so two writers never both hold the lock: creation is
``If-None-Match: *``; a renewal, a takeover and the release are ``If-Match`` on the ETag the
writer last saw (AWS S3 since 2024, MinIO, moto). The lock's age is the store's clock on both
ends (the response's ``Date`` less the object's ``Last-Modified``), so the hosts' clocks do not
matter. A holder whose renewal finds the lock taken over (it could not renew for a whole lease,
e.g. frozen or cut off) reports it and interrupts its own process: its command stops as on
Ctrl-C instead of writing beside the new holder. Other stores (``gs://`` through pyarrow,
``hdfs://``, fsspec schemes, an S3 server answering NotImplemented) get the same protocol
without the conditions: check, then write (advisory; the age by this host's clock against the
object's modification time). ``CURATE_LOCK_LEASE_S`` sets the lease (default 300 s).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import pyarrow.fs as pafs

from curate import storage
from curate.errors import DatasetError
from curate.storage.objects import file_info

log = logging.getLogger(__name__)

LOCK_FILE = "_curate.lock"
LEASE_ENV = "CURATE_LOCK_LEASE_S"
DEFAULT_LEASE_S = 300.0
RENEWALS_PER_LEASE = 5
_VERBS = {"put_object": "write", "get_object": "read", "delete_object": "delete"}

_lost: list[str] = []  # why this process lost a lock it held (read by the CLI's Ctrl-C handler)


class DatasetLockedError(DatasetError):
    """Another process is writing this dataset."""


def lost_message() -> str | None:
    """Why this process stopped: another writer took over a lock it held (else None)."""
    return _lost[-1] if _lost else None


def lease_seconds() -> float:
    raw = os.environ.get(LEASE_ENV, "").strip()
    if not raw:
        return DEFAULT_LEASE_S
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value > 0:
        raise DatasetError(f"{LEASE_ENV}={raw!r}: expected a number of seconds above 0")
    return value


def holder_info() -> dict:
    return {"pid": os.getpid(), "host": socket.gethostname(),
            "command": " ".join(["curate", *sys.argv[1:]]) if sys.argv else "curate",
            "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def holder_text(info: dict) -> str:
    if not info:
        return "another process (no holder information yet)"
    return (f"pid {info.get('pid')} on {info.get('host')} since {info.get('started')}, "
            f"running `{info.get('command')}`")


def pid_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except (PermissionError, TypeError, ValueError):
        return True
    return True


@dataclass
class Seen:
    """The lock object as read: its holder's line, its ETag (S3) and seconds since written."""

    info: dict
    etag: str | None
    age: float | None


class _Precondition(Exception):
    """The object is not the one the request was conditional on."""


class _Missing(Exception):
    """There is no lock object."""


class _Unsupported(Exception):
    """The store does not do this conditional request (NotImplemented)."""


def _s3_status(e) -> str:
    """A botocore ClientError as 'precondition', 'missing', 'unsupported' or 'other'."""
    code = e.response.get("Error", {}).get("Code", "")
    status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (409, 412):
        return "precondition"
    if code in ("NoSuchKey", "404", "NotFound") or status == 404:
        return "missing"
    if code in ("NotImplemented", "501") or status == 501:
        return "unsupported"
    return "other"


class ObjectLock:
    """One acquisition of the lock object under ``root`` (a ``storage.Location``)."""

    def __init__(self, root: storage.Location):
        self.root = root.uri
        self.loc = root.join(LOCK_FILE)
        self.lease = lease_seconds()
        self.info = dict(holder_info(), token=uuid.uuid4().hex, lease_s=self.lease)
        self.conditional = self.loc.scheme == "s3"  # until the store answers NotImplemented
        self.etag: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- the protocol ------------------------------------------------------------------
    def acquire(self) -> None:
        """Take the lock or raise ``DatasetLockedError`` naming its holder."""
        seen = None
        for _ in range(4):  # another try after a takeover race or a lock that just went
            if self._create():
                return self._start_renewing()
            seen = self._read()
            if seen is None:
                continue
            if seen.info.get("token") == self.info["token"]:  # our own create, answered late
                self.etag = seen.etag
                return self._start_renewing()
            why = _stale(seen)
            if why is None:
                break
            if self._replace(seen):
                from curate.params import warn

                # a holder that let go would have deleted it: it was killed, and did not finish
                command = seen.info.get("command")
                warn(f"took over the lock {self.loc}: {why}; that writer did not finish"
                     f"{f' (`{command}`)' if command else ''}, so tables it was writing may be partial: "
                     "rerun its command to complete them")
                return self._start_renewing()
        raise DatasetLockedError(_locked_message(self.root, self.loc, seen))

    def release(self) -> None:
        """Stop renewing; delete the object if it is still this acquisition's."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        try:
            if self.conditional and self.etag is not None:
                try:
                    return self._s3("delete_object", IfMatch=self.etag)
                except _Unsupported:
                    self.conditional = False
                except _Precondition:
                    return  # another writer holds it now
            seen = self._read()
            if seen is not None and seen.info.get("token") == self.info["token"]:
                storage.delete(self.loc)
        except (OSError, storage.StorageError, _Missing):
            pass

    # ---- renewal -----------------------------------------------------------------------
    def _start_renewing(self) -> None:
        self._thread = threading.Thread(target=self._renew_loop, name="curate-lock-lease", daemon=True)
        self._thread.start()

    def _renew_loop(self) -> None:
        while not self._stop.wait(self.lease / RENEWALS_PER_LEASE):
            try:
                if self._renew():
                    continue
            except Exception as e:  # noqa: BLE001 - a store that does not answer: try again at the next beat
                log.debug("could not renew the lock %s: %s", self.loc, e)
                continue
            if self._stop.is_set():
                return
            seen = self._read_quietly()
            holder = holder_text(seen.info) if seen is not None else "nobody (the object was deleted)"
            message = (f"lost the write lock {self.loc} to {holder} (this process could not renew it for "
                       f"{self.lease:g} s); stopped so that two writers do not write the dataset at once")
            _lost.append(message)
            if not getattr(signal.getsignal(signal.SIGINT), "says_lost_lock", False):
                sys.stderr.write(f"curate: error: {message}\n")  # no CLI handler to say it
            os.kill(os.getpid(), signal.SIGINT)  # the command stops as on Ctrl-C
            return

    def _renew(self) -> bool:
        """Rewrite the object if it is still ours: True renewed, False taken over."""
        body = self._body()
        if self.conditional:
            try:
                self.etag = self._s3("put_object", Body=body, IfMatch=self.etag)["ETag"]
                return True
            except _Unsupported:
                self.conditional = False
            except (_Precondition, _Missing):
                seen = self._read()  # an earlier renewal that did land, its answer lost
                if seen is None:  # deleted by hand and taken by nobody: ours again if still free
                    return self._create()
                if seen.info.get("token") != self.info["token"]:
                    return False
                self.etag = seen.etag
                return True
        seen = self._read()
        if seen is None:
            return self._create()
        if seen.info.get("token") != self.info["token"]:
            return False
        storage.put_bytes(self.loc, body)
        return True

    # ---- requests ----------------------------------------------------------------------
    def _body(self) -> bytes:
        info = dict(self.info, renewed=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
        return (json.dumps(info) + "\n").encode()

    def _create(self) -> bool:
        body = self._body()
        if self.conditional:
            try:
                self.etag = self._s3("put_object", Body=body, IfNoneMatch="*")["ETag"]
                return True
            except _Precondition:
                return False
            except _Unsupported:
                self.conditional = False
        if storage.exists(self.loc):
            return False
        storage.put_bytes(self.loc, body)
        return True

    def _replace(self, seen: Seen) -> bool:
        """Overwrite a stale lock; conditional on its ETag, so of two writers taking it over
        at once one gets it."""
        body = self._body()
        if self.conditional and seen.etag is not None:
            try:
                self.etag = self._s3("put_object", Body=body, IfMatch=seen.etag)["ETag"]
                return True
            except (_Precondition, _Missing):
                return False
            except _Unsupported:
                self.conditional = False
        storage.put_bytes(self.loc, body)
        return True

    def _read(self) -> Seen | None:
        """The object, or None when there is none."""
        if self.loc.scheme == "s3":
            try:
                got = self._s3("get_object")
            except _Missing:
                return None
            body = got["Body"].read()
            server_now = got["ResponseMetadata"].get("HTTPHeaders", {}).get("date")
            written = got.get("LastModified")
            now = parsedate_to_datetime(server_now).timestamp() if server_now else time.time()
            return Seen(_parse(body), got.get("ETag"), now - written.timestamp() if written else None)
        info = file_info(self.loc)
        if info.type == pafs.FileType.NotFound:
            return None
        try:
            body = storage.read_bytes(self.loc)
        except FileNotFoundError:
            return None
        age = time.time() - info.mtime.timestamp() if info.mtime is not None else None
        return Seen(_parse(body), None, age)

    def _read_quietly(self) -> Seen | None:
        try:
            return self._read()
        except Exception:  # noqa: BLE001 - only to name the new holder in a message
            return None

    def _s3(self, op: str, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError

        bucket, _, key = self.loc.path.partition("/")
        try:
            return getattr(storage.s3_client(), op)(Bucket=bucket, Key=key, **kwargs)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") == "NoSuchBucket":  # not a missing lock: nowhere to write
                raise DatasetError(f"cannot write to {self.loc.uri.rsplit('/', 1)[0]}: the bucket {bucket!r} does not "
                                   "exist (create it first, or check the endpoint)") from None
            status = _s3_status(e)
            if status == "precondition":
                raise _Precondition() from None
            if status == "missing":
                raise _Missing() from None
            if status == "unsupported":
                raise _Unsupported() from None
            code = e.response.get("Error", {}).get("Code", "")
            raise DatasetError(f"cannot {_VERBS[op]} the lock object {self.loc}: {code or e}") from None
        except BotoCoreError as e:
            raise DatasetError(f"cannot {_VERBS[op]} the lock object {self.loc}: {e}") from None


def _parse(body: bytes) -> dict:
    try:
        info = json.loads(body.decode() or "{}")
    except (UnicodeDecodeError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _stale(seen: Seen) -> str | None:
    """Why the lock ``seen`` may be taken over, or None while it stands."""
    info = seen.info
    if info.get("host") == socket.gethostname() and info.get("pid") is not None and not pid_alive(info["pid"]):
        return f"its holder (pid {info['pid']}) is gone from this host"
    lease = info.get("lease_s")
    if isinstance(lease, (int, float)) and seen.age is not None and seen.age > lease:
        return f"{holder_text(info)} had not renewed it for {seen.age:.0f} s (lease {lease:g} s)"
    return None


def _locked_message(root: str, loc: storage.Location, seen: Seen | None) -> str:
    info = seen.info if seen is not None else {}
    lease = info.get("lease_s")
    if isinstance(lease, (int, float)):
        renewed = f"renewed {seen.age:.0f} s ago; " if seen.age is not None else ""
        how = f"{renewed}taken over once not renewed for {lease:g} s"
    else:  # a holder that renews nothing (an older curate): only a person knows it is gone
        how = "delete it if that process is gone"
    return (f"dataset {root} is being written by {holder_text(info)}; wait for it to finish "
            f"(lock object {loc}; {how})")
