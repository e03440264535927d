"""External DataComp subset files: open, check, sort and import them as curate subsets.

DataComp's ``apply_filter.py`` writes a subset as a NumPy array of dtype ``u8,u8`` (each uid's
high and low 64 bits), and its resharder reads either that ``.npy`` or the same records with
no header (it looks for the ``\\x93NUMPY`` magic and otherwise ``np.memmap``-s the file). The
resharder looks uids up with ``searchsorted``, so an unsorted file silently loses samples
there; here an unsorted file is reported and sorted.

``import_subset`` turns such a file into ``DATASET/subsets/NAME/`` (uids.parquet, uids.npy,
_manifest.json), so it works everywhere a subset does: ``curate select``, recipes
(``input: subset:NAME``), the ``subsets_NAME`` SQL view, ``curate reshard --subset NAME``.
The file is memory-mapped and streamed in chunks; an unsorted file is sorted through
bucket files on disk (uids are hashes, so the buckets by leading bits are even), so memory
stays about one chunk whatever the file size.
"""

from __future__ import annotations

import math
import os
import shutil
import time
import tokenize
import uuid
from pathlib import Path
from typing import Iterator

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.errors import DatasetError, InputFileError
from curate.uid import DATACOMP_DTYPE

NPY_MAGIC = b"\x93NUMPY"
CHUNK_ROWS = 4_000_000  # 64 MB of u8,u8 records per chunk
_HEX_ROWS = 1_000_000  # records converted to hex strings at a time (~100 MB of temporaries)
_MAX_BUCKET_BITS = 8  # at most 256 bucket files open at once
_HEX = np.array([f"{i:02x}".encode() for i in range(256)], dtype="S2")
_NIBBLE = np.full(256, 255, np.uint8)
_NIBBLE[np.frombuffer(b"0123456789", np.uint8)] = np.arange(10)
_NIBBLE[np.frombuffer(b"abcdef", np.uint8)] = np.arange(10, 16)


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


def _parquet_records(path: Path, out: Path) -> np.ndarray:
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
        for batch in pf.iter_batches(columns=["uid"], batch_size=_HEX_ROWS):
            col = batch.column(0)
            ok = pc.fill_null(pc.match_substring_regex(col, r"^[0-9a-f]{32}$"), False)
            if not pc.all(ok).as_py():
                i = pc.index(ok, False).as_py()
                raise InputFileError(str(path), f"row {row + i}: {col[i].as_py()!r} is not a 32-char lowercase hex uid")
            f.write(records_from_hex(col).tobytes())
            row += len(col)
    return np.memmap(out, DATACOMP_DTYPE, mode="r") if row else np.zeros(0, DATACOMP_DTYPE)


def first_unsorted(arr: np.ndarray, chunk_rows: int = CHUNK_ROWS) -> int | None:
    """Index of the first record smaller than the one before it, or None when sorted."""
    prev = None
    for start in range(0, len(arr), chunk_rows):
        c = np.asarray(arr[start:start + chunk_rows])
        hi, lo = c["f0"], c["f1"]
        down = (hi[1:] < hi[:-1]) | ((hi[1:] == hi[:-1]) & (lo[1:] < lo[:-1]))
        if prev is not None and (hi[0] < prev[0] or (hi[0] == prev[0] and lo[0] < prev[1])):
            return start
        if down.any():
            return start + 1 + int(np.argmax(down))
        prev = (hi[-1], lo[-1])
    return None


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


def records_from_hex(uids: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """``u8,u8`` records of 32-char lowercase hex uids (inverse of ``hex_uids``)."""
    raw = np.asarray(pc.cast(uids, pa.large_binary()).to_numpy(zero_copy_only=False).astype("S32"))
    digits = _NIBBLE[raw.view(np.uint8).reshape(len(raw), 32)].astype(np.uint64)
    out = np.empty(len(raw), DATACOMP_DTYPE)
    weights = np.uint64(16) ** np.arange(15, -1, -1, dtype=np.uint64)
    out["f0"] = digits[:, :16] @ weights
    out["f1"] = digits[:, 16:] @ weights
    return out


def write_uid_table(path: str | os.PathLike, out: str | os.PathLike, chunk_rows: int = CHUNK_ROWS) -> int:
    """A DataComp subset file (.npy or raw ``u8,u8``) as a one-column ``uid`` Parquet file at
    ``out``, for the engine to join against: streamed a chunk at a time from the memmap, in the
    file's order (membership needs no sort), never a Python list. Warns, as ``read_subset``
    does, when the file is unsorted (DataComp's resharder would drop samples). Returns rows."""
    from curate.progress import info
    from curate.tables.dataset import PARQUET_OPTIONS, atomic_path

    arr, _ = open_subset_array(path)
    bad = first_unsorted(arr, chunk_rows)
    if bad is not None:
        info(unsorted_warning(path, bad))
    schema = pa.schema([("uid", pa.string())])
    with atomic_path(out) as tmp:
        with pq.ParquetWriter(tmp, schema, **PARQUET_OPTIONS) as writer:
            for s in range(0, len(arr), _HEX_ROWS):
                writer.write_table(pa.Table.from_arrays([hex_uids(np.asarray(arr[s:s + _HEX_ROWS]))], schema=schema))
            if len(arr) == 0:
                writer.write_table(schema.empty_table())
    return len(arr)


def _write_npy_header(f, n: int) -> None:
    np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(DATACOMP_DTYPE),
                                            "fortran_order": False, "shape": (n,)})


