"""Synthetic embeddings tables for the embedding-space tests (written directly, as the embed
job would)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.embedding_space.vectors import write_embeddings_table
from curate.tables import Dataset, load_schema


def uid(i: int) -> str:
    """A distinct hex uid per row whose sort order is not row order (the golden-ratio
    multiplier wraps 64 bits from i = 2 on), so a test can tell a uid tie-break from a
    row-order one."""
    return f"{(i * 0x9E3779B97F4A7C15) % (1 << 64):016x}{i:016x}"


def clustered_embeddings(n: int = 2000, d: int = 32, centers: int = 8, dup_frac: float = 0.25,
                         dup_noise: float = 0.02, seed: int = 0) -> np.ndarray:
    """Normalised Gaussian-mixture vectors where ``dup_frac`` of rows are noisy copies of others."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((centers, d)) * 2.5
    lab = rng.integers(0, centers, n)
    x = mu[lab] + rng.standard_normal((n, d))
    ndup = int(n * dup_frac)
    dst = rng.choice(n, ndup, replace=False)
    src = rng.integers(0, n, ndup)
    x[dst] = x[src] + rng.standard_normal((ndup, d)) * dup_noise * np.linalg.norm(x[src], axis=1, keepdims=True) / np.sqrt(d)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def write_embeddings(ds: Dataset, model_id: str, x: np.ndarray, uids: list[str] | None = None,
                     text: np.ndarray | None = None, rows_per_shard: int = 700,
                     dictionary_encoded: bool = False) -> list[str]:
    """The embed job's layout (``vectors.write_embeddings_table``: vector columns PLAIN), or with
    ``dictionary_encoded`` the layout tables written before 2026-12-02 have (every column
    dictionary-encoded, ``Dataset.write_table``'s options)."""
    n, d = x.shape
    uids = uids or [uid(i) for i in range(n)]
    text = x[:, ::-1].copy() if text is None else text
    f16 = x.astype(np.float16)
    t = pa.Table.from_arrays(
        [pa.array(uids, pa.string()),
         pa.FixedSizeListArray.from_arrays(pa.array(f16.reshape(-1)), d),
         pa.FixedSizeListArray.from_arrays(pa.array(text.astype(np.float16).reshape(-1)), d),
         pa.array(np.einsum("ij,ij->i", x, text).astype(np.float32))],
        schema=load_schema("embeddings").arrow(dim=d))
    if dictionary_encoded:
        ds.write_table(f"embeddings/{model_id}", t, schema="embeddings", rows_per_shard=rows_per_shard)
    else:
        write_embeddings_table(ds, f"embeddings/{model_id}", t, rows_per_shard=rows_per_shard)
    return uids


def sample_on_the_driver(paths, embedding: str, limit: int) -> np.ndarray:
    """guards.embedding_sample as first written (the reference the engine's pick is checked
    against): every shard's uid column read in this process, the ``limit`` smallest seed-0 uid
    hashes (ties: earlier shard, then earlier row), then the picked rows' vectors."""
    import pyarrow.parquet as pq

    from curate.embedding_space.sampling import uid_hash_array
    from curate.embedding_space.vectors import embedding_columns, embedding_matrix

    best_h, best_x = np.zeros(0, np.int64), None
    for p in paths:
        t = pq.read_table(p, columns=["uid", *embedding_columns(embedding)])
        h = uid_hash_array(t.column("uid"), 0)
        sel = np.argsort(h, kind="stable")[:limit]
        x = embedding_matrix(t.take(pa.array(sel)), embedding)
        hs = np.concatenate([best_h, h[sel]])
        xs = x if best_x is None else np.concatenate([best_x, x])
        keep = np.argsort(hs, kind="stable")[:limit]
        best_h, best_x = hs[keep], xs[keep]
    return best_x
