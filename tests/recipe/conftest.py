"""A small pool written with the real schemas: samples, downloads, embeddings."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from curate.tables import Dataset, load_schema
from curate.uid import derive_uid


def make_pool(root, n: int = 200, dim: int = 8, seed: int = 0) -> Dataset:
    rng = np.random.default_rng(seed)
    ds = Dataset(root)
    urls = [f"http://127.0.0.1/img/{i}.jpg" for i in range(n)]
    texts = [("a red circle " * (1 + i % 4)).strip() if i % 5 else f"spam {i}" for i in range(n)]
    uids = [derive_uid(u, t) for u, t in zip(urls, texts)]
    samples = pa.table({
        "uid": uids, "url": urls, "text": texts, "source_file": ["pool.parquet"] * n,
        "source_row": pa.array(range(n), pa.int64()),
        "original_width": pa.array([64] * n, pa.int32()), "original_height": pa.array([64] * n, pa.int32()),
        "extra": pa.nulls(n, pa.string()),
    })
    ds.write_table("samples", samples, schema="samples")
    ok = [i % 10 != 3 for i in range(n)]
    downloads = pa.table({
        "uid": uids, "status": ["success" if o else "failed" for o in ok],
        "error_class": [None if o else "http_404" for o in ok], "error_message": [None if o else "404" for o in ok],
        "sha256": pa.nulls(n, pa.string()), "width": pa.array([64] * n, pa.int32()), "height": pa.array([64] * n, pa.int32()),
        "original_width": pa.array([64] * n, pa.int32()), "original_height": pa.array([64] * n, pa.int32()),
        "shard": pa.nulls(n, pa.string()), "key": pa.nulls(n, pa.string()), "attempts": pa.array([1] * n, pa.int32()),
    })
    ds.write_table("downloads", downloads, schema="downloads")
    okuids = [u for u, o in zip(uids, ok) if o]
    m = len(okuids)
    img = rng.normal(size=(m, dim)).astype(np.float32)
    img /= np.linalg.norm(img, axis=1, keepdims=True)
    txt = rng.normal(size=(m, dim)).astype(np.float32)
    txt /= np.linalg.norm(txt, axis=1, keepdims=True)
    score = (img * txt).sum(1).astype(np.float32)
    emb = pa.table({
        "uid": okuids,
        "image_embedding": pa.FixedSizeListArray.from_arrays(pa.array(img.astype(np.float16).ravel()), dim),
        "text_embedding": pa.FixedSizeListArray.from_arrays(pa.array(txt.astype(np.float16).ravel()), dim),
        "clip_score": pa.array(score, pa.float32()),
    })
    ds.write_table("embeddings/toy-model", emb, schema="embeddings")
    return ds


@pytest.fixture
def pool(tmp_path) -> Dataset:
    return make_pool(tmp_path / "pool")
