"""What pyarrow and numpy readers take, for a local path or a URI: open files and streams,
Parquet files and tables, ``.npy`` arrays (and their bytes for a whole-object write), ``.npz``
archives read in place."""

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


# Bytes asked of a store per request when an object is read from start to end. Each read of
# a store's input stream is a ranged request of its own, and readers read small: tarfile's
# stream mode 10 KiB at a time (a 19 MiB tar of images was 1,972 requests, 14-18 s on a
# loopback store; 6 requests, 0.12 s in these blocks), a text reader 8 KiB.
STREAM_BLOCK = 4 << 20


def open_input_stream(path):
    """A buffered binary reader of a file or object, read once from start to end (``read``,
    lines; no seeks): a tar streamed, a text input read, an object hashed or copied. A store
    object is fetched ``STREAM_BLOCK`` bytes per request whatever the reader above asks for,
    and as stored (no decompression guessed from its name)."""
    if not is_uri(path):
        return open(path, "rb")
    raw = _open_object(path, "open_input_stream", compression=None, buffer_size=STREAM_BLOCK)
    return io.BufferedReader(raw, buffer_size=1 << 20)


def open_binary(path):
    """``open_input_stream`` for the ingest readers, which report an input they cannot open
    as an OSError: how the text and tar readers stream an input object instead of copying it."""
    try:
        return open_input_stream(path)
    except StorageError as e:
        raise OSError(str(e)) from None


RANDOM_BLOCK = 64 << 10  # bytes a random-access reader of an object asks for at least


def open_random(path):
    """A seekable buffered binary reader of a file or object, for readers that jump about (a
    zip's directory, then its members' headers). On a store each read of a random-access file
    is a ranged request: reads smaller than ``RANDOM_BLOCK`` are served from one request of that
    size (a zip's header reads are a few dozen bytes each); larger reads are one request."""
    if not is_uri(path):
        return open(path, "rb")
    return io.BufferedReader(_open_object(path, "open_input_file"), buffer_size=RANDOM_BLOCK)


# An .npz object up to this size is fetched whole, in one request (a DataComp shard's archive of
# 10,000 rows of ViT-B/32 and ViT-L/14 vectors is 51 MB); a larger one member by member, so a
# task holds one member's bytes at a time.
NPZ_WHOLE_BYTES = 256 << 20


class NpzArchive:
    """The arrays of an ``.npz`` (numpy's zip of ``.npy`` members), a local file or an object
    read in place: ``files`` (the array names), ``archive[name]`` reads that member whole. On a
    store an archive up to ``NPZ_WHOLE_BYTES`` is one request; a larger one costs a few small
    requests for its directory and, per member, one large ranged read and at most two of
    ``RANDOM_BLOCK`` (its headers, its tail). numpy's own reader asks for 256 KiB at a time: 181
    requests and 6.3 s for a 40 MB archive on a loopback store, against 0.6 s member by member.
    Use as a context manager."""

    def __init__(self, path):
        import zipfile

        self._src = _npz_source(path)
        try:
            self._zip = zipfile.ZipFile(self._src)
        except BaseException:
            self._src.close()
            raise
        self.files = [n[:-4] for n in self._zip.namelist() if n.endswith(".npy")]

    def __getitem__(self, name: str):
        import numpy as np

        if name not in self.files:
            raise KeyError(f"{name} is not an array in the archive")
        data = self._zip.read(name + ".npy")  # CRC checked; a compressed member inflated
        return np.lib.format.read_array(io.BytesIO(data), allow_pickle=False)

    def close(self) -> None:
        self._zip.close()
        self._src.close()

    def __enter__(self) -> NpzArchive:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _npz_source(path):
    """What an ``NpzArchive`` reads: a local file; a store object's bytes (up to
    ``NPZ_WHOLE_BYTES``), else the object as a buffered random-access file."""
    if not is_uri(path):
        return open(path, "rb")
    f = _open_object(path, "open_input_file")
    if f.size() > NPZ_WHOLE_BYTES:
        return io.BufferedReader(f, buffer_size=RANDOM_BLOCK)
    with f:
        return io.BytesIO(f.read())


def open_npz(path) -> NpzArchive:
    """An ``.npz`` archive's arrays, local or read in place from a store (no copy); see
    ``NpzArchive``."""
    return NpzArchive(path)


def _open_object(path, how: str, **options):
    """``fs.open_input_file`` / ``open_input_stream`` of a URI; a missing object stays
    FileNotFoundError, any other failure is one StorageError naming it."""
    loc = resolve(path)
    try:
        return getattr(loc.fs, how)(loc.path, **options)
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
