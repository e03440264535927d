"""A dataset folder and its tables: discovery, reading, atomic shard writing."""

from __future__ import annotations

import json
import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import DatasetError, SchemaError
from curate.tables.schema import TableSchema, load_schema

SHARD_PATTERN = "part-{:05d}.parquet"
_SHARD_RE = re.compile(r"^part-(\d{5,})\.parquet$")

# Fixed writer options so the same rows always give the same bytes.
PARQUET_OPTIONS = dict(
    compression="zstd",
    compression_level=3,
    use_dictionary=True,
    write_statistics=True,
    version="2.6",
    data_page_version="1.0",
    store_schema=True,
)


def _hidden(name: str) -> bool:
    return name.startswith("_") or name.startswith(".")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """A hidden temporary path beside ``path`` to write to; on success it is fsynced and
    renamed over ``path``, so readers see the old file or the whole new one, never a part."""
    path = Path(path)
    tmp = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:  # disk full, read-only or missing folder: one clear line, not a traceback
        raise DatasetError(f"cannot write {path}: {e.strerror or e}") from e
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see ``atomic_path``)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_parquet_atomic(table: pa.Table, path: str | os.PathLike, row_group_size: int = 65536) -> int:
    """Write ``table`` to ``path`` atomically; returns the byte size written.

    Output bytes depend only on the table's contents and schema (no timestamps,
    no random names), so a rerun over the same rows is byte-identical.
    """
    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, **PARQUET_OPTIONS)
        size = tmp.stat().st_size
    return size


class Dataset:
    """A folder of tables. Table names may be nested paths (``embeddings/ViT-B-32``)."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root).resolve()

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r})"

    # ---- layout -------------------------------------------------------------
    def table_dir(self, name: str) -> Path:
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts:  # a table never lies outside its dataset
            raise DatasetError(f"table name {name!r} must be a relative path inside {self.root} without '..'")
        return self.root / name

    def runs_dir(self) -> Path:
        """Run manifests live here; hidden from table discovery."""
        return self.root / "_runs"

    def shard_path(self, name: str, index: int) -> Path:
        return self.table_dir(name) / SHARD_PATTERN.format(index)

    def shards(self, name: str) -> list[Path]:
        d = self.table_dir(name)
        if not d.is_dir():
            return []
        return sorted(p for p in d.iterdir() if p.is_file() and p.suffix == ".parquet" and not _hidden(p.name))

    def has_table(self, name: str) -> bool:
        return bool(self.shards(name))

    def tables(self) -> list[str]:
        """Every folder under the root that directly holds visible Parquet files."""
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder {self.root} does not exist")
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not _hidden(d))
            if Path(dirpath) == self.root:
                continue
            if any(f.endswith(".parquet") and not _hidden(f) for f in filenames):
                found.append(Path(dirpath).relative_to(self.root).as_posix())
        return sorted(found)

    # ---- reading ------------------------------------------------------------
    def read(self, name: str, columns: list[str] | None = None, schema: str | None = None) -> pa.Table:
        """The whole table (all shards), optionally checked against ``schemas/<schema>.yaml``."""
        files = self.shards(name)
        if not files:
            raise DatasetError(f"table {name!r} not found in {self.root} (no Parquet shards in {self.table_dir(name)})")
        parts = []
        for f in files:
            try:
                parts.append(pq.read_table(f, columns=columns))
            except (pa.ArrowInvalid, OSError) as e:
                raise DatasetError(f"{f}: cannot read Parquet shard ({e})") from e
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        if schema:
            ts = load_schema(schema)
            if columns is None:
                ts.validate(table, where=str(self.table_dir(name)))
        return table

    def iter_batches(self, name: str, columns: list[str] | None = None, batch_size: int = 65536) -> Iterator[pa.RecordBatch]:
        for f in self.shards(name):
            pf = pq.ParquetFile(f)
            yield from pf.iter_batches(batch_size=batch_size, columns=columns)

    def count(self, name: str) -> int:
        return sum(pq.ParquetFile(f).metadata.num_rows for f in self.shards(name))

    # ---- writing ------------------------------------------------------------
    def write_table(self, name: str, table: pa.Table, schema: str | TableSchema | None = None,
                    rows_per_shard: int = 1_000_000, overwrite: bool = True) -> list[Path]:
        """Write a whole (driver-side) table as shards, atomically per shard.

        Old shards beyond the new count are removed afterwards, so readers never see a
        mix of an old and a new table for longer than the rename loop.
        """
        if schema is not None:
            ts = load_schema(schema) if isinstance(schema, str) else schema
            table = ts.conform(table)
        d = self.table_dir(name)
        if d.exists() and not overwrite and self.shards(name):
            raise DatasetError(f"table {name!r} already exists in {self.root}")
        paths = []
        n = table.num_rows
        nshards = max(1, -(-n // rows_per_shard))
        for i in range(nshards):
            part = table.slice(i * rows_per_shard, rows_per_shard)
            p = self.shard_path(name, i)
            write_parquet_atomic(part, p)
            paths.append(p)
        keep = {p.name for p in paths}
        for old in self.shards(name):
            if old.name not in keep:
                old.unlink()
        return paths

    def write_json(self, relpath: str, obj) -> Path:
        p = self.root / relpath
        atomic_write_bytes(p, (json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n").encode())
        return p


class ShardWriter:
    """Stream batches into fixed-size shards of one table, each committed atomically."""

    def __init__(self, dataset: Dataset, name: str, schema: pa.Schema, rows_per_shard: int = 1_000_000,
                 first_index: int = 0):
        self.dataset, self.name, self.schema = dataset, name, schema
        self.rows_per_shard = rows_per_shard
        self.index = first_index
        self._pending: list[pa.RecordBatch] = []
        self._rows = 0
        self.paths: list[Path] = []

    def write(self, batch: pa.RecordBatch | pa.Table) -> None:
        if isinstance(batch, pa.Table):
            for b in batch.to_batches():
                self.write(b)
            return
        if batch.schema != self.schema:
            try:
                batch = batch.select(self.schema.names).cast(self.schema)
            except (pa.ArrowInvalid, KeyError, ValueError) as e:
                raise SchemaError(f"batch for table {self.name!r} does not match its schema: {e}") from e
        while batch.num_rows:
            room = self.rows_per_shard - self._rows
            head, batch = batch.slice(0, room), batch.slice(room)
            self._pending.append(head)
            self._rows += head.num_rows
            if self._rows >= self.rows_per_shard:
                self._flush()

    def _flush(self) -> None:
        if not self._pending:
            return
        table = pa.Table.from_batches(self._pending, schema=self.schema)
        p = self.dataset.shard_path(self.name, self.index)
        write_parquet_atomic(table, p)
        self.paths.append(p)
        self.index += 1
        self._pending, self._rows = [], 0

    def close(self) -> list[Path]:
        self._flush()
        return self.paths
