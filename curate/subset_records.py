"""DataComp's uid records (dtype ``u8,u8``: each uid's high and low 64 bits, as
``apply_filter.py`` writes them): hex conversion both ways, the sortedness check, sorting
(in memory, or through bucket files on disk for a file larger than a chunk), and the ``.npy``
header of a streamed array.

DataComp's resharder looks uids up with ``searchsorted``, so an unsorted file silently loses
samples there; curate reports an unsorted file and sorts it. Uids are hashes, so buckets by
leading bits are even and memory stays about one chunk whatever the file size.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.uid import DATACOMP_DTYPE

CHUNK_ROWS = 4_000_000  # 64 MB of u8,u8 records per chunk
HEX_ROWS = 1_000_000  # records converted to hex strings at a time (~100 MB of temporaries)
_MAX_BUCKET_BITS = 8  # at most 256 bucket files open at once
_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")
# two hex characters read as one little-endian uint16 -> the byte they spell, NOT_HEX otherwise
# (one lookup a byte: half the time of a lookup a character and the packing of nibbles)
NOT_HEX = 0xFFFF
_DIGITS = np.frombuffer(b"0123456789abcdef", np.uint8).astype(np.uint16)
_HEX_PAIR = np.full(1 << 16, NOT_HEX, np.uint16)
_HEX_PAIR[_DIGITS[:, None] | (_DIGITS[None, :] << 8)] = np.arange(256, dtype=np.uint16).reshape(16, 16)


def first_unsorted(arr: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> int | None:
    """Index of the first record smaller than the one before it, or None when sorted."""
    return first_unsorted_in(np.asarray(arr[s:s + chunk_rows]) for s in range(0, len(arr), chunk_rows))


class RecordOrder:
    """What consecutive chunks of records fed in order say of their order: ``first_unsorted``,
    the index of the first record smaller than the one before it (None while sorted), and
    ``repeats``, the records equal to the one before them (on a sorted run, ``rows - repeats``
    is the distinct count)."""

    def __init__(self):
        self.rows, self.repeats = 0, 0
        self.first_unsorted: int | None = None
        self._last: tuple | None = None

    def feed(self, c: np.ndarray) -> None:
        if not len(c):
            return
        hi, lo = c["f0"], c["f1"]
        same_hi = hi[1:] == hi[:-1]
        down = (hi[1:] < hi[:-1]) | (same_hi & (lo[1:] < lo[:-1]))
        self.repeats += int((same_hi & (lo[1:] == lo[:-1])).sum())
        if self._last is not None:
            self.repeats += int((hi[0], lo[0]) == self._last)
            if self.first_unsorted is None and (hi[0], lo[0]) < self._last:
                self.first_unsorted = self.rows
        if self.first_unsorted is None and down.any():
            self.first_unsorted = self.rows + 1 + int(np.argmax(down))
        self.rows += len(c)
        self._last = (hi[-1], lo[-1])


def first_unsorted_in(chunks: Iterable[np.ndarray]) -> int | None:
    """``first_unsorted`` over consecutive chunks of records (e.g. ``file_chunks``)."""
    order = RecordOrder()
    for c in chunks:
        order.feed(c)
        if order.first_unsorted is not None:
            return order.first_unsorted
    return None


STREAM_ROWS = 262_144  # records read at a time from a records file (4 MB): the reader's memory, whatever the file
# uids parsed at a time from a Parquet subset: one row group of curate's uids.parquet. Its
# temporaries (the decoded strings, the syntax check, the records: ~11 MB) are reached by any
# subset over 65,536 rows, so the reader's peak does not grow with the subset beyond that
PARSE_ROWS = 65_536


def file_chunks(path: str | os.PathLike, chunk_rows: int = STREAM_ROWS) -> Iterator[np.ndarray]:
    """The ``u8,u8`` records of a raw records file in chunks read into memory (not memory-mapped:
    a mapped file's touched pages count in the process's resident memory until it is closed)."""
    with open(path, "rb") as f:
        while True:
            c = np.fromfile(f, DATACOMP_DTYPE, count=chunk_rows)
            if not len(c):
                return
            yield c


def sort_records(a: np.ndarray) -> np.ndarray:
    """``u8,u8`` records in DataComp's order (by high, then low 64 bits). Sorts by the high
    half (one uint64 argsort, ~2x faster than a two-key lexsort), then orders the rare runs
    of equal high halves (repeats) by their low half."""
    s = a[np.argsort(a["f0"])]
    eq = s["f0"][1:] == s["f0"][:-1]
    if eq.any():
        run = np.zeros(len(s), bool)
        run[1:] |= eq
        run[:-1] |= eq
        idx = np.flatnonzero(run)
        sub = s[idx]
        s[idx] = sub[np.lexsort((sub["f1"], sub["f0"]))]
    return s


def unsorted_warning(path, index: int) -> str:
    return (f"warning: {path} is not sorted (row {index} is smaller than the row before it); "
            f"sorting it. DataComp's resharder needs a sorted file: unsorted, it silently drops samples")


def sorted_chunks(arr: np.ndarray, work_dir: Path, chunk_rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
    """The records of ``arr`` in sorted order, as consecutive chunks. Small inputs are sorted
    in memory; larger ones are split by the leading bits of the uid into bucket files,
    each then sorted on its own."""
    n = len(arr)
    if n <= chunk_rows:
        if n:
            yield sort_records(np.array(arr))
        return
    bits = min(_MAX_BUCKET_BITS, max(1, math.ceil(math.log2(2 * n / chunk_rows))))
    shift = np.uint64(64 - bits)
    work_dir.mkdir(parents=True, exist_ok=True)
    paths = [work_dir / f"bucket-{i:04d}.u8u8" for i in range(1 << bits)]
    files = [open(p, "wb") for p in paths]
    try:
        for start in range(0, n, chunk_rows):
            c = np.asarray(arr[start:start + chunk_rows])
            b = (c["f0"] >> shift).astype(np.int64)
            order = np.argsort(b, kind="stable")
            c, b = c[order], b[order]
            bounds = np.searchsorted(b, np.arange((1 << bits) + 1))
            for i, f in enumerate(files):
                if bounds[i + 1] > bounds[i]:
                    f.write(c[bounds[i]:bounds[i + 1]].tobytes())
    finally:
        for f in files:
            f.close()
    for p in paths:
        a = np.fromfile(p, DATACOMP_DTYPE)
        p.unlink()
        if len(a):
            yield sort_records(a)


def hex_uids(a: np.ndarray) -> pa.StringArray:
    """32-char lowercase hex uids of ``u8,u8`` records (vectorised ``f"{hi:016x}{lo:016x}"``)."""
    n = len(a)
    be = np.empty((n, 2), ">u8")
    be[:, 0], be[:, 1] = a["f0"], a["f1"]
    data = _HEX[be.view(np.uint8).reshape(n, 16)].tobytes()
    offsets = np.arange(0, 32 * (n + 1), 32, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(data)).cast(pa.string())


class NotAUid(ValueError):
    """A value that is not a 32-char lowercase hex uid; ``row`` is its index in the array."""

    def __init__(self, row: int):
        super().__init__(f"row {row} is not a 32-char lowercase hex uid")
        self.row = row


def records_from_hex(uids: pa.Array | pa.ChunkedArray, checked: bool = False) -> np.ndarray:
    """``u8,u8`` records of 32-char lowercase hex uids (inverse of ``hex_uids``): the uid bytes
    read from Arrow's buffer (no Python object per uid), each two hex digits looked up as one
    byte and read as big-endian 64-bit halves; temporaries ~100 bytes a uid. ``checked``: a
    null, a value that is not 32 characters or a character outside ``0-9a-f`` raises
    ``NotAUid`` naming the first such row (the rule of ``curate.uid.UID_RE``, read off the
    bytes this decodes anyway: a regex over every uid cost a fifth of a subset write)."""
    arr = uids.combine_chunks() if isinstance(uids, pa.ChunkedArray) else uids
    if checked and arr.null_count:
        raise NotAUid(int(np.flatnonzero(arr.is_null().to_numpy(zero_copy_only=False))[0]))
    try:
        fixed = pc.cast(arr, pa.binary(32))  # refuses any other length: the length check
    except pa.ArrowInvalid:
        if not checked:
            raise
        raise NotAUid(int(np.flatnonzero(pc.binary_length(arr).to_numpy() != 32)[0])) from None
    n = len(fixed)
    pairs = np.frombuffer(fixed.buffers()[1], "<u2", count=16 * (fixed.offset + n))[16 * fixed.offset:]
    values = _HEX_PAIR[pairs]
    if checked and n and values.max() == NOT_HEX:
        raise NotAUid(int(np.flatnonzero((values.reshape(n, 16) == NOT_HEX).any(axis=1))[0]))
    halves = values.astype(np.uint8).view(">u8").reshape(n, 2)
    out = np.empty(n, DATACOMP_DTYPE)
    out["f0"], out["f1"] = halves[:, 0], halves[:, 1]
    return out


def write_npy_header(f, n: int) -> None:
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(DATACOMP_DTYPE),
                                            "fortran_order": False, "shape": (n,)})
