"""Caption statistics: vectorised counts equal DataComp's per-row Python; real fastText labels."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from curate.filters import langid
from curate.filters.text_stats import char_count, text_stats, token_count, word_count

# Characters that matter to the counts: every kind of separator, NUL, a zero-width space
# (not whitespace), and ordinary letters, including multi-byte ones.
_ALPHABET = st.sampled_from(list("ab é中") + ["\n", "\r", "\t", "\x0b", "\x0c", "\x00", "\x1c", "\x85",
                                             "\xa0", "\u2003", "\u2028", "\u3000", "\u200b"])


def fasttext_tokens(text: str) -> list[str]:
    """fastText's Dictionary::readWord over the UTF-8 bytes (what fasttext.tokenize returns)."""
    seps = set(b" \n\r\t\x0b\x0c\x00")
    out, word = [], bytearray()
    for c in text.encode("utf-8"):
        if c in seps:
            if word:
                out.append(word.decode())
                word = bytearray()
            if c == ord("\n"):
                out.append("</s>")
        else:
            word.append(c)
    if word:
        out.append(word.decode())
    return out


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(_ALPHABET, max_size=12), min_size=1, max_size=20))
def test_counts_match_python(texts):
    arr = pa.array(texts, pa.string())
    assert word_count(arr).to_pylist() == [len(t.split()) for t in texts]
    assert char_count(arr).to_pylist() == [len(t) for t in texts]
    assert token_count(arr).to_pylist() == [len(fasttext_tokens(t)) for t in texts]


def test_fasttext_tokens_reference():
    assert fasttext_tokens("a b\nc") == ["a", "b", "</s>", "c"]
    assert fasttext_tokens("a\xa0b") == ["a\xa0b"]  # no-break space is not a fastText separator
    assert token_count(pa.array(["a b\nc", "\n\n", ""])).to_pylist() == [4, 2, 0]


@pytest.fixture(scope="module")
def model():
    return langid.load_model()


def test_newlines_become_spaces(model):
    texts = ["a black dog\nrunning on\nthe beach", "a black dog running on the beach", "un chien\nnoir"]
    lang, score = langid.predict_languages(pa.array(texts), model)
    assert lang.to_pylist()[:2] == ["en", "en"]
    assert score[0].as_py() == score[1].as_py()  # same line once newlines are spaces
    assert lang[2].as_py() == "fr"


def test_empty_caption_gets_a_label(model):
    # fastText always predicts (the end-of-line token is a word); DataComp's other rules drop it.
    lang, score = langid.predict_languages(pa.array(["", " "]), model)
    assert lang.null_count == 0 and all(0 < s <= 1 for s in score.to_pylist())


def test_model_is_cached_per_worker():
    assert langid.load_model() is langid.load_model()


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(langid.LanguageModelError, match="not found"):
        langid.load_model(tmp_path / "lid.176.bin")


def test_real_alttext_languages(shared_data, model):
    texts = pq.read_table(shared_data / "alttext" / "web_alttext_10k.parquet", columns=["TEXT"]).column(0)
    texts = texts.slice(0, 3000).combine_chunks()
    uids = pa.array([f"{i:032x}" for i in range(len(texts))])
    stats = text_stats(uids, texts, model)
    langs = stats.column("language").to_pylist()
    # Reference: DataComp's own expression, one model call per caption through the public API.
    ref = [model.predict(t.replace("\n", " "))[0][0].replace("__label__", "") for t in texts.to_pylist()]
    assert langs == ref
    share_en = langs.count("en") / len(langs)
    assert 0.3 < share_en < 0.95  # web alt-text: mostly but not only English
    found = {lang for lang in langs if lang != "en"}
    assert {"de", "fr", "es"} & found  # European languages are present in LAION-style alt-text
    assert stats.column("word_count").to_pylist() == [len(t.split()) for t in texts.to_pylist()]


def test_repeated_captions_predicted_once_same_answers(model):
    texts = ["a dog on the beach", "ein Hund am Strand", "a dog on the beach", "", "ein Hund am Strand"]
    lang, score = langid.predict_languages(pa.array(texts), model)
    one_by_one = [langid.predict_languages([t], model) for t in texts]
    assert lang.to_pylist() == [l[0].as_py() for l, _ in one_by_one]
    assert score.to_pylist() == [s[0].as_py() for _, s in one_by_one]
    assert lang.to_pylist()[:2] == ["en", "de"]
