"""External subset files: open and check a DataComp subset file (``.npy`` or raw ``u8,u8``
records), tell a Parquet subset by its magic bytes, read a Parquet subset's uids as records,
and turn a DataComp file into a ``uid`` Parquet file the engine joins against.

DataComp's ``apply_filter.py`` writes a subset as a NumPy array of dtype ``u8,u8`` (each uid's
high and low 64 bits), and its resharder reads either that ``.npy`` or the same records with
no header (it looks for the ``\\x93NUMPY`` magic and otherwise ``np.memmap``-s the file).
``curate.subset_import`` makes a curate subset of one; ``curate.subset_records`` holds the
record operations (hex, sort).
"""

from __future__ import annotations

import os
import re
import tokenize
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import InputFileError
from curate.subset_records import (HEX_ROWS, PARSE_ROWS, NotAUid, RecordOrder, hex_uids, records_from_hex,
                                   unsorted_warning)
from curate.uid import DATACOMP_DTYPE

NPY_MAGIC = b"\x93NUMPY"
_TEXT_UIDS = re.compile(rb"[0-9A-Fa-fxX\s,;\"']+")  # hex uids as text: one a line, or a CSV column


def open_subset_array(path: str | os.PathLike) -> tuple[np.ndarray, str]:
    """A DataComp subset file as a read-only ``u8,u8`` memmap, and its format (``npy`` or
    ``raw``). Anything else is an ``InputFileError`` naming the file."""
    p = Path(path)
    if not p.is_file():
        raise InputFileError(str(p), "subset file not found" if not p.exists() else "not a file")
    with open(p, "rb") as f:
        head = f.read(len(NPY_MAGIC))
    if head == NPY_MAGIC:
        try:
            arr = np.load(p, mmap_mode="r", allow_pickle=False)
        except (ValueError, TypeError, SyntaxError, EOFError, OSError, tokenize.TokenError) as e:
            # pickled objects, a garbled header, data shorter than the header says
            raise InputFileError(str(p), f"not a readable .npy subset ({e})") from None
        if arr.dtype != DATACOMP_DTYPE:
            raise InputFileError(str(p), f"dtype {arr.dtype} is not DataComp's u8,u8 (two little-endian "
                                         f"uint64 per uid, as apply_filter.py writes)")
        if arr.ndim != 1:
            raise InputFileError(str(p), f"a subset is a 1-D array, this one has shape {arr.shape}")
        return arr, "npy"
    size = p.stat().st_size
    if size == 0:
        raise InputFileError(str(p), "empty file (a raw DataComp subset holds 16 bytes per uid)")
    with open(p, "rb") as f:
        sniff = f.read(4096)
    if _TEXT_UIDS.fullmatch(sniff) and any(c in sniff for c in b"\r\n\t ,"):
        # 16 binary bytes per uid are never all hex digits and separators
        raise InputFileError(str(p), "a text list of uids, not a DataComp subset (16 binary bytes per uid, "
                                     "apply_filter.py's u8,u8 array); give the uids as a Parquet file with a "
                                     "'uid' column, or as a .npy of dtype u8,u8")
    if size % DATACOMP_DTYPE.itemsize:
        raise InputFileError(str(p), f"no .npy header and a size of {size} bytes, not a multiple of 16: "
                                     f"neither a DataComp .npy nor a raw u8,u8 memmap")
    return np.memmap(p, DATACOMP_DTYPE, mode="r"), "raw"


def is_uid_parquet(path) -> bool:
    """Whether ``path`` is a Parquet file (by name or magic bytes); one without a ``uid``
    column, or unreadable, is a one-line DatasetError naming it."""
    import pyarrow as pa

    from curate import storage
    from curate.errors import DatasetError

    if not (str(path).endswith(".parquet") or is_parquet(path)):
        return False
    try:
        names = storage.parquet_file(path).schema_arrow.names
    except (pa.ArrowInvalid, OSError) as e:
        raise DatasetError(f"{path}: not a subset Parquet with a uid column ({e})") from None
    if "uid" not in names:
        raise DatasetError(f"{path}: not a subset Parquet with a uid column")
    return True


