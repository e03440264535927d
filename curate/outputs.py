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

from pathlib import Path

from curate import storage


def suffix(path) -> str:
    """The extension of a path or URI (``.csv``, ``.html``)."""
    return Path(storage.basename(str(path)) if storage.is_uri(path) else str(path)).suffix


def display(path) -> str:
    """How a path or URI is shown in messages (a URI as given, normalised)."""
    return storage.resolve(str(path)).uri if storage.is_uri(path) else str(path)


def output_file(path):
    """A local file to write ``path``'s content to, committed whole when the block succeeds
    (``tables.atomic.atomic_path``; on a store one object, no table commit marker)."""
    from curate.tables.atomic import atomic_path

    return atomic_path(path, shard=False)


def write_bytes(path, data: bytes) -> None:
    """``data`` as the file or object ``path`` (one whole object on a store)."""
    from curate.tables.atomic import atomic_write_bytes

    atomic_write_bytes(path, data, shard=False)


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
