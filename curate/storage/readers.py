"""What pyarrow and numpy readers take, for a local path or a URI: open files and streams,
Parquet files and tables, ``.npy`` arrays (and their bytes for a whole-object write)."""

from __future__ import annotations

import io

from curate.storage.location import is_uri, resolve
from curate.storage.objects import read_bytes
from curate.storage.settings import StorageError


def open_input(path):
    """What a pyarrow/numpy reader takes: a local path as it is, a URI opened as a
    random-access file on its filesystem (with the configured settings)."""
    if not is_uri(path):
        return path
    return _open_object(path, "open_input_file")


def open_input_stream(path):
    """A sequential reader of a file or object (a tar streamed once, no seeks)."""
    if not is_uri(path):
        return open(path, "rb")
    return _open_object(path, "open_input_stream")


STREAM_BLOCK = 4 << 20  # bytes asked of a store's input stream at a time


def open_binary(path):
    """A buffered binary reader of a file or object, read once from start to end (lines
    iterate, ``read`` works; no seeks): how the text and tar readers stream an input object
    instead of copying it."""
    if not is_uri(path):
        return open(path, "rb")
    try:
        return io.BufferedReader(_Blocks(_open_object(path, "open_input_stream")), buffer_size=1 << 20)
    except StorageError as e:
        raise OSError(str(e)) from None  # readers report an input they cannot open as an OSError


class _Blocks(io.RawIOBase):
    """A store's input stream read ``STREAM_BLOCK`` bytes at a time, whatever the reader above
    asks for: each read of an object stream can be a request of its own, and a text reader
    asks for 8 KiB at a time (a 35 MiB TSV object took 20x its local time that way)."""

    def __init__(self, stream):
        super().__init__()
        self._stream, self._block, self._at = stream, b"", 0

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._at >= len(self._block):
            self._block, self._at = self._stream.read(STREAM_BLOCK), 0
        n = min(len(b), len(self._block) - self._at)
        b[:n] = self._block[self._at:self._at + n]
        self._at += n
        return n

    def close(self) -> None:
        if not self.closed:
            self._stream.close()
        super().close()


def _open_object(path, how: str):
    """``fs.open_input_file`` / ``open_input_stream`` of a URI; a missing object stays
    FileNotFoundError, any other failure is one StorageError naming it."""
    loc = resolve(path)
    try:
        return getattr(loc.fs, how)(loc.path)
    except FileNotFoundError:
        raise
    except OSError as e:
        raise StorageError(f"cannot read {loc}: {e}") from None


def read_parquet(path, columns: list[str] | None = None, **kw):
    """``pyarrow.parquet.read_table`` of one file, local or on a store."""
    import pyarrow.parquet as pq

    src = open_input(path)
    try:
        return pq.read_table(src, columns=columns, **kw)
    finally:
        if src is not path:
            src.close()


def parquet_file(path):
    """``pyarrow.parquet.ParquetFile`` of one file, local or on a store."""
    import pyarrow.parquet as pq

    return pq.ParquetFile(open_input(path))


def load_npy(path, mmap: bool = False):
    """A ``.npy`` array: memory-mapped from a local file when asked, read whole from a store
    (callers keep these bounded by one shard or one small table)."""
    import io

    import numpy as np

    if not is_uri(path):
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    return np.load(io.BytesIO(read_bytes(path)), allow_pickle=False)


def npy_bytes(array) -> bytes:
    import io

    import numpy as np

    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array), allow_pickle=False)
    return buf.getvalue()