class _SubsetWriter:
    """uids.parquet and uids.npy of a subset written chunk by chunk (records in sorted order)."""

    def __init__(self, folder: Path, n: int):
        from curate.tables import load_schema
        from curate.tables.dataset import PARQUET_OPTIONS

        folder.mkdir(parents=True, exist_ok=True)
        self.schema = load_schema("subset").arrow()
        self.parquet = pq.ParquetWriter(folder / "uids.parquet", self.schema, **PARQUET_OPTIONS)
        self.npy = open(folder / "uids.npy", "wb")
        _write_npy_header(self.npy, n)
        self.n = n
        self.rows = self.distinct = 0
        self._last: tuple | None = None

    def write(self, records: np.ndarray) -> None:
        if not len(records):
            return
        self.npy.write(np.ascontiguousarray(records).tobytes())
        for s in range(0, len(records), _HEX_ROWS):
            part = hex_uids(records[s:s + _HEX_ROWS])
            self.parquet.write_table(pa.Table.from_arrays([part], schema=self.schema), row_group_size=65536)
        same = (records["f0"][1:] == records["f0"][:-1]) & (records["f1"][1:] == records["f1"][:-1])
        first_new = self._last is None or (records["f0"][0], records["f1"][0]) != self._last
        self.distinct += int(len(records) - 1 - same.sum()) + int(first_new)
        self.rows += len(records)
        self._last = (records["f0"][-1], records["f1"][-1])

    def close(self) -> None:
        if self.rows != self.n:  # the .npy header promised n records
            raise DatasetError(f"subset import wrote {self.rows} uids, expected {self.n}")
        self.parquet.close()
        self.npy.flush()
        os.fsync(self.npy.fileno())
        self.npy.close()


def _connect(dataset):
    """A DuckDB connection that reads ``dataset``'s shards (an object store through fsspec)."""
    import duckdb

    con = duckdb.connect()
    if dataset.remote:
        from curate import storage

        con.register_filesystem(storage.fsspec_filesystem(dataset.location))
    return con


def _unknown_uids(dataset, parquet: Path) -> tuple[int, str | None]:
    """(uids of the subset file not in samples, the first of them); (0, None) without samples."""
    import duckdb

    if not dataset.has_table("samples"):
        return 0, None
    con = _connect(dataset)
    try:
        files = [str(p) for p in dataset.shards("samples")]
        n, first = con.sql(
            "SELECT count(*), min(s.uid) FROM read_parquet($sub) s ANTI JOIN read_parquet($samples) k USING (uid)",
            params={"sub": str(parquet), "samples": files}).fetchall()[0]
    finally:
        con.close()
    return int(n), first


def _drop_unknown(dataset, folder: Path, known: int, chunk_rows: int) -> tuple[int, int]:
    """Rewrite the subset in ``folder`` keeping only uids that are in samples (sorted);
    returns its (rows, distinct)."""
    import duckdb

    src = folder / "uids.all.parquet"
    (folder / "uids.parquet").rename(src)
    (folder / "uids.npy").unlink()
    con = _connect(dataset)
    try:
        reader = con.sql(
            "SELECT s.uid FROM read_parquet($sub) s SEMI JOIN read_parquet($samples) k USING (uid) ORDER BY s.uid",
            params={"sub": str(src), "samples": [str(p) for p in dataset.shards("samples")]}).to_arrow_reader(chunk_rows)
        writer = _SubsetWriter(folder, known)
        for batch in reader:
            writer.write(records_from_hex(batch.column(0)))
        writer.close()
    finally:
        con.close()
    src.unlink()
    return writer.rows, writer.distinct


