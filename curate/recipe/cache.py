"""Content-addressed cache of stage outputs under ``DATASET/_cache/recipe/<key>/``.

The key of a stage run is the hash of (input subset hash, stage kind, parameters, code hash,
fingerprints of the tables it reads). Change one stage's parameters and its key changes;
its output subset then differs (or not), so the keys after it change only when their
input really changed. Entries are written atomically (folder renamed into place last).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from curate.manifest import stable_hash
from curate.tables import Dataset, load_schema, write_parquet_atomic

CACHE_DIR = "_cache/recipe"


def subset_hash(uids: pa.Array) -> str:
    """Hash of a uid multiset (order-independent: sorted first)."""
    import pyarrow.compute as pc

    arr = uids.cast(pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    arr = arr.take(pc.array_sort_indices(arr))
    h = hashlib.sha256(str(len(arr)).encode())
    if len(arr):
        import numpy as np

        # take() returns a fresh array (offset 0): hash its offsets and character data
        off = np.frombuffer(arr.buffers()[1], dtype=np.int32, count=len(arr) + 1)
        h.update(off.tobytes())
        h.update(memoryview(arr.buffers()[2])[off[0]:off[-1]])
    return h.hexdigest()


def table_fingerprint(dataset: Dataset, name: str) -> dict:
    """Cheap content identity of a table: per shard, its name, size and a hash of its tail.

    A Parquet file ends with its footer (row counts, column statistics, page offsets), so
    the tail changes with the content while reading it costs one small read per shard;
    rewriting identical rows (our writers are byte-deterministic) keeps the fingerprint.
    """
    shards = []
    for p in dataset.shards(name):
        size = p.stat().st_size
        with open(p, "rb") as f:
            f.seek(max(0, size - 65536))
            tail = hashlib.sha256(f.read()).hexdigest()[:16]
        shards.append([p.name, size, tail])
    return {"table": name, "shards": shards}


def cache_key(input_hash: str, kind: str, params: dict, code: str, reads: list[dict]) -> str:
    return stable_hash({"input": input_hash, "kind": kind, "params": params, "code": code, "reads": reads})[:32]


class StageCache:
    def __init__(self, dataset: Dataset, enabled: bool = True):
        self.dataset, self.enabled = dataset, enabled
        self.root = dataset.root / CACHE_DIR

    def path(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str) -> tuple[pa.Table, pa.Array, dict] | None:
        """(decisions, output uids, meta) of a cached stage run, or None."""
        d = self.path(key)
        if not self.enabled or not (d / "meta.json").exists():
            return None
        try:
            decisions = pq.read_table(d / "decisions.parquet")
            uids = pq.read_table(d / "uids.parquet").column("uid").combine_chunks()
            meta = json.loads((d / "meta.json").read_text())
        except (OSError, pa.ArrowInvalid, ValueError):
            return None  # a damaged entry is recomputed, never trusted
        return decisions, uids, meta

    def put(self, key: str, decisions: pa.Table, uids: pa.Array, meta: dict) -> Path:
        final = self.path(key)
        tmp = self.root / f".{key}.{uuid.uuid4().hex}.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        try:
            write_parquet_atomic(load_schema("decisions").conform(decisions), tmp / "decisions.parquet")
            write_parquet_atomic(pa.table({"uid": uids.cast(pa.string())}), tmp / "uids.parquet")
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True, default=str) + "\n")
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return final
