"""A table's cheap content identity: what the recipe cache keys stage runs by and what a
clustering records of the embeddings it was made from."""

from __future__ import annotations

import hashlib

from curate import storage
from curate.tables.dataset import Dataset


def table_fingerprint(dataset: Dataset, name: str) -> dict:
    """Cheap content identity of a table: per shard, its name, size and a hash of its tail.

    A Parquet file ends with its footer (row counts, column statistics, page offsets), so
    the tail changes with the content while reading it costs one small read per shard;
    rewriting identical rows (our writers are byte-deterministic) keeps the fingerprint.
    """
    shards = []
    for p in dataset.shards(name):
        loc = storage.resolve(p)
        with loc.fs.open_input_file(loc.path) as f:
            size = f.size()
            f.seek(max(0, size - 65536))
            tail = hashlib.sha256(f.read()).hexdigest()[:16]
        shards.append([storage.basename(p), size, tail])
    return {"table": name, "shards": shards}