def is_parquet(path) -> bool:
    """Whether ``path`` (a path or URI) is a file starting with Parquet's magic bytes."""
    from curate import storage

    if storage.is_uri(path):
        if not storage.is_file(path):
            return False
        loc = storage.resolve(path)
        with loc.fs.open_input_file(loc.path) as f:
            return f.read(4) == b"PAR1"
    path = Path(path)
    if not path.is_file():
        return False
    with open(path, "rb") as f:
        return f.read(4) == b"PAR1"


def parquet_records(path: Path, out: Path) -> np.ndarray:
    """The ``uid`` column of a Parquet subset (curate's ``uids.parquet``) as ``u8,u8`` records
    in a file beside the import, streamed a row group at a time; memory-mapped."""
    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as e:
        raise InputFileError(str(path), f"not a readable Parquet file ({e})") from None
    field = pf.schema_arrow.field("uid") if "uid" in pf.schema_arrow.names else None
    if field is None or not pa.types.is_string(field.type):
        raise InputFileError(str(path), "a Parquet subset needs a string column 'uid'")
    out.parent.mkdir(parents=True, exist_ok=True)
    row = 0
    with open(out, "wb") as f:
        for batch in pf.iter_batches(columns=["uid"], batch_size=PARSE_ROWS):
            col = batch.column(0)
            try:  # checked on the bytes it decodes (a regex per uid cost as much again)
                f.write(records_from_hex(col, checked=True).tobytes())
            except NotAUid as e:
                raise InputFileError(str(path), f"row {row + e.row}: {col[e.row].as_py()!r} is not a 32-char "
                                                "lowercase hex uid") from None
            row += len(col)
    return np.memmap(out, DATACOMP_DTYPE, mode="r") if row else np.zeros(0, DATACOMP_DTYPE)


def check_uid_parquet(path) -> int:
    """A uid Parquet file from elsewhere (not a subset curate wrote), read once a batch at a
    time: every uid 32-char lowercase hex, none null; a one-line error names the file and row.
    Returns its rows."""
    from curate import storage

    row = 0
    for batch in storage.parquet_file(path).iter_batches(columns=["uid"], batch_size=PARSE_ROWS):
        col = batch.column(0)
        if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
            raise InputFileError(str(path), f"column 'uid' has type {col.type}, expected text")
        try:
            records_from_hex(col, checked=True)
        except NotAUid as e:
            raise InputFileError(str(path), f"row {row + e.row}: {col[e.row].as_py()!r} is not a 32-char "
                                            "lowercase hex uid") from None
        row += len(col)
    return row


def write_uid_table(path: str | os.PathLike, out: str | os.PathLike) -> tuple[int, bool]:
    """A DataComp subset file (.npy or raw ``u8,u8``) as a one-column ``uid`` Parquet file at
    ``out``, for the engine to join against: streamed a chunk at a time from the memmap, in the
    file's order (membership needs no sort), never a Python list. Warns, as ``read_subset``
    does, when the file is unsorted (DataComp's resharder would drop samples). Returns (rows,
    whether each uid appears once: known for a sorted file, by its neighbours)."""
    from curate.progress import info
    from curate.tables.atomic import atomic_stream, parquet_options

    arr, _ = open_subset_array(path)
    schema = pa.schema([("uid", pa.string())])
    order = RecordOrder()  # sortedness and repeats seen in the one pass that converts
    with atomic_stream(out) as sink:  # on a store, streamed up during the pass
        with pq.ParquetWriter(sink, schema, **parquet_options(schema)) as writer:
            for s in range(0, len(arr), HEX_ROWS):
                records = np.asarray(arr[s:s + HEX_ROWS])
                order.feed(records)
                writer.write_table(pa.Table.from_arrays([hex_uids(records)], schema=schema))
            if len(arr) == 0:
                writer.write_table(schema.empty_table())
    if order.first_unsorted is not None:
        info(unsorted_warning(path, order.first_unsorted))
    return len(arr), order.first_unsorted is None and order.repeats == 0
