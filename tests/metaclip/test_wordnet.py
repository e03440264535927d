"""curate.wordnet: NLTK's reader over Debian's wordnet-base files (no NLTK downloads)."""

from __future__ import annotations

import pytest

from curate import wordnet

pytestmark = pytest.mark.skipif(
    not (wordnet.wordnet_root() / "data.noun").is_file(), reason="wordnet-base not installed"
)


def test_reader_answers_lookups():
    wn = wordnet.get_wordnet()
    dog = wn.synset("dog.n.01")
    assert dog.lexname() == "noun.animal"
    assert "domestic_dog" in dog.lemma_names()
    assert wn.get_version() == "3.0"
    assert wordnet.get_wordnet() is wn  # cached per process


def test_synset_names_match_nltk_parse():
    names = wordnet.synset_names()
    assert len(names) == len(set(names)) > 100_000
    wn = wordnet.get_wordnet()
    # The direct scan gives the reader's names: checked on every 97th synset (all of them: ~60 s).
    for name in names[::97]:
        assert wn.synset(name).name() == name
    assert {"dog.n.01", "ice_cream.n.01", "run.v.01"} <= set(names)
    names.append("x")  # callers get a copy
    assert "x" not in wordnet.synset_names()


def test_synset_lemma():
    assert wordnet.synset_lemma("hot_dog.n.01") == "hot dog"
    assert wordnet.synset_lemma("a.d.n.01") == "a"


def test_missing_files_error_names_folder_and_fix(tmp_path):
    with pytest.raises(wordnet.WordNetMissingError, match=str(tmp_path)) as e:
        wordnet.get_wordnet(tmp_path)
    assert "wordnet-base" in str(e.value) and "data.noun" in str(e.value)
