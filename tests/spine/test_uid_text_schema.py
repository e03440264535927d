import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.errors import SchemaError
from curate.tables import load_schema, schema_names
from curate.text import normalize_text, normalize_text_py, word_count
from curate.uid import datacomp_to_uids, derive_uid, derive_uids, normalize_uid, uids_to_datacomp


def test_derived_uid_is_stable_128bit_hex_and_depends_on_both_fields():
    u = derive_uid("http://a/x.jpg", "a cat")
    assert len(u) == 32 and int(u, 16) >= 0 and u == u.lower()
    assert u == derive_uid("http://a/x.jpg", "a cat")
    assert u != derive_uid("http://a/x.jpg", "a cat ")
    assert u != derive_uid("http://a/x.jpgа", "cat")  # separator: no ambiguity between fields
    assert derive_uid("ab", "c") != derive_uid("a", "bc")
    assert derive_uids(["http://a/x.jpg"], ["a cat"]).to_pylist() == [u]


def test_input_uid_normalisation():
    assert normalize_uid("  ABCDEF0123456789ABCDEF0123456789 ") == "abcdef0123456789abcdef0123456789"
    assert normalize_uid("xyz") is None
    assert normalize_uid("a" * 33) is None


@given(st.lists(st.integers(min_value=0, max_value=2**128 - 1), max_size=50))
def test_datacomp_u8u8_round_trip(ints):
    uids = [f"{i:032x}" for i in ints]
    arr = uids_to_datacomp(uids)
    assert arr.dtype == np.dtype("u8,u8")
    back = datacomp_to_uids(arr)
    assert back == sorted(uids)  # sorted by (high, low) == sorted hex order
    for u, (hi, lo) in zip(sorted(uids), arr):
        assert (int(hi) << 64) | int(lo) == int(u, 16)


@settings(max_examples=300)
@given(st.lists(st.one_of(st.none(), st.text(alphabet=st.characters(codec="utf-8"), max_size=40)), max_size=20))
def test_vectorised_normalisation_equals_reference(texts):
    got = normalize_text(pa.array(texts, pa.string())).to_pylist()
    want = [None if t is None else normalize_text_py(t) for t in texts]
    assert got == want


@given(st.text(alphabet=st.characters(codec="utf-8"), max_size=60))
def test_normalisation_is_idempotent_and_collapses_whitespace(t):
    n = normalize_text_py(t)
    assert normalize_text_py(n) == n
    assert "  " not in n and n == n.strip()
    assert word_count(pa.array([n])).to_pylist() == [len(n.split())]


def test_normalisation_keeps_html_scripts_and_emoji():
    t = '<b>Price</b>\u00a0 €5 — 東京タワー  🐱\n\tcafé'
    assert normalize_text_py(t) == '<b>Price</b> €5 — 東京タワー 🐱 café'


def test_every_schema_loads_with_docs():
    for name in schema_names():
        ts = load_schema(name)
        assert ts.version >= 1 and ts.doc
        for c in ts.columns:
            assert c.doc, f"{name}.{c.name} has no doc"
        schema = ts.arrow(dim=8)
        assert schema.metadata[b"curate.table"] == ts.table.encode()


def test_schema_validation_names_the_problem():
    ts = load_schema("samples")
    good = ts.arrow().empty_table()
    ts.validate(good)
    with pytest.raises(SchemaError, match="missing column 'url'"):
        ts.validate(good.drop_columns(["url"]))
    bad = good.set_column(1, pa.field("url", pa.int64()), pa.array([], pa.int64()))
    with pytest.raises(SchemaError, match="column 'url' has type int64"):
        ts.validate(bad)
    nulls = pa.table({n: pa.array([None], good.schema.field(n).type) for n in good.column_names})
    with pytest.raises(SchemaError, match="not nullable"):
        ts.validate(nulls)


def test_fixed_size_list_schema_accepts_any_dim_but_not_other_types():
    ts = load_schema("embeddings")
    t = pa.table({
        "uid": pa.array(["0" * 32]),
        "image_embedding": pa.array([[0.1] * 4], pa.list_(pa.float16(), 4)),
        "text_embedding": pa.array([[0.1] * 4], pa.list_(pa.float16(), 4)),
        "clip_score": pa.array([0.5], pa.float32()),
    })
    ts.validate(t)
    bad = t.set_column(1, "image_embedding", pa.array([[0.1] * 4], pa.list_(pa.float32(), 4)))
    with pytest.raises(SchemaError, match="image_embedding"):
        ts.validate(bad)
