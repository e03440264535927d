"""Output files and folders a user names (``report --out``, ``sql --out``, ``eval --output``,
``train --output``, a scorer's model files): a local path or a URI, written through
``curate.storage``.

A library that writes files by path (pyarrow's CSV/Parquet writers, open_clip's training
loop, json.dump) writes into a local temporary file or folder; on success each file is uploaded
as one whole object under its final key (``storage.put_file``: S3 and GCS publish an object
only when its upload completes; on S3 boto3's managed upload aborts a failed multipart upload),
so a reader sees the old object or the whole new one, never a part. On failure nothing is
uploaded. A local path is written aside and renamed, as before.

These are single files and folders of files, not dataset tables: no commit markers.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from curate import storage


def suffix(path) -> str:
    """The extension of a path or URI (``.csv``, ``.html``)."""
    return Path(storage.basename(str(path)) if storage.is_uri(path) else str(path)).suffix


def display(path) -> str:
    """How a path or URI is shown in messages (a URI as given, normalised)."""
    return storage.resolve(str(path)).uri if storage.is_uri(path) else str(path)


@contextmanager
def output_file(path) -> Iterator[Path]:
    """A local file to write ``path``'s content to; committed when the block succeeds."""
    from curate.tables.atomic import atomic_path

    if not storage.is_uri(path):
        with atomic_path(path) as tmp:
            yield tmp
        return
    fd, name = tempfile.mkstemp(prefix=".curate-out-", suffix=suffix(path))
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        storage.put_file(storage.resolve(str(path)), tmp)
    finally:
        tmp.unlink(missing_ok=True)


def write_bytes(path, data: bytes) -> None:
    """``data`` as the file or object ``path`` (one whole object on a store)."""
    from curate.tables.atomic import atomic_write_bytes

    if not storage.is_uri(path):
        atomic_write_bytes(path, data)
        return
    storage.put_bytes(storage.resolve(str(path)), data)


def upload_folder(local, uri: str, last: tuple[str, ...] = ()) -> list[str]:
    """Every file under the local folder ``local`` as an object under ``uri`` (same relative
    names), each uploaded whole, in name order but the names in ``last`` at the end (a manifest
    that readers look for first: it appears only once what it names is there); returns the
    relative names in upload order."""
    base = Path(local)
    names = sorted(str(p.relative_to(base)) for p in base.rglob("*") if p.is_file())
    names = [n for n in names if n not in last] + [n for n in last if n in names]
    for rel in names:
        storage.put_file(storage.resolve(storage.join(uri, rel)), base / rel)
    return names


@contextmanager
def output_folder(path) -> Iterator[Path]:
    """A local folder to write ``path``'s files to: the folder itself for a local path; for a
    URI a temporary folder whose files are uploaded when the block succeeds (a failed block
    uploads nothing)."""
    if not storage.is_uri(path):
        Path(path).mkdir(parents=True, exist_ok=True)
        yield Path(path)
        return
    tmp = Path(tempfile.mkdtemp(prefix=".curate-out-"))
    try:
        yield tmp
        upload_folder(tmp, storage.resolve(str(path)).uri)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_batches(batches, path) -> int:
    """Stream Arrow record batches into a ``.parquet`` or ``.csv`` file or object (``curate sql
    --out``): the file is written locally, then committed whole; returns the rows written. No
    batch at all gives an empty file."""
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    rows = 0
    parquet = suffix(path) == ".parquet"
    with output_file(path) as tmp:
        writer = None
        try:
            for batch in batches:
                if writer is None:
                    writer = pq.ParquetWriter(tmp, batch.schema) if parquet else pcsv.CSVWriter(tmp, batch.schema)
                writer.write_batch(batch)
                rows += batch.num_rows
        finally:
            if writer is not None:
                writer.close()
        if writer is None:
            tmp.write_bytes(b"")
    return rows
