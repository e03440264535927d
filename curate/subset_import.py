"""``import_subset``: an external subset file (DataComp ``.npy`` or raw ``u8,u8``, or a curate
``uids.parquet``) -> ``DATASET/subsets/NAME/`` (uids.parquet, uids.npy, _manifest.json), so it
works everywhere a subset does: ``curate select``, recipes (``input: subset:NAME``), the
``subsets_NAME`` SQL view, ``curate reshard --subset NAME``.

The file is memory-mapped and streamed in chunks; an unsorted file is reported and sorted
through bucket files on disk (``curate.subset_records``), so memory stays about one chunk
whatever the file size. Uids not in the dataset's samples are an error, or dropped when asked;
the engine's tasks check them, one uid range each, so the driver never reads ``samples``.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import numpy as np

from curate.errors import DatasetError, InputFileError
from curate.subset_file import is_parquet, open_subset_array, parquet_records
from curate.subset_records import (CHUNK_ROWS, HEX_ROWS, RecordOrder, first_unsorted, hex_uids, records_from_hex,
                                   sorted_chunks, unsorted_warning, write_npy_header)


class _SubsetWriter:
    """uids.parquet and uids.npy of a subset written chunk by chunk (records in sorted order)."""

    def __init__(self, folder: Path, n: int):
        from curate.subset import UidRowGroups

        folder.mkdir(parents=True, exist_ok=True)
        # a chunk's uids are ~15 row groups: they may all wait for the encoding thread while the
        # next chunk is converted
        self.parquet = UidRowGroups(folder / "uids.parquet", ahead=2 * (HEX_ROWS // 65536 + 1))
        self.npy = open(folder / "uids.npy", "wb")
        write_npy_header(self.npy, n)
        self.n = n
        self.rows = self.distinct = 0
        self._order = RecordOrder()

    def write(self, records: np.ndarray) -> None:
        if not len(records):
            return
        self.npy.write(np.ascontiguousarray(records).tobytes())
        for s in range(0, len(records), HEX_ROWS):
            self.parquet.add(hex_uids(records[s:s + HEX_ROWS]))
        self._order.feed(records)
        self.rows = self._order.rows
        self.distinct = self.rows - self._order.repeats

    def close(self) -> None:
        if self.rows != self.n:  # the .npy header promised n records
            raise DatasetError(f"subset import wrote {self.rows} uids, expected {self.n}")
        self.parquet.finish()
        self.npy.flush()
        os.fsync(self.npy.fileno())
        self.npy.close()


def _import_via_local(dataset, name: str, path, allow_unknown: bool, chunk_rows: int, executor=None) -> dict:
    """``import_subset`` with a URI source or dataset: the source file is streamed to this
    machine's input cache (16 bytes a uid on disk, never in memory: a DataComp subset of an
    xlarge pool holds billions), the subset is made in a local staging folder (checked by the
    engine's tasks against the dataset's samples, read where they are), then its files and run
    manifest are uploaded whole (``uids.parquet`` with its commit marker)."""
    import tempfile

    from curate import storage
    from curate.subset import subset_dir
    from curate.tables import Dataset, atomic_write_bytes
    from curate.tables.atomic import upload_file_atomic

    with tempfile.TemporaryDirectory(prefix="curate-import-") as tmp:
        src = path
        if storage.is_uri(path):
            src_uri = storage.join(str(path), "uids.parquet") if storage.is_dir(path) else str(path)
            if not storage.is_file(src_uri):
                raise InputFileError(src_uri, "subset file not found")
            src = Path(storage.local_copy(src_uri))
        if not dataset.remote:
            return import_subset(dataset, name, src, allow_unknown, chunk_rows, source_name=str(path),
                                 executor=executor)
        stage = Dataset(Path(tmp) / "stage")
        stage.root.mkdir()
        out = import_subset(stage, name, src, allow_unknown, chunk_rows, source_name=str(path), samples=dataset,
                            executor=executor)
        final = subset_dir(dataset, name)
        for f in ("uids.npy", "_manifest.json", "uids.parquet"):  # the table file last; streamed, never in memory
            upload_file_atomic(subset_dir(stage, name) / f, storage.join(final, f))
        for f in sorted((stage.root / "_runs").rglob("*.json")):
            atomic_write_bytes(dataset.path(f.relative_to(stage.root).as_posix()), f.read_bytes())
    return {**out, "path": str(final)}


def import_subset(dataset, name: str, path: str | os.PathLike, allow_unknown: bool = False,
                  chunk_rows: int = CHUNK_ROWS, source_name: str | None = None, samples=None,
                  executor=None) -> dict:
    """Write ``subsets/<name>/`` from a DataComp subset file (.npy or raw ``u8,u8``), or a
    curate subset (folder or ``uids.parquet``, e.g. from another dataset).

    Returns counts: rows, distinct, format, sorted_input (False: the file was unsorted and is
    stored sorted; ``first_unsorted`` is the first out-of-order row), unknown_uid (uids not in
    samples: an error unless ``allow_unknown``, which drops them; checked by ``executor``'s
    tasks, in-process by default). The subset folder is replaced as a whole, never left
    half-written.
    """
    from curate import storage
    from curate.subset import subset_dir

    if dataset.remote or storage.is_uri(path):
        return _import_via_local(dataset, name, path, allow_unknown, chunk_rows, executor)
    t0 = time.perf_counter()
    final = subset_dir(dataset, name)  # the one place subset names become paths
    tmp = final.parent / f".{name}.import-{uuid.uuid4().hex}"
    try:
        arr, fmt = _source_records(path, tmp)
        writer, bad = _write_sorted(arr, tmp, chunk_rows, source_name or path)  # warnings name the URI, not a copy
        unknown, count, distinct = _keep_known(samples or dataset, tmp, writer, allow_unknown, source_name or path,
                                               executor)
        counts = {"file_rows": len(arr), "unknown_uid": unknown, "selected": count}
        meta = {"stage": "import", "name": name, "source": source_name or str(Path(path).resolve()), "format": fmt,
                "sorted_input": bad is None, "first_unsorted": bad, "counts": counts,
                "count": count, "distinct": distinct, "seconds": round(time.perf_counter() - t0, 4)}
        _replace_folder(tmp, final, name, meta)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    _write_run_manifest(dataset, name, source_name or str(path), allow_unknown, counts)
    return {**meta, "path": str(final)}


def _source_records(path, tmp: Path) -> tuple[np.ndarray, str]:
    """The records of the file to import and its format: a curate subset (folder or Parquet)
    read into a record file in ``tmp``, a DataComp file memory-mapped."""
    source = Path(path)
    if source.is_dir():  # a curate subset folder
        source = source / "uids.parquet"
    if is_parquet(source):
        return parquet_records(source, tmp / "_parquet.u8u8"), "parquet"
    return open_subset_array(source)


def _write_sorted(arr: np.ndarray, tmp: Path, chunk_rows: int, path) -> tuple[_SubsetWriter, int | None]:
    """uids.parquet and uids.npy in ``tmp``, sorted (with a warning when ``arr`` is not);
    returns the writer (its rows and distinct count) and the first unsorted row or None."""
    from curate.progress import info

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
    return writer, bad


def _keep_known(samples, tmp: Path, writer: _SubsetWriter, allow_unknown: bool, source_name,
                executor) -> tuple[int, int, int]:
    """(uids not in ``samples``, rows, distinct) of the subset in ``tmp``: unknown uids are an
    error naming the file, or, with ``allow_unknown``, dropped by rewriting the subset from the
    known rows. The engine's tasks do the check, one uid range of samples and of the sorted
    subset each (``curate.sql.select.check_uid_file``): the driver never reads samples."""
    from curate import storage
    from curate.sql.select import check_uid_file
    from curate.subset import sorted_uids_from_table

    if not samples.has_table("samples"):
        return 0, writer.rows, writer.distinct
    staged, known = f"_tmp/import-{uuid.uuid4().hex}", f"_tmp/import-{uuid.uuid4().hex}"
    try:
        uids_file = str(tmp / "uids.parquet")
        if samples.remote:  # staged on this machine: the tasks read it from the dataset's store
            uids_file = storage.join(samples.table_dir(staged), "uids.parquet")
            storage.put_file(storage.resolve(uids_file), tmp / "uids.parquet")
        found = check_uid_file(samples, uids_file, known, allow_unknown, executor)
        unknown = found["unknown"]
        if unknown and not allow_unknown:
            raise DatasetError(f"{source_name}: {unknown} uids are not in samples of {samples.root} (first: "
                               f"{found['first_unknown']}); pass --allow-unknown to drop them")
        if not unknown:
            return 0, writer.rows, writer.distinct
        (tmp / "uids.parquet").unlink()
        (tmp / "uids.npy").unlink()
        kept = _SubsetWriter(tmp, writer.rows - unknown)
        for chunk in sorted_uids_from_table(samples, known, None):
            kept.write(records_from_hex(chunk))
        kept.close()
        return unknown, kept.rows, kept.distinct
    finally:
        for t in (staged, known):
            storage.remove_tree(samples.table_dir(t))


def _replace_folder(tmp: Path, final: Path, name: str, meta: dict) -> None:
    """Write the subset's ``_manifest.json`` into ``tmp``, then swap ``tmp`` in as ``final``
    (the old folder renamed aside first and removed after)."""
    import json

    from curate.tables import atomic_write_bytes

    atomic_write_bytes(tmp / "_manifest.json", (json.dumps(meta, indent=2, sort_keys=True) + "\n").encode())
    old = final.parent / f".{name}.old-{uuid.uuid4().hex}"
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _write_run_manifest(dataset, name: str, source: str, allow_unknown: bool, counts: dict) -> None:
    from curate.manifest import RunManifest

    m = RunManifest(f"select-{name}", {"from_file": source, "allow_unknown": allow_unknown})
    m["counts"] = counts
    m["outputs"] = {"subset": f"subsets/{name}"}
    m.write(dataset)
