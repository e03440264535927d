"""The tables the MetaCLIP jobs write and the shard helpers they share (input shards, column
checks, sparse per-shard entry counts, stale shards of a larger earlier run)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate.errors import DatasetError, InputFileError
from curate.tables import Dataset, write_parquet_atomic


MATCHES = "metadata_matches"
ENTRY_COUNTS = "entry_counts"
ENTRY_BALANCE = "entry_balance"
STAGE = "metaclip_balance"
METADATA_COPY = "metaclip/metadata.json"  # the entries a dataset was matched against
# Worldwide mode only: which global entry ids belong to which language, and how they match.
LANGUAGES_COPY = "metaclip/languages.json"
LANGUAGES = "metadata_languages"  # per sample: language ID label and the metadata list used
LANGUAGE_BALANCE = "language_balance"
NO_LANGUAGE = "(none)"  # stats key for captions whose language has no metadata (and no `other`)
COUNTS_DIR = "_counts"
_COUNT_SCHEMA = pa.schema([("entry_id", pa.int32()), ("count", pa.int64())])


def input_shards(dataset: Dataset, table: str, hint: str) -> list[Path]:
    shards = dataset.shards(table)
    if not shards:
        raise DatasetError(f"table {table!r} not found in {dataset.root}: {hint}")
    return shards


def check_columns(path: Path, needed: list[str]) -> pq.ParquetFile:
    try:
        pf = pq.ParquetFile(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise InputFileError(str(path), f"cannot read Parquet shard ({e})") from None
    missing = [c for c in needed if c not in pf.schema_arrow.names]
    if missing:
        raise InputFileError(str(path), f"missing column(s) {', '.join(missing)}")
    return pf


def write_sparse_counts(counts: np.ndarray, path: Path) -> None:
    ids = np.flatnonzero(counts)
    t = pa.table([pa.array(ids.astype(np.int32)), pa.array(counts[ids].astype(np.int64))], schema=_COUNT_SCHEMA)
    write_parquet_atomic(t, path)


def sum_sparse_counts(paths: list[Path], size: int) -> np.ndarray:
    total = np.zeros(size, dtype=np.int64)
    for p in paths:
        t = pq.read_table(p)
        np.add.at(total, t.column("entry_id").to_numpy(), t.column("count").to_numpy())
    return total


def clear_stale(dataset: Dataset, table: str, keep: int) -> None:
    """Remove shards (and count parts) past ``keep`` left by an earlier, larger run."""
    for p in dataset.shards(table):
        if int(p.stem.split("-")[1]) >= keep:
            p.unlink()
    parts = dataset.table_dir(table) / COUNTS_DIR
    if parts.is_dir():
        for p in parts.glob("part-*.parquet"):
            if int(p.stem.split("-")[1]) >= keep:
                p.unlink()
