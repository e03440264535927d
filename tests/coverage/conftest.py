"""Fixtures for the coverage tests: hand-built sample tables and subsets."""

from __future__ import annotations

import pyarrow as pa
import pytest

from curate.tables import Dataset
from curate.uid import derive_uid


def write_pool(root, texts: list[str], shards: int = 1, prefix: str = "http://example.test/") -> Dataset:
    """A samples table of ``texts`` (sorted by uid, like ingest writes it), cut into ``shards``."""
    n = len(texts)
    urls = [f"{prefix}{i}.jpg" for i in range(n)]
    t = pa.table({
        "uid": [derive_uid(u, x) for u, x in zip(urls, texts)], "url": urls, "text": texts,
        "source_file": ["pool.parquet"] * n, "source_row": list(range(n)),
        "original_width": pa.nulls(n, pa.int32()), "original_height": pa.nulls(n, pa.int32()),
        "extra": pa.nulls(n, pa.string()),
    }).sort_by("uid")
    ds = Dataset(root)
    ds.write_table("samples", t, schema="samples", rows_per_shard=max(1, -(-n // shards)))
    return ds


def uid_of(ds: Dataset) -> dict[int, str]:
    """source_row -> uid."""
    t = ds.read("samples", columns=["uid", "source_row"])
    return dict(zip(t.column("source_row").to_pylist(), t.column("uid").to_pylist()))


@pytest.fixture
def make_pool():
    return write_pool


def write_tiny_embeddings(ds: Dataset, uids: list[str], seed: int = 0, rows_per_shard: int = 4) -> str:
    """embeddings/curate-tiny__random-seed0 (64 dims) with random unit image vectors: the id
    names a model curate builds locally (random weights from seed 0), so no manifest is needed."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(len(uids), 64))
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float16)
    flat = pa.FixedSizeListArray.from_arrays(pa.array(x.ravel()), 64)
    name = "curate-tiny__random-seed0"
    ds.write_table(f"embeddings/{name}", pa.table({
        "uid": uids, "image_embedding": flat, "text_embedding": flat,
        "clip_score": pa.array(np.zeros(len(uids)), pa.float32())}), schema="embeddings", rows_per_shard=rows_per_shard)
    return name
