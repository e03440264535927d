"""Single files and objects on any filesystem: existence, whole reads and writes, deletes,
one folder's listing, and a folder's removal."""

from __future__ import annotations

import contextlib
import os
import re
import uuid

import pyarrow.fs as pafs

from curate.storage.filesystems import s3_client
from curate.storage.location import Location, is_uri, resolve
from curate.storage.settings import StorageError


# what a store answers when it was reached and said no: credentials or permissions, not the network
_REFUSED = re.compile(r"ACCESS_DENIED|AccessDenied|SignatureDoesNotMatch|InvalidAccessKeyId|PERMISSION_DENIED|"
                      r"ExpiredToken|Forbidden|Unauthorized|(status|code):? 40[13]\b")


def file_info(loc: Location) -> pafs.FileInfo:
    try:
        return loc.fs.get_file_info(loc.path)
    except OSError as e:
        if _REFUSED.search(str(e)):
            raise StorageError(f"{loc}: access denied: check the credentials and their permissions on it "
                               f"({e})") from None
        raise StorageError(f"{loc}: cannot reach storage ({e})") from None
    except ValueError as e:  # pyarrow's ArrowInvalid for a path it refuses
        raise StorageError(f"{loc}: not a path this store takes ({e})") from None


def exists(path) -> bool:
    loc = resolve(path)
    return file_info(loc).type != pafs.FileType.NotFound


def is_file(path) -> bool:
    return file_info(resolve(path)).type == pafs.FileType.File


def is_dir(path) -> bool:
    """A folder; on an object store, a prefix with objects under it (or a bucket)."""
    loc = resolve(path)
    info = file_info(loc)
    if info.type == pafs.FileType.Directory:
        return True
    if loc.local or info.type == pafs.FileType.File:
        return False
    try:
        return bool(loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True, recursive=False)))
    except OSError:
        return False


def read_bytes(path) -> bytes:
    """A whole file or object. On a store: one request for the whole object (after the size
    lookup every open makes); ``read()`` of an input stream asks for it in small pieces, each
    a request: 205 for a 51 MB object, 9 s against 0.2 s on a loopback store."""
    loc = resolve(path)
    try:
        with loc.fs.open_input_file(loc.path) as f:
            return f.read()
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StorageError(f"cannot read {loc}: {e}") from None


class ObjectTooLarge(StorageError):
    """An object over the size a reader accepts, refused before its body was read."""

    def __init__(self, loc: Location, size: int, limit: int):
        super().__init__(f"{loc}: object of {size} bytes over {limit} bytes")
        self.size, self.limit = size, limit


def read_object(path, max_bytes: int | None = None) -> bytes:
    """A whole object in as few requests as the store allows, refused (``ObjectTooLarge``)
    before its body is read when it is over ``max_bytes``: on S3 one GET through boto3 (every
    pyarrow open looks up the size first: two requests), elsewhere the size lookup and one read.
    For many small objects read one each (a pool's images named by store URLs). A missing
    object raises FileNotFoundError."""
    return _read_start(resolve(path), max_bytes=max_bytes)


def read_head(path, nbytes: int) -> bytes:
    """The first ``nbytes`` of an object (all of it when shorter), in the same requests as
    ``read_object``. For headers of many small objects (an image folder's image sizes)."""
    return _read_start(resolve(path), head=nbytes)


def _read_start(loc: Location, max_bytes: int | None = None, head: int | None = None) -> bytes:
    """An object from its start: whole (over ``max_bytes``: refused before its body is read),
    or its first ``head`` bytes."""
    if loc.scheme == "s3":
        return _s3_read_start(loc, max_bytes, head)
    try:
        with loc.fs.open_input_file(loc.path) as f:
            size = f.size()
            if max_bytes is not None and size > max_bytes:
                raise ObjectTooLarge(loc, size, max_bytes)
            return f.read(size if head is None else head)
    except (FileNotFoundError, StorageError):
        raise
    except OSError as e:
        raise StorageError(f"cannot read {loc}: {e}") from None


def _s3_read_start(loc: Location, max_bytes: int | None, head: int | None) -> bytes:
    from botocore.exceptions import ClientError

    bucket, _, key = loc.path.partition("/")
    ranged = {} if head is None else {"Range": f"bytes=0-{head - 1}"}
    try:
        response = s3_client().get_object(Bucket=bucket, Key=key, **ranged)
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code")
        if code in ("NoSuchKey", "404", "NotFound"):
            raise FileNotFoundError(str(loc)) from None
        if code == "InvalidRange":  # a range of an empty object
            return b""
        raise StorageError(f"cannot read {loc}: {e}") from None
    except Exception as e:  # botocore's connection errors: one line, like every other storage failure
        raise StorageError(f"cannot read {loc}: {e}") from None
    with contextlib.closing(response["Body"]) as body:
        size = response.get("ContentLength")
        if max_bytes is not None and size is not None and size > max_bytes:
            raise ObjectTooLarge(loc, size, max_bytes)
        try:
            return body.read()
        except Exception as e:  # the connection dropped mid-body
            raise StorageError(f"cannot read {loc}: {e}") from None


