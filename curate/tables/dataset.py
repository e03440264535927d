"""A dataset folder and its tables: discovery, reading, writing shards (each atomically:
``curate.tables.atomic``).

A dataset root may be a plain path (files written aside and renamed into place, as always)
or a URI (``s3://bucket/ds``, ``gs://``, ``hdfs://``, ...; see ``curate.storage`` and
docs/storage.md). On an object store the methods that return paths return URI strings, and a
shard is part of its table only once its commit marker exists.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from curate import storage
from curate.errors import DatasetError, SchemaError
from curate.tables.atomic import atomic_write_bytes, is_hidden, write_parquet_atomic
from curate.tables.schema import TableSchema, load_schema

SHARD_PATTERN = "part-{:05d}.parquet"


def shard_order(name: str) -> tuple[int, str]:
    """A table's shards in index order: ``part-100000`` after ``part-99999`` (names past five
    digits are longer; sorted as text they would come first, and a table sorted by uid across
    its shards would be read out of order: a todo of 1B rows has 100,000 parts)."""
    return len(name), name


class Dataset:
    """A folder of tables. Table names may be nested paths (``embeddings/ViT-B-32``).

    ``root`` is a path or a storage URI; ``self.root`` is a resolved ``Path`` for a local
    dataset and the URI string for a remote one (``self.location`` has its filesystem).
    """

    def __init__(self, root: str | os.PathLike, storage_options: dict | None = None):
        self.location = storage.resolve(root, storage_options)
        self.remote = not self.location.local
        if self.remote:
            self.root = self.location.uri
        else:  # exactly as before for a plain path; file:// is the same path
            self.root = Path(self.location.path) if str(root).startswith("file://") else Path(root).resolve()

    def __repr__(self) -> str:
        return f"Dataset({str(self.root)!r})"

    # ---- layout -------------------------------------------------------------
    def _check_name(self, name: str) -> None:
        parts = Path(name).parts
        if not parts or Path(name).is_absolute() or ".." in parts:  # a table never lies outside its dataset
            raise DatasetError(f"table name {name!r} must be a relative path inside {self.root} without '..'")

    def path(self, relpath: str) -> Path | str:
        """A file or folder of the dataset: a ``Path`` here, a URI on an object store."""
        return self.location.join(relpath).uri if self.remote else self.root / relpath

    def table_dir(self, name: str) -> Path | str:
        self._check_name(name)
        return self.path(name)

    def runs_dir(self) -> Path | str:
        """Run manifests live here; hidden from table discovery."""
        return self.path("_runs")

    def shard_path(self, name: str, index: int) -> Path | str:
        if self.remote:
            return f"{self.table_dir(name)}/{SHARD_PATTERN.format(index)}"
        return self.table_dir(name) / SHARD_PATTERN.format(index)

    def exists(self) -> bool:
        return storage.is_dir(self.location) if self.remote else self.root.is_dir()

    def require(self) -> Dataset:
        """This dataset, after checking that the folder exists and is one curate wrote: at its top
        a table family (``samples``, ``subsets``, ...) or run records (``_runs``). A reader of
        any other folder (``docs``, a folder of several datasets) would list whatever Parquet
        lies anywhere below it as tables; each case is one line."""
        from curate.names import RESERVED

        if not self.remote and self.root.exists() and not self.root.is_dir():
            raise DatasetError(f"{self.root} is a file, not a dataset folder")
        if not self.exists():
            raise DatasetError(f"dataset folder {self.root} does not exist")
        known = RESERVED | {"_runs", "metaclip"}
        top = ({i.base_name for i in storage.listing(self.location)} if self.remote
               else {p.name for p in self.root.iterdir()})
        if not top & known and self.remote:  # a store whose listing shows no implicit folders (GCS)
            top = {n for n in ("samples", "_runs", "subsets", "downloads") if storage.is_dir(self.location.join(n))}
        if not top & known:
            raise DatasetError(f"{self.root} is not a curate dataset (no samples, subsets or other tables, no _runs "
                               "at its top); create one with `curate ingest INPUTS -o DATASET`")
        return self

    def shards(self, name: str) -> list[Path] | list[str]:
        if self.remote:
            return self._remote_shards(name)
        d = self.table_dir(name)
        if not d.is_dir():
            return []
        return sorted((p for p in d.iterdir() if p.is_file() and p.suffix == ".parquet" and not is_hidden(p.name)),
                      key=lambda p: shard_order(p.name))

    def _remote_shards(self, name: str) -> list[str]:
        return [uri for uri, _ in self._remote_shard_sizes(name)]

    def _remote_shard_sizes(self, name: str) -> list[tuple[str, int]]:
        """Committed shards only (a ``.parquet`` object with its ``_committed/`` marker), each
        with its size as the listing gave it."""
        d = storage.resolve(self.table_dir(name))
        files = {i.base_name: i.size for i in storage.listing(d)
                 if i.type == pafs.FileType.File and i.base_name.endswith(".parquet") and not is_hidden(i.base_name)}
        if not files:
            return []
        marked = {i.base_name for i in storage.listing(d.join(storage.COMMIT_DIR))}
        return [(f"{d.uri}/{f}", files[f]) for f in sorted(files.keys() & marked, key=shard_order)]

    def has_table(self, name: str) -> bool:
        return bool(self.shards(name))

    def tables(self) -> list[str]:
        """Every folder under the root that directly holds visible Parquet files."""
        if self.remote:
            return self._remote_tables()
        if not self.root.is_dir():
            raise DatasetError(f"dataset folder {self.root} does not exist")
        found = []
        for dirpath, dirnames, filenames in os.walk(self.root):
            dirnames[:] = sorted(d for d in dirnames if not is_hidden(d))
            if Path(dirpath) == self.root:
                continue
            if any(f.endswith(".parquet") and not is_hidden(f) for f in filenames):
                found.append(Path(dirpath).relative_to(self.root).as_posix())
        return sorted(found)

    def _remote_tables(self) -> list[str]:
        loc = self.location
        try:
            infos = loc.fs.get_file_info(pafs.FileSelector(loc.path, allow_not_found=True, recursive=True))
        except OSError as e:
            raise DatasetError(f"cannot list dataset {self.root}: {e}") from None
        if not infos and not storage.is_dir(loc):
            raise DatasetError(f"dataset {self.root} does not exist")
        prefix = loc.path.rstrip("/") + "/"
        shards, marks = set(), set()
        for i in infos:
            if i.type != pafs.FileType.File or not i.path.startswith(prefix):
                continue
            parts = i.path[len(prefix):].split("/")
            if len(parts) >= 3 and parts[-2] == storage.COMMIT_DIR and not any(is_hidden(p) for p in parts[:-2]):
                marks.add(("/".join(parts[:-2]), parts[-1]))
            elif len(parts) >= 2 and parts[-1].endswith(".parquet") and not any(is_hidden(p) for p in parts):
                shards.add(("/".join(parts[:-1]), parts[-1]))
        return sorted({t for t, _ in shards & marks})

    def open_shard(self, f):
        """A shard for pyarrow: the local path, or an input file opened on the store."""
        if not self.remote:
            return f
        loc = storage.resolve(f)
        return loc.fs.open_input_file(loc.path)

    # ---- reading ------------------------------------------------------------
    def read(self, name: str, columns: list[str] | None = None, schema: str | None = None) -> pa.Table:
        """The whole table (all shards), optionally checked against ``schemas/<schema>.yaml``."""
        files = self.shards(name)
        if not files:
            raise DatasetError(f"table {name!r} not found in {self.root} (no Parquet shards in {self.table_dir(name)})")
        parts = []
        for f in files:
            try:
                parts.append(pq.read_table(self.open_shard(f), columns=columns))
            except (pa.ArrowInvalid, OSError) as e:
                raise DatasetError(f"{f}: cannot read Parquet shard ({e})") from e
        table = pa.concat_tables(parts) if len(parts) > 1 else parts[0]
        if schema:
            ts = load_schema(schema)
            if columns is None:
                ts.validate(table, where=str(self.table_dir(name)))
        return table

    def iter_batches(self, name: str, columns: list[str] | None = None, batch_size: int = 65536,
                     readahead: int = 4) -> Iterator[pa.RecordBatch]:
        """The table's rows in order, shard after shard, in batches of at most ``batch_size``
        rows. Arrow's threads read and decode about ``readahead`` row groups ahead of the
        caller, each row group's columns as one ranged read: on a store, that many requests in
        flight, where ``ParquetFile.iter_batches`` waits for one round trip after another (S3:
        tens of ms each, ~31 for a 2M-row shard).

        A shard is scanned in windows of ``readahead // 2`` row groups, the next window's reads
        started while the caller takes the current one: Arrow's pre-buffering holds every row
        group of what it scans until the scan ends, so a whole shard scanned at once held the
        shard's columns (driver memory grew with the shard, 1M -> 2M rows: +40 MiB).

        A local dataset has no round trips to hide: its shards are read one row group at a
        time, as fast (the page cache reads ahead) and holding one batch, not ``readahead``
        row groups (the selection finish at 8M rows: 1.1 s either way, driver 250 -> 197 MiB)."""
        if self.remote:
            return self._iter_store_batches(name, columns, batch_size, readahead)
        return self._iter_local_batches(name, columns, batch_size)

    def _iter_local_batches(self, name: str, columns, batch_size: int) -> Iterator[pa.RecordBatch]:
        for f in self.shards(name):
            try:
                yield from pq.ParquetFile(f, pre_buffer=False).iter_batches(batch_size=batch_size, columns=columns,
                                                                              use_threads=False)
            except (pa.ArrowInvalid, OSError) as e:
                raise DatasetError(f"{f}: cannot read Parquet shard ({e})") from e

    def _iter_store_batches(self, name: str, columns, batch_size: int, readahead: int) -> Iterator[pa.RecordBatch]:
        from concurrent.futures import ThreadPoolExecutor

        window = max(1, readahead // 2)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-window") as prefetch:
            current = None  # (shard, batch iterator, future of its first batch)
            for shard, scanner in self._scan_windows(name, columns, batch_size, window):
                batches = scanner.to_batches()
                started = (shard, batches, prefetch.submit(next, batches, None))
                if current is not None:
                    yield from _drain_window(*current)
                current = started
            if current is not None:
                yield from _drain_window(*current)

    def _scan_windows(self, name: str, columns, batch_size: int, window: int):
        """(shard, scanner) for each window of ``window`` row groups of each shard of a table on
        a store, in order."""
        import pyarrow.dataset as pads

        fmt = pads.ParquetFileFormat(default_fragment_scan_options=pads.ParquetFragmentScanOptions(pre_buffer=True))
        for f, size in self._remote_shard_sizes(name):
            loc = storage.resolve(f)
            try:
                # the size from the listing: no request per shard to ask it, nor one per window
                fragment = fmt.make_fragment(loc.path, loc.fs, file_size=size)
                groups = fragment.metadata.num_row_groups
            except (pa.ArrowInvalid, OSError) as e:
                raise DatasetError(f"{f}: cannot read Parquet shard ({e})") from e
            for s in range(0, groups, window):  # a shard without row groups has no rows
                part = fragment.subset(row_group_ids=list(range(s, min(groups, s + window))))
                yield f, pads.Scanner.from_fragment(part, columns=columns, batch_size=batch_size,
                                                    batch_readahead=window)

    def count(self, name: str) -> int:
        return sum(self.shard_rows(name, f) for f in self.shards(name))

    def shard_rows(self, name: str, shard) -> int:
        """A shard's rows from its footer; a damaged shard (cut short, not Parquet) is a one-line
        error naming it."""
        try:
            return pq.ParquetFile(self.open_shard(shard)).metadata.num_rows
        except (pa.ArrowInvalid, OSError) as e:
            raise DatasetError(f"{shard}: a damaged shard of table {name!r} ({str(e).splitlines()[0]}); "
                               "remove it and run the job that wrote the table again") from None

    # ---- writing ------------------------------------------------------------
    def write_table(self, name: str, table: pa.Table, schema: str | TableSchema | None = None,
                    rows_per_shard: int = 1_000_000, overwrite: bool = True) -> list[Path] | list[str]:
        """Write a whole (driver-side) table as shards, atomically per shard.

        Old shards beyond the new count are removed afterwards, so readers never see a
        mix of an old and a new table for longer than the rename loop.
        """
        if schema is not None:
            ts = load_schema(schema) if isinstance(schema, str) else schema
            table = ts.conform(table)
        d = self.table_dir(name)
        if not overwrite and self.shards(name):
            raise DatasetError(f"table {name!r} already exists in {self.root}")
        paths = []
        n = table.num_rows
        nshards = max(1, -(-n // rows_per_shard))
        for i in range(nshards):
            part = table.slice(i * rows_per_shard, rows_per_shard)
            p = self.shard_path(name, i)
            write_parquet_atomic(part, p)
            paths.append(p)
        self.remove_shards_beyond(name, nshards)
        return paths

    def remove_shards_beyond(self, name: str, count: int) -> None:
        """Drop shards ``part-<count>`` and later (a shorter rewrite of a table)."""
        self._remove_shards_except(name, {SHARD_PATTERN.format(i) for i in range(count)})

    def finish_sharded_write(self, name: str, schema: pa.Schema, keep: set[str], total: int) -> set[str]:
        """After a sharded write of ``total`` rows into the shard files named ``keep``: an empty
        table is one empty shard, so the table and its schema exist; stale shards go. Returns the
        shard names kept."""
        if total == 0:
            write_parquet_atomic(schema.empty_table(), self.shard_path(name, 0))
            keep = {SHARD_PATTERN.format(0)}
        self._remove_shards_except(name, set(keep))
        return keep

    def _remove_shards_except(self, name: str, keep: set[str]) -> None:
        """Delete the table's shards not named in ``keep``; on an object store markers first
        (``storage.uncommit_shard``), and unmarked leftovers too."""
        if self.remote:
            d = storage.resolve(self.table_dir(name))
            present = {i.base_name for i in storage.listing(d) if i.base_name.endswith(".parquet")}
            present |= {i.base_name for i in storage.listing(d.join(storage.COMMIT_DIR))}
            for old in sorted(present - keep):
                storage.uncommit_shard(d.join(old))
            return
        for old in self.shards(name):
            if old.name not in keep:
                old.unlink()

    def remove_temp_files(self, *names: str) -> list[Path]:
        """Delete the hidden ``.*.tmp`` files a kill -9 left mid-write (``atomic_path``) in the
        named tables and the run records. Call it when a job starts, before its tasks write, so
        none belongs to a live writer (one writer per dataset: ``curate.lock``). An object store
        has none: its uploads are whole objects."""
        if self.remote:
            return []
        found = []
        for d in [*(self.table_dir(n) for n in names), self.runs_dir(), self.runs_dir() / "history"]:
            if d.is_dir():
                found += [p for p in d.iterdir() if p.name.startswith(".") and p.name.endswith(".tmp")]
        for p in found:
            p.unlink(missing_ok=True)
        return found

    def write_json(self, relpath: str, obj) -> Path | str:
        p = self.path(relpath)
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
        self.paths: list[Path] | list[str] = []

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

    def close(self) -> list[Path] | list[str]:
        self._flush()
        return self.paths


def _drain_window(shard, batches, first) -> Iterator[pa.RecordBatch]:
    """A window's batches: the one read ahead, then the rest (a bad shard named)."""
    try:
        batch = first.result()
        if batch is not None:
            yield batch
            yield from batches
    except (pa.ArrowInvalid, OSError) as e:
        raise DatasetError(f"{shard}: cannot read Parquet shard ({e})") from e
