"""MetaCLIP v1 substring matching: crafted cases and a property test against the plain loop."""

from __future__ import annotations

import pyarrow as pa
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.metaclip.matching import Matcher, can_match, naive_match, spacing, spacing_array


def ids(entries, text):
    return Matcher(entries).match([text])[0]


def test_spacing_rules():
    assert spacing("a,b") == " a , b "
    assert spacing("Hi!\tyou?\nok;\rx:y`z.") == " Hi !  you ?  ok ;  x : y ` z .  "
    assert spacing("") == "  "
    # Other punctuation is left alone.
    assert spacing("it's a-b (c) \"d\"") == " it's a-b (c) \"d\" "
    texts = pa.array(["a,b", "Hi!\tyou?\nok;\rx:y`z.", "", None, "café. Ünïcode"])
    assert spacing_array(texts).to_pylist() == [spacing(t or "") for t in texts.to_pylist()]


def test_word_boundaries_come_from_spaces_and_wrapped_punctuation():
    entries = ["dog", "cat", "hot dog"]
    assert ids(entries, "a dog") == [0]
    assert ids(entries, "dogs and cats") == []  # no stemming, no partial words
    assert ids(entries, "hotdog") == []
    assert ids(entries, "dog,cat.") == [0, 1]  # wrapped marks split words
    assert ids(entries, "dog-cat") == []  # '-' is not wrapped
    assert ids(entries, "(dog)") == []  # nor are brackets
    assert ids(entries, "a\thot\ndog") == [0, 2]  # tab and newline become spaces
    assert ids(entries, "hot  dog") == [0]  # two spaces do not match "hot dog"


def test_case_sensitive():
    entries = ["Dog", "dog", "New York"]
    assert ids(entries, "Dog and dog") == [0, 1]
    assert ids(entries, "DOG") == []
    assert ids(entries, "new york") == []
    assert ids(entries, "in New York!") == [2]


def test_entries_holding_wrapped_punctuation_never_match():
    entries = ["U.S.", "e.g.", "St. Louis", "what?", "a,b", "x`y", "tab\tx", "ok"]
    for text in ["the U.S. army", "e.g. this", "St. Louis", "what?", "a,b", "x`y", "tab\tx ok"]:
        assert [i for i in ids(entries, text) if i != 7] == []
    assert [can_match(e) for e in entries] == [False] * 7 + [True]
    # Other punctuation inside entries is fine.
    assert ids(["it's", "t-shirt", "AT&T"], "it's a t-shirt from AT&T.") == [0, 1, 2]


def test_overlapping_and_nested_entries_all_reported():
    entries = ["new york", "york city", "new york city", "city", "new"]
    assert ids(entries, "new york city") == [0, 1, 2, 3, 4]
    assert ids(["a a", "a"], "a a a") == [0, 1]
    assert ids(["aa", "a"], "aaa") == []


def test_unicode():
    entries = ["café", "Zürich", "東京", "naïve", "😀"]
    assert ids(entries, "café in Zürich. 東京 😀") == [0, 1, 2, 4]
    # NFC vs NFD are different strings, as in MetaCLIP's plain substring test.
    assert ids(entries, "nai\u0308ve") == []
    assert ids(entries, "na\u00efve") == [3]
    assert ids(entries, "東京タワー") == []  # no spaces around: no match, as with `in`


def test_duplicate_and_odd_entries_match_like_the_plain_loop():
    entries = ["dog", "cat", "dog", "", " dog", "dog ", "a  b"]
    for text in ["dog", "a dog, a cat", "dog.", "  dog  ", "a  b", "x"]:
        assert ids(entries, text) == naive_match(text, entries), text
    assert ids(entries, "dog") == [0, 2]  # both ids of a repeated entry
    assert Matcher([]).match(["anything"]) == [[]]


def test_match_array_shape():
    m = Matcher(["dog", "cat"])
    arr = m.match_array(pa.chunked_array([["cat dog", None, "bird"], ["dog"]]))
    assert arr.type == pa.list_(pa.int32())
    assert arr.to_pylist() == [[0, 1], [], [], [0]]


_ALPHABET = st.sampled_from(list("ab ,.;:?!`\t\n\rA-é"))


@settings(max_examples=300, deadline=None)
@given(entries=st.lists(st.text(_ALPHABET, max_size=5), max_size=12),
       texts=st.lists(st.text(_ALPHABET, max_size=30), min_size=1, max_size=5))
def test_automaton_equals_plain_loop(entries, texts):
    got = Matcher(entries).match(texts)
    assert got == [naive_match(t, entries) for t in texts]


def test_signposts_and_separators_never_match():
    # Signpost keys (space + char + tab) and the text separator are internal: entries that
    # start with those characters, and texts full of them, still match as the plain loop.
    entries = [".", ",x", " ", "", "\n", "a", "-b", "'c", "\t"]
    texts = ["a .  ,x", "\n\na\n", " -b 'c ", "a\t", "", None, "  ", ". , ; : ? ! `"]
    got = Matcher(entries).match(texts)
    assert got == [naive_match(t or "", entries) for t in texts]


def test_repeated_texts_and_chunks_match_each_row(monkeypatch):
    import curate.metaclip.matching as matching

    entries = ["dog", "cat", "hot dog"]
    texts = ["hot dog", "cat", None, "hot dog", "x", "cat", "hot dog", "", "dog cat"] * 3
    expect = [naive_match(t or "", entries) for t in texts]
    assert Matcher(entries).match(texts) == expect
    monkeypatch.setattr(matching, "_MAX_CHUNK_BYTES", 5)  # several texts per automaton pass
    assert Matcher(entries).match(texts) == expect
    assert matching._chunks(pa.array(["abcdefgh", "ab", "abc", "a", ""]), 5) == [(0, 1), (1, 3), (3, 5)]
