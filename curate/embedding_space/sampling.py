"""The k-means training sample: its size bound, the uid hash that picks it, and the per-shard
decode cache that lets `curate cluster` decode each embeddings shard once.

The sample is the rows with the smallest uid hashes (independent of sharding and of how an
executor partitions the work); its size is

    rows = min(input rows, sample_size or k * max_points_per_centroid, max_sample_bytes // (4 * dim))

The first two terms are FAISS's own subsampling (``ClusteringParameters.max_points_per_centroid``);
the third is a byte cap on the float32 training matrix that does not grow with the pool or
with k, so the driver's memory is bounded whatever the pool (docs/scale.md).
"""

from __future__ import annotations


import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

# float32 training matrix at most this large (2 GiB: 1,048,576 rows at 512 dims, 699,050 at 768)
MAX_SAMPLE_BYTES = 2 << 30

_HEX = np.full(256, 255, dtype=np.uint8)
for _i, _c in enumerate(b"0123456789abcdef"):
    _HEX[_c] = _i
for _i, _c in enumerate(b"ABCDEF"):
    _HEX[_c] = 10 + _i


def sample_rows(total: int, k: int, dim: int, max_points_per_centroid: int = 256, sample_size: int | None = None,
                max_sample_bytes: int = MAX_SAMPLE_BYTES) -> tuple[int, bool]:
    """(training rows, whether the byte cap cut the sample). Never below k (k-means needs k points)."""
    want = min(total, sample_size or k * max_points_per_centroid)
    cap = max(k, int(max_sample_bytes) // (4 * max(dim, 1)))
    return (cap, True) if want > cap else (want, False)


def uid_hash_array(uids, seed: int = 0) -> np.ndarray:
    """``curate.embedding_space.common.uid_hash`` (splitmix64 of the uid's bits), vectorised over an
    Arrow string column of 32-hex-char uids without building Python strings; other uids go
    through the reference function."""
    from curate.embedding_space.common import mix_uid_words, uid_hash

    arr = uids.combine_chunks() if isinstance(uids, pa.ChunkedArray) else uids
    if not isinstance(arr, pa.Array):
        return uid_hash(list(uids), seed)
    n = len(arr)
    if n == 0:
        return np.zeros(0, np.int64)
    if arr.null_count or not pc.all(pc.equal(pc.binary_length(arr), 32)).as_py():
        return uid_hash(arr.to_pylist(), seed)
    arr = arr.cast(pa.string())
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int32)[arr.offset: arr.offset + n + 1]
    data = np.frombuffer(arr.buffers()[2], dtype=np.uint8)
    start = offsets[0]
    nib = _HEX[data[start: start + 32 * n]].reshape(n, 32)
    if (nib == 255).any():  # not hex: the reference raises the same error it always did
        return uid_hash(arr.to_pylist(), seed)
    # hex pairs -> bytes -> two big-endian 64-bit words per uid
    packed = np.ascontiguousarray((nib[:, 0::2] << 4) | nib[:, 1::2])
    words = packed.view(">u8").astype(np.uint64)
    return mix_uid_words(words[:, 0], words[:, 1], seed)


# ---------------------------------------------------------------- decode cache
def cache_paths(cache_dir: str, index: int, columns: list[str]) -> list[str]:
    from curate.storage import join

    return [join(str(cache_dir), f"{index:05d}-{c}.npy") for c in columns]


def save_cache(cache_dir: str, index: int, columns: list[str], mats: list[np.ndarray]) -> None:
    """The shard's decoded float16 embedding matrices, one .npy per column, each written atomically."""
    from curate.storage import is_uri, npy_bytes
    from curate.tables.atomic import atomic_path, atomic_write_bytes

    for p, x in zip(cache_paths(cache_dir, index, columns), mats):
        if is_uri(p):  # one whole object (bounded by one shard)
            atomic_write_bytes(p, npy_bytes(x))
            continue
        with atomic_path(p) as tmp:
            with open(tmp, "wb") as f:
                np.save(f, np.ascontiguousarray(x), allow_pickle=False)


def load_cache(cache_dir: str | None, index: int, columns: list[str], rows: int) -> list[np.ndarray] | None:
    """The cached matrices (memory-mapped locally) when every one exists with ``rows`` rows, else None."""
    from curate import storage

    if not cache_dir:
        return None
    paths = cache_paths(cache_dir, index, columns)
    if not all(storage.exists(p) for p in paths):
        return None
    mats = [storage.load_npy(p, mmap=True) for p in paths]
    return mats if all(m.ndim == 2 and m.shape[0] == rows for m in mats) else None


