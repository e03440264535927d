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
