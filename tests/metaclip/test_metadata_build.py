"""Metadata building: sources, order, dedup, PMI bigrams; MetaCLIP metadata.json used as is."""

from __future__ import annotations

import json
import math

import pytest

from curate.errors import InputFileError
from curate.metaclip import metadata as md
from curate.metaclip.jobs import run_build
from curate.metaclip.matching import load_metadata, spacing


def test_assemble_order_dedup_and_drops():
    entries, report = md.assemble([
        ("a", ["dog", "cat", " dog ", "", "!", "U.S.", "tab\tx"]),
        ("b", ["cat", "bird", "e.g.", "-"]),
    ])
    assert entries == ["dog", "cat", "bird"]
    assert report.sources["a"] == {"offered": 7, "added": 2, "duplicate": 1, "empty_or_punctuation": 2,
                                   "unmatchable": 2, "over_cap": 0}
    assert report.sources["b"]["duplicate"] == 1 and report.sources["b"]["unmatchable"] == 1
    kept, _ = md.assemble([("a", ["U.S.", "dog"])], keep_unmatchable=True)
    assert kept == ["U.S.", "dog"]
    capped, rep = md.assemble([("a", ["x", "y", "z"])], max_entries=2)
    assert capped == ["x", "y"] and rep.sources["a"]["over_cap"] == 1


def test_count_ngrams_breaks_at_wrapped_punctuation():
    uni, bi = md.count_ngrams([spacing("New York, New York. a b-c (d) e")])
    assert dict(bi) == {"New York": 2, "a b-c": 1, "b-c (d)": 1, "(d) e": 1}
    assert uni["New"] == 2 and "," not in uni


def test_pmi_equals_nltk():
    from nltk.collocations import BigramAssocMeasures, BigramCollocationFinder
    from nltk.probability import FreqDist

    texts = ["golden gate bridge at night", "the golden gate bridge", "a dog on the bridge",
             "the dog and the cat", "golden retriever dog", "the golden gate"] * 3
    uni, bi = md.count_ngrams(spacing(t) for t in texts)
    total = sum(uni.values())
    mined = md.pmi_bigrams(uni, bi, total, min_count=2, min_pmi=-100)
    finder = BigramCollocationFinder(FreqDist(uni), FreqDist({tuple(k.split()): v for k, v in bi.items()}))
    nltk_pmi = dict(finder.score_ngrams(BigramAssocMeasures.pmi))
    assert {b.text: round(b.pmi, 9) for b in mined} == \
        {" ".join(k): round(v, 9) for k, v in nltk_pmi.items() if bi[" ".join(k)] >= 2}
    assert [b.pmi for b in mined] == sorted((b.pmi for b in mined), reverse=True)
    strict = md.pmi_bigrams(uni, bi, total, min_count=2, min_pmi=2.0)
    assert {b.text for b in strict} == {b.text for b in mined if b.pmi >= 2.0}
    gate = next(b for b in mined if b.text == "golden gate")
    assert gate.pmi == pytest.approx(math.log2(9 * total / (uni["golden"] * uni["gate"])))


def test_wordfreq_count_and_frequency_thresholds():
    import wordfreq

    top = md.wordfreq_entries(top=1000)
    assert len(top) == 1000 and top[:3] == wordfreq.top_n_list("en", 3)
    frequent = md.wordfreq_entries(top=None, min_frequency=1e-4)
    assert frequent and all(wordfreq.word_frequency(w, "en") >= 1e-4 * 0.99 for w in frequent[:50])
    assert len(frequent) < 2000


