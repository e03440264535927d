"""The recipe's subsets as tables the workers read and write: never a uid array on the driver.

A ``UidTable`` names a dataset table (a folder of Parquet shards with a ``uid`` column, in
any row order; a uid may repeat, as in an upsampled subset) and carries its row and distinct
counts, both counted by the engine. A stage gets one as its input and the runner makes the
next one with a semi-join of the input against the stage's kept decisions (repeats kept).

``subset_digest`` is the subset hash of the cache keys and the lineage: an order-free
multiset hash summed by the workers. Each uid (32 hex chars = 128 bits) is mixed with the
splitmix64 finalizer into two 64-bit words; the four 32-bit lanes are summed per batch
(mod 2^32) on the workers, the per-batch sums by the engine's ``aggregate``, so one row
reaches the driver. Repeats count (a multiset), order does not.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from curate.tables import Dataset

UID_SCHEMA = pa.schema([("uid", pa.string())])
DIGEST_LANES = 4
DIGEST_SCHEMA = pa.schema([("n", pa.int64())] + [(f"l{i}", pa.int64()) for i in range(DIGEST_LANES)])
DIGEST_VERSION = "curate-subset-digest-v2"
UID_TABLE_SHARD_ROWS = 2_000_000

_HEX = np.full(256, 255, np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
_SHIFTS = (np.arange(15, -1, -1, dtype=np.uint64) * np.uint64(4))
_M32 = np.uint64(0xFFFFFFFF)


def _mix(x: np.ndarray) -> np.ndarray:
    """splitmix64's finalizer (a bijection on uint64 with full avalanche); wraps mod 2^64."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _uid_words(arr: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """(high, low) 64-bit words of each uid: its 32 hex chars; any other string through blake2b."""
    n = len(arr)
    lengths = pc.binary_length(arr).to_numpy(zero_copy_only=False) if n else np.zeros(0, np.int64)
    if n and arr.null_count == 0 and bool((lengths == 32).all()):
        off = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1 + arr.offset)[arr.offset:]
        chars = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[off[0]:off[-1]].reshape(n, 32)
        nib = _HEX[chars]
        if not (nib == 255).any():
            nib = nib.astype(np.uint64)
            return (nib[:, :16] << _SHIFTS).sum(1, dtype=np.uint64), (nib[:, 16:] << _SHIFTS).sum(1, dtype=np.uint64)
    words = np.zeros((n, 2), np.uint64)
    for i, u in enumerate(arr.to_pylist()):
        words[i] = np.frombuffer(hashlib.blake2b(str(u).encode(), digest_size=16).digest(), np.uint64)
    return words[:, 0].copy(), words[:, 1].copy()


def digest_rows(batch: pa.RecordBatch | pa.Table) -> pa.Table:
    """One row of partial digest sums for a batch of uids (run on the workers)."""
    col = batch.column("uid")
    arr = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    arr = arr.cast(pa.string())
    hi, lo = _uid_words(arr)
    a = _mix(hi ^ _mix(lo + np.uint64(0x9E3779B97F4A7C15)))
    b = _mix(lo ^ _mix(hi + np.uint64(0xD1B54A32D192ED03)))
    lanes = [a & _M32, a >> np.uint64(32), b & _M32, b >> np.uint64(32)]
    sums = [int(x.sum(dtype=np.uint64) & _M32) for x in lanes]  # < 2^32 values: no overflow below 2^32 rows
    return pa.table([pa.array([len(arr)], pa.int64())] + [pa.array([s], pa.int64()) for s in sums],
                    schema=DIGEST_SCHEMA)


def combine_digest(n: int, lanes: list[int]) -> str:
    text = f"{DIGEST_VERSION}:{n}:" + ":".join(str(int(x) & 0xFFFFFFFF) for x in lanes)
    return hashlib.sha256(text.encode()).hexdigest()


def subset_digest_frame(frame) -> tuple[str, int]:
    """(digest, rows) of the uids of a frame: partial sums per batch on the workers, summed by
    the engine; one row reaches the driver."""
    sums = (frame.select(["uid"]).map_batches(digest_rows, DIGEST_SCHEMA)
            .aggregate([], {"n": ("n", "sum"), **{f"l{i}": (f"l{i}", "sum") for i in range(DIGEST_LANES)}})
            .collect_small(1))
    if sums.num_rows == 0 or sums.column("n")[0].as_py() is None:
        return combine_digest(0, [0] * DIGEST_LANES), 0
    n = int(sums.column("n")[0].as_py())
    return combine_digest(n, [int(sums.column(f"l{i}")[0].as_py()) for i in range(DIGEST_LANES)]), n


def subset_digest_array(uids: pa.Array | pa.ChunkedArray) -> str:
    """``subset_digest_frame`` of an array the caller holds (same value)."""
    arr = uids.combine_chunks() if isinstance(uids, pa.ChunkedArray) else uids
    total, lanes = 0, [0] * DIGEST_LANES
    for start in range(0, len(arr), 65536):
        part = digest_rows(pa.table({"uid": arr.slice(start, 65536)}))
        total += part.column("n")[0].as_py()
        lanes = [x + part.column(f"l{i}")[0].as_py() for i, x in enumerate(lanes)]
    return combine_digest(total, lanes)


@dataclass(frozen=True)
class UidTable:
    """A uid table of the dataset (see the module docstring), with its engine-counted sizes."""

    name: str
    rows: int
    distinct: int

    def paths(self, dataset: Dataset) -> list[str]:
        return [str(p) for p in dataset.shards(self.name)]

    def frame(self, dataset: Dataset, executor):
        paths = self.paths(dataset)
        return executor.frame_read(paths, UID_SCHEMA) if paths else executor.frame_from_table(UID_SCHEMA.empty_table())

    def uid_list(self, dataset: Dataset):
        """The table as the embedding-space jobs' ``input_uids`` (read and joined by the engine)."""
        from curate.embedding_space.common import UidList

        paths = self.paths(dataset)  # one file (a subset's uids.parquet) or the folder of shards
        return UidList(paths[0] if len(paths) == 1 else dataset.table_dir(self.name),
                       distinct=self.distinct if self.distinct == self.rows else None)


def write_uid_table(dataset: Dataset, name: str, frame, distinct: int | None = None) -> UidTable:
    """The uids of ``frame`` as table ``name``, sorted, in shards written by the workers."""
    frame = frame.select(["uid"]).cache()
    try:
        written = frame.write_sorted(dataset, name, UID_SCHEMA, ["uid"], UID_TABLE_SHARD_ROWS)
        if distinct is None:
            distinct = frame.distinct().count()
    finally:
        frame.release()
    return UidTable(name, int(written["rows"]), int(distinct))


def counted_uid_table(dataset: Dataset, name: str, executor) -> UidTable:
    """An existing table (``samples``, ``subsets/NAME``) as a ``UidTable``: counts by the engine."""
    t = UidTable(name, 0, 0)
    f = t.frame(dataset, executor).cache()
    try:
        return UidTable(name, f.count(), f.distinct().count())
    finally:
        f.release()
