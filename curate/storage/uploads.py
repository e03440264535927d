"""One object written as a stream: bytes go up while they are produced, and the object is
published under its final key only when the writer finished (``ObjectUpload.complete``); an
error publishes nothing (``abort``).

For a file too large to stage on the writer's disk (a subset's ``uids.npy`` and
``uids.parquet``: ~30 bytes a uid, hundreds of GB for a billion-row subset), and to overlap the
upload with the pass that writes it. Memory is bounded by the parts in flight, not the object.

- S3: a multipart upload (boto3's client): parts go up on a few threads while the writer goes on;
  ``complete`` publishes, ``abort`` aborts the upload. A process killed mid-stream leaves an
  incomplete multipart upload, invisible to readers (a bucket's lifecycle rule
  ``AbortIncompleteMultipartUpload`` reclaims it; s3transfer's uploads leave the same).
- GCS: pyarrow's output stream (resumable upload) under a hidden temporary key, copied to the
  final key by ``complete`` (a GCS stream closed by an unwinding error would publish what it
  had, so it never writes the final key) and deleted either way.
- Any other store: a local temporary file, uploaded whole by ``complete`` (``put_file``).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections import deque
from concurrent.futures import ThreadPoolExecutor

from curate.storage.filesystems import s3_client
from curate.storage.location import Location
from curate.storage.objects import delete, put_file
from curate.storage.settings import StorageError

PART_BYTES = 8 << 20  # s3transfer's part size; S3 wants >= 5 MiB for every part but the last
PARTS_PER_SIZE = 1000  # the part size doubles every this many parts: 10,000 parts (S3's most) reach ~8 TB
PARTS_IN_FLIGHT = 4  # parts uploading at once: with the one filling, the parts held in memory


def part_bytes(part_number: int) -> int:
    """The size of part ``part_number`` (1-based) of an S3 upload of unknown length."""
    return PART_BYTES << ((part_number - 1) // PARTS_PER_SIZE)


class ObjectUpload:
    """A binary writer (``write``) whose bytes become one object at ``loc``. ``size`` and
    ``sha256`` describe what was written (a table shard's commit marker records them)."""

    def __init__(self, loc: Location, parts_in_flight: int = PARTS_IN_FLIGHT):
        self.loc = loc
        self.size = 0
        self._hash = hashlib.sha256()
        self._done = False
        if loc.scheme == "s3":
            self._sink = _S3Parts(loc, parts_in_flight)
        elif loc.scheme == "gs":
            self._sink = _GcsStream(loc)
        else:
            self._sink = _LocalFile(loc)

    @property
    def sha256(self) -> str:
        return self._hash.hexdigest()

    def write(self, data) -> int:
        n = memoryview(data).nbytes
        self._hash.update(data)
        self._sink.write(data)
        self.size += n
        return n

    @property
    def closed(self) -> bool:  # read by pyarrow when it wraps this writer
        return self._done

    def complete(self) -> None:
        """Publish the object (once). After a failure, ``abort`` still releases the upload."""
        try:
            self._sink.complete()
        except StorageError:
            raise
        except Exception as e:  # noqa: BLE001 - boto3/botocore/pyarrow errors: one line, as every storage failure
            raise StorageError(f"cannot write {self.loc}: {e}") from None
        self._done = True

    def abort(self) -> None:
        """Publish nothing and release what the upload holds; never raises (it runs while an
        error unwinds)."""
        if not self._done:
            self._done = True
            self._sink.abort()


class _S3Parts:
    def __init__(self, loc: Location, parts_in_flight: int):
        self.bucket, _, self.key = loc.path.partition("/")
        self.loc = loc
        self.client = s3_client()
        self.buffer = bytearray()
        self.upload_id: str | None = None
        self.parts: list[dict] = []
        self.in_flight: deque = deque()
        self.most = parts_in_flight
        self.pool: ThreadPoolExecutor | None = None

    def write(self, data) -> None:
        self.buffer += data
        if len(self.buffer) >= part_bytes(self._next_part()):
            if self.upload_id is None:
                try:
                    self.upload_id = self.client.create_multipart_upload(Bucket=self.bucket,
                                                                         Key=self.key)["UploadId"]
                except Exception as e:  # noqa: BLE001 - botocore's errors: one line
                    raise StorageError(f"cannot write {self.loc}: {e}") from None
                self.pool = ThreadPoolExecutor(max_workers=self.most, thread_name_prefix="s3-part")
            self._submit_buffer()
            while len(self.in_flight) > self.most:
                self._settle_one()

    def _next_part(self) -> int:
        return len(self.parts) + len(self.in_flight) + 1

    def _submit_buffer(self) -> None:
        number = self._next_part()
        body, self.buffer = bytes(self.buffer), bytearray()
        self.in_flight.append((number, self.pool.submit(self._put_part, number, body)))

    def _put_part(self, number: int, body: bytes) -> dict:
        r = self.client.upload_part(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number,
                                    Body=body)
        # the checksum botocore computed for the part, where it did: completion must name it
        return {"PartNumber": number, "ETag": r["ETag"],
                **{k: v for k, v in r.items() if k.startswith("Checksum") and k != "ChecksumType"}}

    def _settle_one(self) -> None:
        _, future = self.in_flight.popleft()
        try:
            self.parts.append(future.result())
        except Exception as e:  # noqa: BLE001 - botocore's errors: one line
            raise StorageError(f"cannot write {self.loc}: {e}") from None

    def complete(self) -> None:
        if self.upload_id is None:  # under one part: a single PUT
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer))
            return
        if self.buffer:
            self._submit_buffer()  # the last part may be under S3's minimum
        while self.in_flight:
            self._settle_one()
        self.client.complete_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id,
                                              MultipartUpload={"Parts": sorted(self.parts,
                                                                               key=lambda p: p["PartNumber"])})
        self.pool.shutdown()

    def abort(self) -> None:
        self.buffer = bytearray()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
        if self.upload_id is not None:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)
            except Exception:  # noqa: BLE001, S110 - unreachable store: the upload stays invisible, reclaimed by lifecycle
                pass


class _GcsStream:
    def __init__(self, loc: Location):
        self.loc = loc
        self.tmp = loc.parent.join(f".{loc.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            self.stream = loc.fs.open_output_stream(self.tmp.path)
        except OSError as e:
            raise StorageError(f"cannot write {loc}: {e}") from None

    def write(self, data) -> None:
        try:
            self.stream.write(data)
        except OSError as e:
            raise StorageError(f"cannot write {self.loc}: {e}") from None

    def complete(self) -> None:
        try:
            self.stream.close()
            self.loc.fs.copy_file(self.tmp.path, self.loc.path)
        finally:
            self._drop_tmp()

    def abort(self) -> None:
        try:
            self.stream.close()  # publishes the temporary key, removed next
        except OSError:
            pass
        self._drop_tmp()

    def _drop_tmp(self) -> None:
        try:
            delete(self.tmp)
        except Exception:  # noqa: BLE001, S110 - a leftover hidden temporary object is not part of any table
            pass


class _LocalFile:
    def __init__(self, loc: Location):
        self.loc = loc
        fd, self.path = tempfile.mkstemp(prefix=".curate-upload-", suffix=".tmp")
        self.file = os.fdopen(fd, "wb")

    def write(self, data) -> None:
        self.file.write(data)

    def complete(self) -> None:
        try:
            self.file.close()
            put_file(self.loc, self.path)
        finally:
            self._remove()

    def abort(self) -> None:
        self.file.close()
        self._remove()

    def _remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass
