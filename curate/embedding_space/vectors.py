"""Embedding columns <-> NumPy matrices, the embeddings table's Parquet layout, and the binary
form used to move vectors through Spark.

The embeddings table stores ``fixed_size_list<float16>``; Spark has neither float16 nor
fixed-size lists, so rows travel through Spark as ``binary`` holding the raw float16 bytes.

On disk the vector columns are written PLAIN (no dictionary, no min/max statistics), ZSTD as
every table: a dictionary of float16 values saves nothing (about 2^14 distinct values, 14-bit
indices for 16-bit values) and costs about 4x the decode (bench/embeddings_layout.py,
docs/scale-history.md). The logical schema is unchanged, so tables written before (dictionary-encoded)
read the same, as does every other Parquet reader (DuckDB, user code).
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from curate.errors import SchemaError

EMBEDDING_KINDS = ("image", "text", "concat")


def _chunk(arr) -> pa.Array:
    return arr.combine_chunks() if isinstance(arr, pa.ChunkedArray) else arr


def list_to_matrix(arr, where: str = "") -> np.ndarray:
    """(n, d) matrix (dtype of the list values, no copy when possible) from a fixed-size list column."""
    arr = _chunk(arr)
    if not pa.types.is_fixed_size_list(arr.type):
        raise SchemaError(f"{where}expected a fixed_size_list embedding column, got {arr.type}")
    if arr.null_count:
        raise SchemaError(f"{where}embedding column has {arr.null_count} null rows")
    d = arr.type.list_size
    flat = arr.flatten()  # honours the array's offset
    return flat.to_numpy(zero_copy_only=False).reshape(len(arr), d)


NORMALIZE_BLOCK_ROWS = 4096


def normalize_rows(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """float32 rows divided by their L2 norm (floored at ``eps``). The same bits as
    ``x / max(np.linalg.norm(x, axis=1), eps)`` (the norm is that function's own
    ``sqrt(add.reduce(x * x))``), computed in blocks of rows into one output array: no
    full-size temporaries for the float32 copy, the squares and the quotient."""
    x = np.asarray(x)
    if x.ndim != 2:
        x = np.asarray(x, dtype=np.float32)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), eps)
    out = np.empty(x.shape, dtype=np.float32)
    for s in range(0, x.shape[0], NORMALIZE_BLOCK_ROWS):
        xb = out[s:s + NORMALIZE_BLOCK_ROWS]
        xb[...] = x[s:s + NORMALIZE_BLOCK_ROWS]
        n = np.sqrt(np.add.reduce(xb * xb, axis=1, keepdims=True))
        np.divide(xb, np.maximum(n, eps), out=xb)
    return out


FINITE_BLOCK_ROWS = 4096


def _float16_all_finite_and_nonzero(x: np.ndarray) -> bool:
    """Whether no float16 value is inf or NaN and no row is all zeros: each row's largest
    magnitude bit pattern (sign cleared) is below 0x7C00, the first with every exponent bit set,
    and above 0. In blocks of rows into one small
    buffer: a matrix-sized temporary costs more in fresh pages than the test itself (0.46 s
    against 0.05 s for a just-decoded 100,000 x 512 shard)."""
    if x.size == 0:
        return True
    v = x.reshape(x.shape[0], -1).view(np.uint16) if x.ndim else x.reshape(1, 1).view(np.uint16)
    buf = np.empty(min(len(v), FINITE_BLOCK_ROWS) * v.shape[1], np.uint16)
    for s in range(0, len(v), FINITE_BLOCK_ROWS):
        blk = v[s:s + FINITE_BLOCK_ROWS]
        out = buf[:blk.size].reshape(blk.shape)
        np.bitwise_and(blk, np.uint16(0x7FFF), out=out)
        top = out.max(axis=1)  # per row: a row of (signed) zeros has 0 here
        if int(top.max()) >= 0x7C00 or int(top.min()) == 0:
            return False
    return True


def check_finite(x: np.ndarray, uids=None, where: str = "", column: str = "embedding") -> None:
    """Raise SchemaError naming the first row (its uid when given) holding NaN or infinity, or
    all zeros: one such row would poison k-means, similarities and thresholds for the whole
    pool, and a zero vector has no direction (every cosine with it is 0: never a duplicate,
    always "far" from its centroid, so DBP keeps it first). A zero vector is the usual
    placeholder for a missing embedding; leave such rows out of the table instead."""
    if x.dtype == np.float16:
        if _float16_all_finite_and_nonzero(np.asarray(x)):
            return
        # exponent bits all set = inf or NaN (3x faster than isfinite on float16)
        fin = (np.asarray(x).view(np.uint16) & np.uint16(0x7C00)) != np.uint16(0x7C00)
    else:
        fin = np.isfinite(x)
    ok = fin.all(axis=1) if x.ndim == 2 else fin
    if not ok.all():
        _bad_rows(~ok, uids, f"{where}{column} has NaN or infinite values")
    if x.ndim == 2 and len(x):
        _bad_rows(~np.asarray(x != 0).any(axis=1), uids, f"{where}{column} is all zeros")


def _bad_rows(bad_mask: np.ndarray, uids, what: str) -> None:
    bad = np.flatnonzero(bad_mask)
    if not len(bad):
        return
    row = f"row {bad[0]}"
    if uids is not None:
        u = uids[int(bad[0])]
        row += f" (uid {u.as_py() if hasattr(u, 'as_py') else u})"
    raise SchemaError(f"{what} in {len(bad)} rows, first {row}; re-embed those samples or drop them")


def check_embedding_shards(paths, columns=("image_embedding", "text_embedding")) -> int | None:
    """The embedding dim every shard shares, read from the Parquet footers (no data read);
    raises SchemaError naming the first shard whose embedding type or dim differs."""
    from curate.storage import parquet_file

    dim, first = None, None
    for p in paths:
        schema = parquet_file(p).schema_arrow
        for c in columns:
            if c not in schema.names:
                continue
            t = schema.field(c).type
            if not pa.types.is_fixed_size_list(t):
                raise SchemaError(f"{p}: {c} is {t}, expected fixed_size_list<float16>")
            if dim is None:
                dim, first = t.list_size, (p, c)
            elif t.list_size != dim:
                raise SchemaError(f"{p}: {c} has dim {t.list_size}, but {first[0]} ({first[1]}) has dim {dim}; "
                                  "one embeddings table holds one model's embeddings")
    return dim


def vector_parquet_options(schema: pa.Schema) -> dict:
    """The dataset's fixed writer options (``PARQUET_OPTIONS``) with the fixed-size-list (vector)
    columns left out of dictionary encoding and statistics; every other column as before."""
    from curate.tables.atomic import PARQUET_OPTIONS

    vectors = {f.name for f in schema if pa.types.is_fixed_size_list(f.type)}
    if not vectors:
        return dict(PARQUET_OPTIONS)
    others = [f.name for f in schema if f.name not in vectors]
    return {**PARQUET_OPTIONS, "use_dictionary": others, "write_statistics": others}


def write_vectors_parquet(table: pa.Table, path, row_group_size: int = 65536) -> int:
    """``tables.write_parquet_atomic`` with ``vector_parquet_options``: one shard of an embeddings
    table (or any table of vectors), atomically, local path or URI; returns the bytes written.
    The same rows always give the same bytes (fixed options, no timestamps)."""
    import pyarrow.parquet as pq

    from curate.tables.atomic import atomic_path

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp, row_group_size=row_group_size, **vector_parquet_options(table.schema))
        size = tmp.stat().st_size
    return size


def write_embeddings_table(dataset, name: str, table: pa.Table, rows_per_shard: int = 1_000_000) -> list:
    """``Dataset.write_table(name, table, schema="embeddings", rows_per_shard=...)`` in the
    embeddings layout (``write_vectors_parquet`` per shard): for benchmarks, tests and tools
    that write a whole embeddings table at once."""
    from curate.tables import load_schema

    table = load_schema("embeddings").conform(table)
    nshards = max(1, -(-table.num_rows // rows_per_shard))
    paths = []
    for i in range(nshards):
        p = dataset.shard_path(name, i)
        write_vectors_parquet(table.slice(i * rows_per_shard, rows_per_shard), p)
        paths.append(p)
    dataset.remove_shards_beyond(name, nshards)
    return paths


def embedding_matrix(table: pa.Table | pa.RecordBatch, kind: str = "image", where: str = "") -> np.ndarray:
    """float32, row-normalised matrix of the chosen embedding of an embeddings table.

    ``concat`` joins the normalised image and text embeddings and renormalises, so both
    halves weigh the same in cosine similarity.
    """
    if kind not in EMBEDDING_KINDS:
        raise ValueError(f"embedding must be one of {EMBEDDING_KINDS}, got {kind!r}")
    uids = table.column("uid") if "uid" in table.schema.names else None
    mats = []
    for c in embedding_columns(kind):
        x = list_to_matrix(table.column(c), where)
        check_finite(x, uids, where, c)
        mats.append(normalize_rows(x))
    if kind == "concat":
        return normalize_rows(np.concatenate(mats, axis=1))
    return mats[0]


def embedding_binary(table: pa.Table | pa.RecordBatch, kind: str = "image", where: str = "") -> pa.Array:
    """The chosen embedding as one binary float16 value per row, to move through the engine;
    the receiver normalises it (``normalize_rows(binary_to_matrix(...))``). ``image``/``text``:
    the stored row's bytes as they are (no copy), so the receiver's float32 normalisation is
    the one ``embedding_matrix`` makes, the reference's single normalisation of the stored
    vector (not one of a float16 rounding of it); ``concat``: the normalised concatenation,
    rounded to float16."""
    if kind == "concat":
        return matrix_to_binary(embedding_matrix(table, kind, where))
    if kind not in EMBEDDING_KINDS:
        raise ValueError(f"embedding must be one of {EMBEDDING_KINDS}, got {kind!r}")
    col = embedding_columns(kind)[0]
    x = list_to_matrix(table.column(col), where)
    check_finite(x, table.column("uid") if "uid" in table.schema.names else None, where, col)
    return matrix_to_binary(x)


def embedding_columns(kind: str) -> list[str]:
    return ["image_embedding", "text_embedding"] if kind == "concat" else [f"{kind}_embedding"]


def _contiguous(x: np.ndarray, dtype) -> np.ndarray:
    """``np.ascontiguousarray(x, dtype)``; float32 -> float16 through Arrow's cast, which rounds
    the same (nearest, ties to even; checked on every 97th float32 bit pattern) in about half
    NumPy's time (0.12 against 0.22 CPU s for 100,000 x 512)."""
    if np.dtype(dtype) == np.float16 and x.dtype == np.float32 and x.ndim == 2 and x.size:
        import pyarrow.compute as pc

        flat = pc.cast(pa.array(np.ascontiguousarray(x).reshape(-1)), pa.float16(), safe=False)
        return np.frombuffer(flat.buffers()[1], np.float16, count=x.size).reshape(x.shape)
    return np.ascontiguousarray(x, dtype=dtype)


def matrix_to_binary(x: np.ndarray, dtype=np.float16) -> pa.Array:
    """One binary value per row holding the row's raw bytes (default float16)."""
    x = _contiguous(np.asarray(x), dtype)
    n = x.shape[0]
    width = x.shape[1] * x.dtype.itemsize if x.ndim == 2 else 0
    offsets = (np.arange(n + 1, dtype=np.int64) * width)
    if offsets[-1] < 2**31:
        return pa.Array.from_buffers(pa.binary(), n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(x)])
    return pa.Array.from_buffers(pa.large_binary(), n, [None, pa.py_buffer(offsets), pa.py_buffer(x)])


def binary_to_matrix(arr, dim: int, dtype=np.float16) -> np.ndarray:
    """Inverse of ``matrix_to_binary``: an (n, dim) matrix of ``dtype``."""
    arr = _chunk(arr)
    n = len(arr)
    if n == 0:
        return np.zeros((0, dim), dtype=dtype)
    if arr.null_count:
        raise SchemaError(f"binary embedding column has {arr.null_count} nulls")
    width = dim * np.dtype(dtype).itemsize
    off_dtype = np.int64 if pa.types.is_large_binary(arr.type) else np.int32
    offsets = np.frombuffer(arr.buffers()[1], dtype=off_dtype)[arr.offset: arr.offset + n + 1]
    if not np.all(np.diff(offsets) == width):
        raise SchemaError(f"binary embeddings are not all {width} bytes ({dim} x {np.dtype(dtype).name})")
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)[offsets[0]: offsets[0] + n * width]
    return data.view(dtype).reshape(n, dim)
