import numpy as np
import pyarrow as pa
import pytest

from curate.embedding_space.common import uid_hash
from curate.embedding_space.vectors import binary_to_matrix, embedding_matrix, list_to_matrix, matrix_to_binary
from curate.errors import SchemaError


def test_binary_roundtrip_and_slices():
    x = np.random.default_rng(0).standard_normal((7, 5)).astype(np.float16)
    b = matrix_to_binary(x)
    assert b.type == pa.binary() and len(b[0].as_py()) == 10
    np.testing.assert_array_equal(binary_to_matrix(b, 5), x)
    np.testing.assert_array_equal(binary_to_matrix(b.slice(2, 3), 5), x[2:5])
    np.testing.assert_array_equal(binary_to_matrix(pa.chunked_array([b.slice(0, 3), b.slice(3)]), 5), x)
    with pytest.raises(SchemaError, match="not all 8 bytes"):
        binary_to_matrix(b, 4)


def test_embedding_matrix_kinds():
    img = np.array([[3, 4], [1, 0]], np.float16)
    txt = np.array([[0, 2], [0, 1]], np.float16)
    t = pa.table({"image_embedding": pa.FixedSizeListArray.from_arrays(pa.array(img.reshape(-1)), 2),
                  "text_embedding": pa.FixedSizeListArray.from_arrays(pa.array(txt.reshape(-1)), 2)})
    np.testing.assert_allclose(embedding_matrix(t, "image"), [[0.6, 0.8], [1, 0]], atol=1e-3)
    c = embedding_matrix(t, "concat")
    np.testing.assert_allclose(c[0], np.array([0.6, 0.8, 0, 1]) / np.sqrt(2), atol=1e-3)
    np.testing.assert_array_equal(list_to_matrix(t.column("text_embedding").slice(1)), txt[1:])
    with pytest.raises(ValueError, match="embedding must be one of"):
        embedding_matrix(t, "audio")


def test_uid_hash_is_order_free_and_seeded():
    uids = [f"{i:032x}" for i in range(1000)]
    h = uid_hash(uids, seed=1)
    assert h.dtype == np.int64 and (h >= 0).all() and len(set(h.tolist())) == 1000
    assert np.array_equal(uid_hash(uids[::-1], seed=1), h[::-1])
    assert not np.array_equal(uid_hash(uids, seed=2), h)
    # roughly uniform: about half below the midpoint
    assert 400 < int((h < 2**62).sum()) < 600


def test_vector_columns_written_plain_keep_the_logical_schema(tmp_path):
    """write_vectors_parquet: the vector columns skip dictionary encoding and statistics (the
    fast decode), every other column keeps the dataset's options, the Arrow schema is the
    embeddings schema, and DuckDB reads the vectors as before."""
    import duckdb
    import pyarrow.parquet as pq

    from curate.embedding_space.vectors import vector_parquet_options, write_vectors_parquet
    from curate.tables import load_schema, write_parquet_atomic
    from curate.tables.atomic import PARQUET_OPTIONS

    schema = load_schema("embeddings").arrow(dim=4)
    opts = vector_parquet_options(schema)
    assert opts["use_dictionary"] == ["uid", "clip_score"] and opts["write_statistics"] == ["uid", "clip_score"]
    assert vector_parquet_options(pa.schema([("uid", pa.string())])) == PARQUET_OPTIONS
    x = np.random.default_rng(0).standard_normal((50, 4)).astype(np.float16)
    fsl = pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1)), 4)
    t = pa.Table.from_arrays([pa.array([f"{i:032x}" for i in range(50)]), fsl, fsl,
                              pa.array(np.ones(50, np.float32))], schema=schema)
    p = tmp_path / "part-00000.parquet"
    size = write_vectors_parquet(t, p)
    assert size == p.stat().st_size
    first = p.read_bytes()
    write_vectors_parquet(t, p)
    assert p.read_bytes() == first  # same rows, same bytes
    f = pq.ParquetFile(p)
    rg = f.metadata.row_group(0)
    cols = {rg.column(i).path_in_schema.split(".")[0]: rg.column(i) for i in range(rg.num_columns)}
    assert "RLE_DICTIONARY" not in cols["image_embedding"].encodings and not cols["image_embedding"].is_stats_set
    assert "RLE_DICTIONARY" in cols["uid"].encodings and cols["uid"].is_stats_set
    back = pq.read_table(p)
    write_parquet_atomic(t, tmp_path / "dictionary.parquet")  # the layout tables written before have
    before = pq.read_table(tmp_path / "dictionary.parquet")
    assert back.schema.equals(before.schema, check_metadata=True) and back.equals(before)
    np.testing.assert_array_equal(list_to_matrix(back.column("image_embedding")), x)
    got = duckdb.sql(f"SELECT image_embedding FROM read_parquet('{p}') ORDER BY uid LIMIT 1").fetchall()[0][0]
    np.testing.assert_allclose(np.asarray(got, np.float32), x[0].astype(np.float32))


def test_float32_rows_to_float16_binary_round_as_numpy():
    """matrix_to_binary's float32 -> float16 (Arrow's cast) gives NumPy's bits, ties and
    overflow included."""
    rng = np.random.default_rng(4)
    x = np.concatenate([rng.standard_normal((300, 8)).astype(np.float32) * s for s in (1e-8, 1e-4, 1.0, 1e4)])
    ties = (np.arange(1, 9, dtype=np.float32) + np.float32(0.5)) * np.float32(2.0 ** -10)  # halfway values
    x = np.concatenate([x, np.tile(ties, (1, 1)), np.array([[7e4, -7e4, 65520, 65519, 6e-8, 3e-8, 0, -0.0]],
                                                           np.float32)])
    got = binary_to_matrix(matrix_to_binary(x), 8)
    with np.errstate(over="ignore"):
        want = x.astype(np.float16)
    assert np.array_equal(got.view(np.uint16), want.view(np.uint16))
    np.testing.assert_array_equal(binary_to_matrix(matrix_to_binary(x[::2]), 8), want[::2])  # strided input