def _import_via_local(dataset, name: str, path, allow_unknown: bool, chunk_rows: int) -> dict:
    """``import_subset`` with a URI source or dataset: the source file is fetched to a local
    temporary file (16 bytes a uid), the subset is made in a local staging folder (checked
    against the dataset's samples, read where they are), then its files and run manifest are
    uploaded whole (``uids.parquet`` with its commit marker)."""
    import tempfile

    from curate import storage
    from curate.subset import subset_dir
    from curate.tables import Dataset, atomic_write_bytes

    with tempfile.TemporaryDirectory(prefix="curate-import-") as tmp:
        src = path
        if storage.is_uri(path):
            src_uri = storage.join(str(path), "uids.parquet") if storage.is_dir(path) else str(path)
            if not storage.is_file(src_uri):
                raise InputFileError(src_uri, "subset file not found")
            src = Path(tmp) / "source" / storage.basename(src_uri)
            src.parent.mkdir()
            src.write_bytes(storage.read_bytes(src_uri))
        if not dataset.remote:
            return import_subset(dataset, name, src, allow_unknown, chunk_rows, source_name=str(path))
        stage = Dataset(Path(tmp) / "stage")
        stage.root.mkdir()
        out = import_subset(stage, name, src, allow_unknown, chunk_rows, source_name=str(path), samples=dataset)
        final = subset_dir(dataset, name)
        for f in ("uids.npy", "_manifest.json", "uids.parquet"):  # the table file last
            atomic_write_bytes(storage.join(final, f), (subset_dir(stage, name) / f).read_bytes())
        for f in sorted((stage.root / "_runs").rglob("*.json")):
            atomic_write_bytes(dataset.path(f.relative_to(stage.root).as_posix()), f.read_bytes())
    return {**out, "path": str(final)}


def import_subset(dataset, name: str, path: str | os.PathLike, allow_unknown: bool = False,
                  chunk_rows: int = CHUNK_ROWS, source_name: str | None = None, samples=None) -> dict:
    """Write ``subsets/<name>/`` from a DataComp subset file (.npy or raw ``u8,u8``), or a
    curate subset (folder or ``uids.parquet``, e.g. from another dataset).

    Returns counts: rows, distinct, format, sorted_input (False: the file was unsorted and is
    stored sorted; ``first_unsorted`` is the first out-of-order row), unknown_uid (uids not in
    samples: an error unless ``allow_unknown``, which drops them). The subset folder is
    replaced as a whole, never left half-written.
    """
    import json

    from curate.manifest import RunManifest
    from curate.progress import info
    from curate.subset import subset_dir
    from curate.tables import atomic_write_bytes

    from curate import storage

    if dataset.remote or storage.is_uri(path):
        return _import_via_local(dataset, name, path, allow_unknown, chunk_rows)
    t0 = time.perf_counter()
    final = subset_dir(dataset, name)  # the one place subset names become paths
    root = final.parent
    tmp = root / f".{name}.import-{uuid.uuid4().hex}"
    try:
        source = Path(path)
        if source.is_dir():  # a curate subset folder
            source = source / "uids.parquet"
        if is_parquet(source):
            arr, fmt = _parquet_records(source, tmp / "_parquet.u8u8"), "parquet"
        else:
            arr, fmt = open_subset_array(source)
        bad = first_unsorted(arr, chunk_rows)
        if bad is not None:
            info(unsorted_warning(path, bad))
        writer = _SubsetWriter(tmp, len(arr))
        chunks = (sorted_chunks(arr, tmp / "_sort", chunk_rows) if bad is not None else
                  (np.asarray(arr[s:s + chunk_rows]) for s in range(0, len(arr), chunk_rows)))
        for c in chunks:
            writer.write(c)
        writer.close()
        shutil.rmtree(tmp / "_sort", ignore_errors=True)
        (tmp / "_parquet.u8u8").unlink(missing_ok=True)
        unknown, first_unknown = _unknown_uids(samples or dataset, tmp / "uids.parquet")
        if unknown and not allow_unknown:
            raise DatasetError(f"{source_name or path}: {unknown} uids are not in samples of {(samples or dataset).root} (first: "
                               f"{first_unknown}); pass --allow-unknown to drop them")
        count, distinct = writer.rows, writer.distinct
        if unknown:
            count, distinct = _drop_unknown(samples or dataset, tmp, writer.rows - unknown, chunk_rows)
        counts = {"file_rows": len(arr), "unknown_uid": unknown, "selected": count}
        meta = {"stage": "import", "name": name, "source": source_name or str(Path(path).resolve()), "format": fmt,
                "sorted_input": bad is None, "first_unsorted": bad, "counts": counts,
                "count": count, "distinct": distinct, "seconds": round(time.perf_counter() - t0, 4)}
        atomic_write_bytes(tmp / "_manifest.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
        old = root / f".{name}.old-{uuid.uuid4().hex}"
        if final.exists():
            final.rename(old)
        tmp.rename(final)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    m = RunManifest(f"select-{name}", {"from_file": source_name or str(path), "allow_unknown": allow_unknown})
    m["counts"] = counts
    m["outputs"] = {"subset": f"subsets/{name}"}
    m.write(dataset)
    return {**meta, "path": str(final)}