def test_build_file_is_deterministic_with_sources_in_order(tmp_path):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["Golden Gate Bridge view", "the Golden Gate Bridge", "Golden Gate park"] * 4
                                + ["a cat on a mat", "a dog on a log"] * 10), encoding="utf-8")
    user = tmp_path / "mine.txt"
    user.write_text("my entry\nGolden Gate\n\nthe\n", encoding="utf-8")
    kw = dict(wordnet=False, wordfreq_top=500, corpus=[str(corpus)], bigram_min_count=3, bigram_min_pmi=1.0,
              entry_lists=[str(user)])
    a = run_build(tmp_path / "a.json", **kw)
    b = run_build(tmp_path / "b.json", **kw)
    ea = json.loads((tmp_path / "a.json").read_text())
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes() and a["sha256"] == b["sha256"]
    assert ea[:100] == [str(i) for i in range(100)]
    assert "Golden Gate" in ea and ea.index("Golden Gate") > 100 + a["sources"]["wordfreq"]["added"] - 1
    assert ea[-1] == "my entry" and a["sources"][f"user:{user}"]["duplicate"] == 2
    assert len(ea) == len(set(ea)) == a["entries"]
    side = json.loads((tmp_path / "a.json.build.json").read_text())
    assert side["bigrams"]["mined"] >= 2 and side["params"]["bigram_min_pmi"] == 1.0


def test_metaclip_metadata_json_used_as_is(tmp_path):
    raw = ["0", "dog", "dog", "U.S.", " spaced ", "", "café"]
    p = tmp_path / "metadata.json"
    p.write_text(json.dumps(raw), encoding="utf-8")
    assert load_metadata(p) == raw  # order, repeats, unmatchable and odd entries all kept


@pytest.mark.parametrize("content,message", [
    ("{\"a\": 1}", "expected a JSON list"),
    ("[\"a\", 3]", "entry 1 is 3"),
    ("[\"a\",", "not a JSON file"),
])
def test_bad_metadata_file_errors_name_file_and_entry(tmp_path, content, message):
    p = tmp_path / "metadata.json"
    p.write_text(content, encoding="utf-8")
    with pytest.raises(InputFileError, match=message) as e:
        load_metadata(p)
    assert str(p) in str(e.value)


def test_a_language_the_lid_model_never_gives_is_refused_before_anything_is_written(tmp_path, capsys):
    """match picks a caption's list by its fastText label, so a list named by a code the model
    never gives (a typo, a three-letter code, a Wikipedia variant) would never be used."""
    from curate.cli import main
    from curate.errors import CurateError
    from curate.filters.langid import model_labels

    labels = model_labels()
    assert len(labels) == 176 and {"en", "de", "zh", "yue"} <= set(labels) and "other" not in labels
    for code, hint in (("xx", None), ("eng", "did you mean en?"), ("zh_yue", "did you mean zh?"),
                       ("EN", "did you mean en?")):
        with pytest.raises(CurateError, match=f"--languages {code}: the language-ID model lid.176.ftz never") as info:
            run_build(tmp_path / "ww", languages=["de", code], numbers=True, wordnet=False, wordfreq_top=None)
        assert hint is None or hint in str(info.value)
        assert not (tmp_path / "ww").exists()
    with pytest.raises(SystemExit) as info:
        main(["metadata", "build", str(tmp_path / "cli"), "--languages", "de,xx", "--no-bigrams"])
    err = capsys.readouterr().err.strip().splitlines()
    assert info.value.code == 2 and len(err) == 1 and "--languages xx" in err[0] and not (tmp_path / "cli").exists()
    r = run_build(tmp_path / "ok", languages=["de", "other"], numbers=True, wordnet=False, wordfreq_top=None)
    assert sorted(r["languages"]) == ["de", "other"]


def test_output_of_the_wrong_kind_is_refused_before_the_build(tmp_path, capsys):
    """A folder given for one list failed only when the file was written, after every source (and
    the bigrams of a whole pool) was built."""
    from curate.cli import main

    (tmp_path / "folder").mkdir()
    (tmp_path / "file.json").write_text("[]")
    for argv, said in (([str(tmp_path / "folder")], "is a folder; give the file's path (e.g. "),
                       ([str(tmp_path / "file.json"), "--languages", "de,en"], "is a file; --languages writes a folder")):
        with pytest.raises(SystemExit) as info:
            main(["metadata", "build", *argv, "--no-bigrams"])
        err = capsys.readouterr().err.strip().splitlines()
        assert info.value.code == 2 and len(err) == 1 and said in err[0], err
    assert (tmp_path / "file.json").read_text() == "[]" and not any((tmp_path / "folder").iterdir())
