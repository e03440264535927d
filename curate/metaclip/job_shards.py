"""The tables the MetaCLIP jobs write and the shard helpers they share (input shards, column
checks, sparse per-shard entry counts, stale shards of a larger earlier run)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from curate import storage
from curate.errors import DatasetError, InputFileError
from curate.tables import Dataset, atomic_write_bytes, write_parquet_atomic


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


def input_shards(dataset: Dataset, table: str, hint: str) -> list[Path] | list[str]:
    shards = dataset.shards(table)
    if not shards:
        raise DatasetError(f"table {table!r} not found in {dataset.root}: {hint}")
    return shards


def check_columns(path, needed: list[str]) -> pq.ParquetFile:
    try:
        pf = storage.parquet_file(path)
    except (OSError, pa.ArrowInvalid) as e:
        raise InputFileError(str(path), f"cannot read Parquet shard ({e})") from None
    missing = [c for c in needed if c not in pf.schema_arrow.names]
    if missing:
        raise InputFileError(str(path), f"missing column(s) {', '.join(missing)}")
    return pf


def counts_table(table: str) -> str:
    """The sparse per-shard entry counts beside ``table``: part i belongs to shard i."""
    return f"{table}/{COUNTS_DIR}"


def write_sparse_counts(counts: np.ndarray, path) -> None:
    ids = np.flatnonzero(counts)
    t = pa.table([pa.array(ids.astype(np.int32)), pa.array(counts[ids].astype(np.int64))], schema=_COUNT_SCHEMA)
    write_parquet_atomic(t, path)


def sum_sparse_counts(paths: list, size: int) -> np.ndarray:
    total = np.zeros(size, dtype=np.int64)
    for p in paths:
        t = storage.read_parquet(p)
        np.add.at(total, t.column("entry_id").to_numpy(), t.column("count").to_numpy())
    return total


def clear_stale(dataset: Dataset, table: str, keep: int) -> None:
    """Remove shards (and count parts) past ``keep`` left by an earlier, larger run."""
    dataset.remove_shards_beyond(table, keep)
    dataset.remove_shards_beyond(counts_table(table), keep)


def input_stamps(shards: list) -> list[list]:
    """(name, size, mtime) of each input shard: what a resume must find unchanged."""
    out = []
    for p in shards:
        _, mtime_ns, size = storage.fingerprint(p)
        out.append([storage.basename(p), size, mtime_ns])
    return out


def file_record(path) -> dict:
    """A run manifest's input record of a dataset file (as ``manifest.file_fingerprint``)."""
    data = storage.read_bytes(path)
    return {"path": str(path), "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def write_if_changed(path, data: bytes) -> None:
    if not storage.exists(path) or storage.read_bytes(path) != data:
        atomic_write_bytes(path, data)


def plan_changed(dataset: Dataset, plan: dict) -> bool:
    """Whether the last match recorded (``metadata_matches/_job.json``) another plan than
    ``plan`` (different metadata or inputs: nothing to resume); False when none is recorded."""
    path = dataset.path(f"{MATCHES}/_job.json")
    return storage.exists(path) and json.loads(storage.read_bytes(path)) != plan