def normalized_matrix(mats: list[np.ndarray], kind: str, uids=None, where: str = "") -> np.ndarray:
    """``vectors.embedding_matrix`` from already decoded float16 matrices (same checks, same bits)."""
    from curate.embedding_space.vectors import check_finite, embedding_columns, normalize_rows

    out = []
    for c, x in zip(embedding_columns(kind), mats):
        check_finite(x, uids, where, c)
        out.append(normalize_rows(x))
    return normalize_rows(np.concatenate(out, axis=1)) if kind == "concat" else out[0]


def read_shard_matrices(path: str, kind: str, cache_dir: str | None = None, index: int = 0,
                        write_cache: bool = False) -> tuple[pa.Array, list[np.ndarray]]:
    """(uid column, decoded float16 matrices of ``kind``'s columns) of one embeddings shard, from the
    decode cache when it holds this shard; decoding is the costly part of reading a shard
    (a 512-d float16 list row: ~3 us PLAIN as embed writes it since 2026-12-02, ~12 us in the
    dictionary-encoded layout of older tables; docs/scale-history.md)."""
    from curate.embedding_space.vectors import embedding_columns, list_to_matrix
    from curate.storage import read_parquet
    from curate.errors import DatasetError

    cols = embedding_columns(kind)
    try:
        if cache_dir:
            uids = read_parquet(path, columns=["uid"]).column("uid").combine_chunks()
            mats = load_cache(cache_dir, index, cols, len(uids))
            if mats is not None:
                return uids, mats
        t = read_parquet(path, columns=["uid", *cols])
    except (pa.ArrowInvalid, OSError, KeyError) as e:
        raise DatasetError(f"{path}: cannot read columns {['uid', *cols]}: {e}") from e
    mats = [list_to_matrix(t.column(c), f"{path}: ") for c in cols]
    if write_cache and cache_dir:
        save_cache(cache_dir, index, cols, mats)
    return t.column("uid").combine_chunks(), mats


# ---------------------------------------------------------------- the guards' sample, from the sample pass
def guard_candidates_path(cache_dir: str, index: int) -> str:
    from curate.storage import join

    return join(str(cache_dir), f"guard-{index:05d}.npz")


def save_guard_candidates(cache_dir: str, index: int, uids: pa.Array, mats: list[np.ndarray], kind: str,
                          where: str = "") -> None:
    """The shard's share of ``guards.embedding_sample``: its ``PAIR_SAMPLE`` rows with the
    smallest seed-0 uid hash (stable order), normalised as that function does. `curate cluster`
    has every shard decoded in its sample pass already; without this, each later job's guard
    decoded the whole embeddings table once more on the driver."""
    import io

    from curate.embedding_space.guards import PAIR_SAMPLE
    from curate.tables.atomic import atomic_write_bytes

    h = uid_hash_array(uids, 0)
    sel = np.argsort(h, kind="stable")[:PAIR_SAMPLE]
    picked = [np.asarray(m[sel]) for m in mats]
    if not all(np.isfinite(m).all() for m in picked):
        return  # no file: the later job reads the table and names the bad row as it always did
    x = normalized_matrix(picked, kind, uids.take(pa.array(sel)), where)
    buf = io.BytesIO()
    np.savez(buf, hash=h[sel], x=x)
    atomic_write_bytes(guard_candidates_path(cache_dir, index), buf.getvalue())  # local path or object


def merge_guard_candidates(cache_dir: str, shard_rows: list[int]) -> np.ndarray | None:
    """``guards.embedding_sample(shards)`` from the per-shard candidates (same rows, same order,
    same bits: shards merged in order, ties kept stable); None when a non-empty shard's file
    is missing."""
    import io

    from curate import storage
    from curate.embedding_space.guards import PAIR_SAMPLE

    best_h, best_x = np.zeros(0, np.int64), None
    for i, rows in enumerate(shard_rows):
        if rows == 0:
            continue
        p = guard_candidates_path(cache_dir, i)
        if not storage.exists(p):
            return None
        with np.load(io.BytesIO(storage.read_bytes(p)), allow_pickle=False) as z:
            h, x = z["hash"], z["x"]
        hs = np.concatenate([best_h, h])
        xs = x if best_x is None else np.concatenate([best_x, x])
        keep = np.argsort(hs, kind="stable")[:PAIR_SAMPLE]
        best_h, best_x = hs[keep], xs[keep]
    return best_x if best_x is not None else np.zeros((0, 1), np.float32)