def put_bytes(loc: Location, data: bytes) -> None:
    """One whole object under its final key (object stores publish it only when complete)."""
    try:
        with loc.fs.open_output_stream(loc.path) as f:
            f.write(data)
    except OSError as e:
        raise StorageError(f"cannot write {loc}: {e}") from None


def put_file(loc: Location, local_path, chunk: int = 8 << 20) -> None:
    """A local file uploaded as one whole object under its final key, streamed in chunks (S3
    and GCS publish the object only when the upload completes). An error midway publishes
    nothing where the store allows it (a pyarrow output stream closed by an unwinding error
    would publish what it had): on S3 through boto3's managed upload, which aborts a failed
    multipart upload; on GCS through a temporary key copied to the final one when complete."""
    if loc.scheme == "s3":
        bucket, _, key = loc.path.partition("/")
        try:
            s3_client().upload_file(str(local_path), bucket, key)
        except Exception as e:  # boto3/s3transfer errors: one line, like every other storage failure
            raise StorageError(f"cannot write {loc}: {e}") from None
        return
    if loc.scheme == "gs":
        # a GCS output stream closed by an unwinding error (or dropped) publishes what it had:
        # upload under a hidden temporary key, then a server-side copy publishes it whole
        tmp = loc.parent.join(f".{loc.name}.{uuid.uuid4().hex[:12]}.tmp")
        try:
            _stream_file(tmp, local_path, chunk)
            loc.fs.copy_file(tmp.path, loc.path)
        except OSError as e:
            raise StorageError(f"cannot write {loc}: {e}") from None
        finally:
            delete(tmp)
        return
    try:
        _stream_file(loc, local_path, chunk)
    except OSError as e:
        raise StorageError(f"cannot write {loc}: {e}") from None


def _stream_file(loc: Location, local_path, chunk: int) -> None:
    with open(local_path, "rb") as src, loc.fs.open_output_stream(loc.path) as f:
        while True:
            block = src.read(chunk)
            if not block:
                break
            f.write(block)


def copy_object(src: Location, dest: Location) -> None:
    """One object copied whole to another key of the same store (server-side on S3 and GCS:
    the bytes do not pass through this process)."""
    try:
        src.fs.copy_file(src.path, dest.path)
    except OSError as e:
        raise StorageError(f"cannot copy {src} to {dest}: {e}") from None


def delete(loc: Location) -> None:
    if loc.scheme == "s3":
        # pyarrow's delete_file writes an empty "<parent>/" marker object when the parent
        # prefix would be left empty; a dataset holds no such objects
        bucket, _, key = loc.path.partition("/")
        try:
            s3_client().delete_object(Bucket=bucket, Key=key)
        except Exception as e:  # botocore's errors: one line, like every other storage failure
            raise StorageError(f"cannot delete {loc}: {e}") from None
        return
    try:
        loc.fs.delete_file(loc.path)
    except FileNotFoundError:
        pass
    except OSError as e:
        if file_info(loc).type != pafs.FileType.NotFound:
            raise StorageError(f"cannot delete {loc}: {e}") from None


def listing(loc: Location) -> list[pafs.FileInfo]:
    """Direct children of a folder/prefix (empty when there is none)."""
    try:
        return loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True, recursive=False))
    except OSError as e:
        raise StorageError(f"cannot list {loc}: {e}") from None


def fingerprint(path) -> tuple:
    """(path, mtime ns, size): a worker cache key that changes when the file is rewritten."""
    if not is_uri(path):
        st = os.stat(path)
        return (str(path), st.st_mtime_ns, st.st_size)
    info = file_info(resolve(path))
    if info.type == pafs.FileType.NotFound:
        raise FileNotFoundError(str(path))
    return (str(path), info.mtime_ns, info.size)


# Per-object requests (deletes, copies) a store gets at once from one process: each is a round
# trip, so a folder of thousands of objects is not removed or copied one object at a time.
STORE_REQUESTS = 16


def map_objects(fn, items) -> list:
    """``[fn(item) for item in items]``, ``STORE_REQUESTS`` at a time, results in order (the
    first failing item in order raises)."""
    items = list(items)
    if len(items) <= 1:
        return [fn(item) for item in items]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(min(STORE_REQUESTS, len(items))) as pool:
        return list(pool.map(fn, items))


def for_each_object(fn, items) -> None:
    """``fn(item)`` for every item, ``STORE_REQUESTS`` at a time (the first error is raised)."""
    map_objects(fn, items)


def remove_tree(path) -> None:
    """Delete a folder/prefix and everything under it (a job's scratch ``_tmp/<run>``)."""
    if not is_uri(path):
        import shutil

        shutil.rmtree(path, ignore_errors=True)
        return
    loc = resolve(path)
    try:
        infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True, recursive=True))
    except OSError as e:
        raise StorageError(f"cannot list {loc}: {e}") from None
    files = [Location(loc.fs, i.path, loc.scheme, loc.prefix) for i in infos if i.type == pafs.FileType.File]
    for_each_object(delete, files)
