"""MetaCLIP 2 worldwide curation: per-language metadata, matching, counts, p_to_t, balancing.

Expected values are computed here independently (plain loops written from MetaCLIP 2's
definitions), never read back from the code under test.
"""

from __future__ import annotations

import json
import re
import string

import numpy as np
import pytest

from curate.engine import LocalExecutor
from curate.errors import InputFileError
from curate.metaclip.jobs import run_balance, run_build, run_match
from curate.subset import read_subset

# Captions whose fastText lid.176 label is certain (the test checks the labels too).
CAPTIONS = {
    "en": [("a photo of my dog sleeping in the garden", 7), ("my cat and my dog on the beach at sunset", 5),
           ("a small bird sitting on the old fence", 2), ("a photo of the beach", 4)],
    "de": [("ein Foto von meinem Hund im Garten", 6), ("meine Katze schläft auf dem Sofa im Wohnzimmer", 2),
           ("der Hund und die Katze spielen am Strand", 3)],
    "zh": [("我的狗在海滩上玩耍的照片", 5), ("海滩上的日落照片", 2)],
    "fr": [("un chat noir dort sur le canapé du salon", 3), ("le chien joue dans le jardin avec les enfants", 2)],
}
LISTS = {
    "en": ["dog", "cat", "beach", "photo", "bird", "garden", "a", "my"],
    "de": ["Hund", "Katze", "Strand", "Foto", "Garten", "Sofa"],
    "zh": ["狗", "海滩", "照片", "日落", "猫"],
}


def pool_texts() -> tuple[list[str], list[str]]:
    texts, langs = [], []
    for lang, items in CAPTIONS.items():
        for text, n in items:
            texts += [text] * n
            langs += [lang] * n
    return texts, langs


def write_folder(path, lists: dict[str, list[str]]):
    path.mkdir(parents=True, exist_ok=True)
    for lang, entries in lists.items():
        (path / f"{lang}.json").write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    return path


# ---- an independent reference: MetaCLIP 2's rules written out plainly
_NO_SPACE = [(0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2EBEF), (0xF900, 0xFAFF), (0x2E80, 0x2FFF),
             (0x0E00, 0x0EFF), (0x1000, 0x109F), (0x1780, 0x17FF), (0x0F00, 0x0FFF)]  # CJK; Thai..Tibetan
_PUNCT = set(string.punctuation) | set("，。、；：？！“”‘’（）【】《》〈〉「」『』～—")


def ref_spaced_text(text: str) -> str:
    s = " " + text + " "
    for p in ",.;:?!`":
        s = s.replace(p, " " + p + " ")
    return s.replace("\t", " ").replace("\n", " ").replace("\r", " ")


def ref_key(entry: str) -> str:
    def glue(c):
        return any(a <= ord(c) <= b for a, b in _NO_SPACE) or c in _PUNCT
    return ("" if glue(entry[0]) else " ") + entry + ("" if glue(entry[-1]) else " ")


def ref_matches(text: str, entries: list[str]) -> list[int]:
    spaced = ref_spaced_text(text)
    return [i for i, e in enumerate(entries) if ref_key(e) in spaced]


def ref_p_to_t(counts: list[int], p: float) -> int:
    c = sorted(counts)
    total = sum(c)
    best, best_i, run = None, 0, 0
    for i, x in enumerate(c):
        run += x
        d = abs(run / total - p)
        if best is None or d < best:
            best, best_i = d, i
    return c[best_i]


def ref_t_to_p(counts: list[int], t: float) -> float:
    return sum(x for x in counts if x < t) / sum(counts)


# ---------------------------------------------------------------- unit level
def test_entry_spacing_follows_metaclip2():
    from curate.metaclip.worldwide import spaced_entry

    for e in ["dog", "hot dog", "狗", "热狗", "C++", "(狗)", "狗 dog", "dog 狗", "แมว", "강아지", "ねこ", "猫ちゃん"]:
        assert spaced_entry(e) == ref_key(e), e
    # Hangul and kana are not in MetaCLIP 2's no-space ranges: they stay spaced.
    assert spaced_entry("강아지") == " 강아지 " and spaced_entry("ねこ") == " ねこ "


def test_p_to_t_and_t_to_p_match_the_definition_on_random_counts():
    from curate.metaclip.worldwide import p_to_t, t_to_p

    rng = np.random.default_rng(3)
    for _ in range(200):
        counts = rng.zipf(1.6, size=int(rng.integers(1, 60))) * rng.integers(0, 2, size=1)[0] + \
            rng.integers(0, 3, size=1)[0]
        counts = counts.astype(np.int64)
        if counts.sum() == 0:
            continue
        p = float(rng.random())
        assert p_to_t(counts, p) == ref_p_to_t(counts.tolist(), p)
        t = float(rng.integers(1, 50))
        assert t_to_p(counts, t) == pytest.approx(ref_t_to_p(counts.tolist(), t), abs=0)


# ---------------------------------------------------------------- jobs on a hand-built pool
def test_counts_and_p_to_t_per_language_exact(tmp_path, make_samples):
    texts, langs = pool_texts()
    ds = make_samples(tmp_path / "pool", texts, shards=2)
    meta = write_folder(tmp_path / "meta", LISTS)
    m = run_match(ds, meta, LocalExecutor())
    samples = ds.read("samples")
    by_text = dict(zip(texts, langs))
    labels = ds.read("metadata_languages")
    assert labels.column("uid").to_pylist() == ds.read("metadata_matches").column("uid").to_pylist()
    for text, lab, used in zip(samples.column("text").to_pylist(), labels.column("lang").to_pylist(),
                               labels.column("metadata_lang").to_pylist()):
        assert lab == by_text[text]  # fastText agrees with the hand labels
        assert used == (lab if lab in LISTS else None)  # fr has no list and there is no `other`

    # Expected: global ids are the lists concatenated in sorted language order.
    order = sorted(LISTS)
    offsets = dict(zip(order, np.cumsum([0] + [len(LISTS[k]) for k in order])[:-1].tolist()))
    expect_counts = {k: [0] * len(LISTS[k]) for k in order}
    expect_ids = {}
    for uid, text in zip(samples.column("uid").to_pylist(), samples.column("text").to_pylist()):
        lang = by_text[text]
        if lang not in LISTS:
            expect_ids[uid] = []
            continue
        local = ref_matches(text, LISTS[lang])
        for i in local:
            expect_counts[lang][i] += 1
        expect_ids[uid] = [offsets[lang] + i for i in local]
    got = ds.read("metadata_matches")
    assert dict(zip(got.column("uid").to_pylist(), got.column("entry_ids").to_pylist())) == expect_ids
    counts = ds.read("entry_counts").column("count").to_pylist()
    assert counts == [c for k in order for c in expect_counts[k]]
    assert m["languages"]["(none)"]["samples"] == sum(n for _, n in CAPTIONS["fr"])
    assert m["languages"]["zh"]["pairs"] == sum(expect_counts["zh"])

    t_en = 5
    b = run_balance(ds, LocalExecutor(), t=t_en, seed=3, name="ww")
    p = ref_t_to_p(expect_counts["en"], t_en)
    assert b["params"]["tail_proportion"] == pytest.approx(p, abs=0)
    rows = {r["lang"]: r for r in ds.read("language_balance/ww").to_pylist()}
    assert rows["en"]["t"] == t_en
    for lang in ("de", "zh"):
        assert rows[lang]["t"] == ref_p_to_t(expect_counts[lang], p), lang
        assert rows[lang]["pairs"] == sum(expect_counts[lang])
    # MetaCLIP 2's p_to_t counts unmatched entries too: zh's zero-count entry (猫) holds the
    # running share nearest to p, so zh gets t = 0 and keeps nothing (their rule, kept as is).
    assert rows["de"]["t"] == 2 and rows["zh"]["t"] == 0
    # Entry probabilities: 1 below the language's t, t / count from it (t = 0: 0 when matched).
    probs = ds.read("entry_balance/ww").column("probability").to_pylist()
    expect_probs = [(1.0 if c < rows[k]["t"] else rows[k]["t"] / c) if rows[k]["t"] else float(c == 0)
                    for k in order for c in expect_counts[k]]
    assert probs == pytest.approx(expect_probs, abs=1e-12)
    # Accounting: every sample decided; per-language rows add up to the pool.
    decisions = ds.read("decisions/ww")
    assert decisions.num_rows == len(texts)
    assert sum(r["kept"] for r in rows.values()) == len(read_subset(ds, "ww"))
    summary = json.loads((ds.root / "subsets" / "ww" / "entry_distribution.json").read_text())
    assert {r["lang"] for r in summary["languages"]} == {"en", "de", "zh", "(none)"}
    assert sum(r["samples"] for r in summary["languages"]) == len(texts)
    assert {r["lang"]: r["matched"] for r in summary["languages"]} == \
        {k: sum(1 for u, t in zip(samples.column("uid").to_pylist(), samples.column("text").to_pylist())
                if by_text[t] == k and expect_ids[u]) for k in ("en", "de", "zh")} | {"(none)": 0}


def test_balancing_reproducible_across_partitionings_and_local_equals_spark(spark, tmp_path, make_samples):
    from curate.engine.spark import SparkExecutor

    texts, _ = pool_texts()
    meta = write_folder(tmp_path / "meta", LISTS)
    results = {}
    for shards in (1, 3):
        for engine in ("local", "spark"):
            ds = make_samples(tmp_path / f"pool-{shards}-{engine}", texts, shards=shards)
            ex = LocalExecutor() if engine == "local" else SparkExecutor(spark)
            run_match(ds, meta, ex, batch_size=7)
            run_balance(ds, ex, t=4, seed=9, name="ww")
            results[(shards, engine)] = ds
    tables = ["metadata_matches", "metadata_languages", "entry_counts", "decisions/ww", "entry_balance/ww",
              "language_balance/ww"]
    for shards in (1, 3):  # local vs Spark local mode: the same bytes, shard by shard
        a, b = results[(shards, "local")], results[(shards, "spark")]
        for t in tables:
            sa, sb = a.shards(t), b.shards(t)
            assert [p.name for p in sa] == [p.name for p in sb] and sa, t
            assert all(x.read_bytes() == y.read_bytes() for x, y in zip(sa, sb)), t
        assert (a.root / "subsets/ww/uids.npy").read_bytes() == (b.root / "subsets/ww/uids.npy").read_bytes()
    one, three = results[(1, "local")], results[(3, "local")]
    assert read_subset(one, "ww") == read_subset(three, "ww")
    for t in ("decisions/ww", "metadata_languages"):
        assert one.read(t).sort_by("uid").equals(three.read(t).sort_by("uid")), t
    for t in ("entry_counts", "entry_balance/ww", "language_balance/ww"):
        assert one.read(t).equals(three.read(t)), t

    # Building from the pool: per-language bigrams summed by Spark equal the in-process sum.
    built = {}
    for engine in ("local", "spark"):
        out = tmp_path / f"built-{engine}"
        ex = LocalExecutor() if engine == "local" else SparkExecutor(spark)
        run_build(out, languages=["en", "de", "zh"], dataset=results[(3, engine)], executor=ex, wordnet=False,
                  wordfreq_top=100, bigram_min_count=2, bigram_min_pmi=0.5)
        built[engine] = {f.name: f.read_bytes() for f in out.glob("*.json") if f.name != "_build.json"}
    assert built["local"] == built["spark"] and len(built["local"]) == 3
    assert len(json.loads(built["local"]["zh.json"])) > 200  # numbers, wordfreq, then mined zh bigrams
    # The same captions as corpus files (one a task, read by the workers): the same lists.
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("".join(t.replace("\n", " ") + "\n" for t in texts), encoding="utf-8")
    for engine in ("local", "spark"):
        out = tmp_path / f"corpus-{engine}"
        ex = LocalExecutor() if engine == "local" else SparkExecutor(spark)
        run_build(out, languages=["en", "de", "zh"], corpus=[str(corpus)], executor=ex, wordnet=False,
                  wordfreq_top=100, bigram_min_count=2, bigram_min_pmi=0.5)
        assert {f.name: f.read_bytes() for f in out.glob("*.json") if f.name != "_build.json"} == built["local"], \
            engine


def test_v1_output_is_byte_identical_with_languages_en(tmp_path, make_samples):
    from curate.cli import main

    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(["Golden Gate Bridge view", "the Golden Gate Bridge"] * 6 + ["a cat on a mat"] * 9),
                      encoding="utf-8")
    kw = dict(wordnet=False, wordfreq_top=3000, corpus=[str(corpus)], bigram_min_count=3, bigram_min_pmi=1.0)
    run_build(tmp_path / "none.json", **kw)
    run_build(tmp_path / "en.json", languages=["en"], **kw)
    assert (tmp_path / "none.json").read_bytes() == (tmp_path / "en.json").read_bytes()
    for name, extra in (("cli-none.json", []), ("cli-en.json", ["--languages", "en"])):
        with pytest.raises(SystemExit) as e:
            main(["metadata", "build", str(tmp_path / name), "--no-wordnet", "--wordfreq-top", "3000",
                  "--bigram-corpus", str(corpus), "--bigram-min-count", "3", "--bigram-min-pmi", "1", *extra])
        assert e.value.code in (0, None)
    assert (tmp_path / "cli-en.json").read_bytes() == (tmp_path / "none.json").read_bytes() == \
        (tmp_path / "cli-none.json").read_bytes()

    # A v1 match after a worldwide one gives the same bytes as on a fresh pool (no leftovers).
    texts, _ = pool_texts()
    fresh = make_samples(tmp_path / "fresh", texts, shards=2)
    reused = make_samples(tmp_path / "reused", texts, shards=2)
    run_match(reused, write_folder(tmp_path / "meta", LISTS), LocalExecutor())
    for ds in (fresh, reused):
        run_match(ds, tmp_path / "en.json", LocalExecutor())
        run_balance(ds, LocalExecutor(), t=3, seed=1)
    assert not reused.has_table("metadata_languages") and not (reused.root / "metaclip/languages.json").exists()
    for t in ("metadata_matches", "entry_counts", "decisions/metaclip", "entry_balance/metaclip"):
        assert [p.read_bytes() for p in fresh.shards(t)] == [p.read_bytes() for p in reused.shards(t)], t


def test_user_supplied_metaclip2_folder_as_is(tmp_path, make_samples):
    folder = tmp_path / "metaclip2"
    folder.mkdir()
    # data/metadata layout (a list), metadata_per_lang layout (object entry -> source), the
    # `other` fallback, and files MetaCLIP 2 keeps beside them (automaton pickles: ignored).
    (folder / "en.json").write_text(json.dumps(["dog", "beach"]), encoding="utf-8")
    (folder / "zh.json").write_text(json.dumps({"0": "", "狗": "w", "照片": "u", "海滩": "b"}, ensure_ascii=False),
                                    encoding="utf-8")
    (folder / "other.json").write_text(json.dumps(["chat", "chien", "jardin"]), encoding="utf-8")
    (folder / "en.pkl").write_bytes(b"\x80\x04not a real pickle")
    texts, langs = pool_texts()
    ds = make_samples(tmp_path / "pool", texts, shards=1)
    run_match(ds, folder, LocalExecutor())
    entries = json.loads((ds.root / "metaclip" / "metadata.json").read_text(encoding="utf-8"))
    assert entries == ["dog", "beach", "chat", "chien", "jardin", "0", "狗", "照片", "海滩"]  # en, other, zh
    lab = ds.read("metadata_languages")
    used = dict(zip(lab.column("lang").to_pylist(), lab.column("metadata_lang").to_pylist()))
    assert used == {"en": "en", "zh": "zh", "de": "other", "fr": "other"}  # no de/fr list: MetaCLIP 2's `other`
    m = ds.read("metadata_matches")
    got = dict(zip(ds.read("samples").column("text").to_pylist(), m.column("entry_ids").to_pylist()))
    assert got["le chien joue dans le jardin avec les enfants"] == [3, 4]
    assert got["我的狗在海滩上玩耍的照片"] == [6, 7, 8]
    assert got["ein Foto von meinem Hund im Garten"] == []


def test_tokens_mode_matches_whole_words_only(tmp_path, make_samples):
    texts = ["我的狗在海滩上玩耍的照片"] * 2 + ["我喜欢吃热狗和面包，热狗很好吃"] * 2
    ds = make_samples(tmp_path / "pool", texts, shards=1)
    meta = write_folder(tmp_path / "meta", {"zh": ["狗", "热狗", "海滩"], "ja": ["犬"]})
    run_match(ds, meta, LocalExecutor())
    sub = dict(zip(ds.read("samples").column("text").to_pylist(), ds.read("metadata_matches").column("entry_ids").to_pylist()))
    run_match(ds, meta, LocalExecutor(), nospace_match="tokens")
    tok = dict(zip(ds.read("samples").column("text").to_pylist(), ds.read("metadata_matches").column("entry_ids").to_pylist()))
    labels = set(ds.read("metadata_languages").column("lang").to_pylist())
    assert labels == {"zh"}
    # ids: ja 犬 = 0, zh 狗 = 1, 热狗 = 2, 海滩 = 3. Substring (MetaCLIP 2): 狗 inside 热狗 matches too.
    assert sub["我喜欢吃热狗和面包，热狗很好吃"] == [1, 2] and sub["我的狗在海滩上玩耍的照片"] == [1, 3]
    assert tok["我喜欢吃热狗和面包，热狗很好吃"] == [2] and tok["我的狗在海滩上玩耍的照片"] == [1, 3]
    layout = json.loads((ds.root / "metaclip" / "languages.json").read_text())
    assert layout["nospace_match"] == "tokens" and layout["tokenizers"]["zh"]["versions"]["jieba"]


@pytest.mark.parametrize("content,line", [
    ('[\n  "dog",\n  "cat",\n  7,\n  "bird"\n]', 4),
    ('[\n  "dog",\n  "cat"\n  "bird"\n]', 4),
    ('{\n "a": 1,\n "b": 2,\n}', 4),
])
def test_bad_metadata_file_errors_name_the_file_and_line(tmp_path, make_samples, capsys, content, line):
    from curate.cli import main

    folder = write_folder(tmp_path / "meta", {"en": ["dog"]})
    bad = folder / "de.json"
    bad.write_text(content, encoding="utf-8")
    with pytest.raises(InputFileError) as e:
        run_match(make_samples(tmp_path / "a", ["a dog"], shards=1), folder, LocalExecutor())
    assert str(bad) in str(e.value) and f"line {line}" in str(e.value)
    ds = make_samples(tmp_path / "b", ["a dog"], shards=1)
    with pytest.raises(SystemExit) as e:
        main(["metadata", "match", str(ds.root), "--metadata", str(folder), "--engine", "spark"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("curate: error:") and str(bad) in err and f"line {line}" in err and "\n" not in err


def test_worldwide_build_per_language_sources_tokenizers_and_determinism(tmp_path):
    import wordfreq

    corpus = tmp_path / "corpus.txt"
    zh = ["我的狗在海滩上玩耍的照片", "海滩上的日落照片非常漂亮", "我的狗在公园里玩耍"] * 4
    en = ["the Golden Gate Bridge at night", "Golden Gate Bridge in the fog"] * 4
    corpus.write_text("\n".join(zh + en), encoding="utf-8")
    user = tmp_path / "brands.txt"
    user.write_text("Golden Gate\n金门大桥\n", encoding="utf-8")
    kw = dict(languages=["en", "zh", "th", "ko", "de"], wordnet=False, wordfreq_top=500, corpus=[str(corpus)],
              bigram_min_count=3, bigram_min_pmi=0.5, entry_lists=[f"zh={user}"])
    a = run_build(tmp_path / "a", **kw)
    run_build(tmp_path / "b", **kw)
    for lang in kw["languages"]:
        assert (tmp_path / "a" / f"{lang}.json").read_bytes() == (tmp_path / "b" / f"{lang}.json").read_bytes()
    L = a["languages"]
    assert L["zh"]["tokenizer"]["versions"]["jieba"] and L["th"]["tokenizer"]["versions"]["pythainlp"]
    assert L["ko"]["tokenizer"]["name"].startswith("whitespace")
    zh_entries = json.loads((tmp_path / "a" / "zh.json").read_text(encoding="utf-8"))
    assert zh_entries[:100] == [str(i) for i in range(100)]
    assert zh_entries[100:110] == wordfreq.top_n_list("zh", 10)
    bigrams = L["zh"]["source_info"]["bigrams"]["top"]
    assert bigrams and all(" " not in b["bigram"] for b in bigrams)  # no-space language: joined
    assert "金门大桥" in zh_entries and "金门大桥" not in json.loads((tmp_path / "a" / "en.json").read_text())
    th = json.loads((tmp_path / "a" / "th.json").read_text(encoding="utf-8"))
    assert L["th"]["source_info"]["wordfreq"]["source"].startswith("Thai National Corpus") and L["th"]["sources"]["wordfreq"]["offered"] == 500 < len(th)
    assert "wordnet" not in L["de"]["source_info"]
    side = json.loads((tmp_path / "a" / "_build.json").read_text(encoding="utf-8"))
    assert side["languages"]["en"]["sources"]["bigrams"]["added"] >= 1
    # With WordNet on: English from Debian's WordNet, Thai from pythainlp's, the rest say why not.
    w = run_build(tmp_path / "w", languages=["th", "de"], wordfreq_top=0, bigrams=False)
    assert w["languages"]["th"]["sources"]["wordnet"]["added"] > 50_000
    assert w["languages"]["de"]["source_info"]["wordnet"]["source"] is None


# ---------------------------------------------------------------- real multilingual captions
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af\u0e00-\u0e7f]")


@pytest.mark.slow
def test_real_cjk_captions_unmatched_by_v1_now_match(shared_data, tmp_path, make_samples):
    import pyarrow.parquet as pq

    path = shared_data / "alttext" / "web_alttext_10k.parquet"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    texts = [t or "" for t in pq.read_table(path).column("TEXT").to_pylist()]
    ds = make_samples(tmp_path / "pool", texts, shards=2)
    v1 = tmp_path / "v1.json"
    run_build(v1, wordnet=False, wordfreq_top=50_000)
    run_match(ds, v1, LocalExecutor())
    v1_ids = dict(zip(ds.read("metadata_matches").column("uid").to_pylist(),
                      ds.read("metadata_matches").column("entry_ids").to_pylist()))
    meta = tmp_path / "meta"
    run_build(meta, languages=["en", "zh", "ja", "ko", "th"], wordnet=False, wordfreq_top=50_000, bigrams=False)
    run_match(ds, meta, LocalExecutor())
    lists = {k: json.loads((meta / f"{k}.json").read_text(encoding="utf-8")) for k in ("en", "zh", "ja", "ko", "th")}
    order = sorted(lists)
    offsets = dict(zip(order, np.cumsum([0] + [len(lists[k]) for k in order])[:-1].tolist()))
    samples = ds.read("samples")
    lab = ds.read("metadata_languages")
    ww_ids = ds.read("metadata_matches").column("entry_ids").to_pylist()
    cjk_unmatched, now, checked_en = 0, 0, 0
    for uid, text, label, ids in zip(samples.column("uid").to_pylist(), samples.column("text").to_pylist(),
                                     lab.column("lang").to_pylist(), ww_ids):
        # Every non-English match (and the first 100 English captions': the plain loop costs
        # 50,000 substring tests a caption) is the independent reference's, in the caption's language.
        if label in lists and (label != "en" or checked_en < 100):
            checked_en += label == "en"
            assert ids == [offsets[label] + i for i in ref_matches(text, lists[label])]
        if _CJK.search(text) and label in ("zh", "ja", "ko", "th") and not v1_ids[uid]:
            cjk_unmatched += 1
            now += bool(ids)
    assert cjk_unmatched >= 10
    assert now >= 0.75 * cjk_unmatched, (now, cjk_unmatched)


def test_cli_and_recipe_stage_worldwide(tmp_path, make_samples, capsys):
    from curate.cli import main
    from curate.recipe import load_recipe, run_recipe

    texts, _ = pool_texts()
    ds = make_samples(tmp_path / "pool", texts, shards=2)
    meta = tmp_path / "meta"

    def cli(*argv):
        with pytest.raises(SystemExit) as e:
            main(list(argv))
        assert e.value.code in (0, None), capsys.readouterr().err

    (tmp_path / "zh.txt").write_text("日落\n", encoding="utf-8")
    cli("metadata", "build", str(meta), "--languages", "en,de,zh", "--dataset", str(ds.root), "--engine", "local",
        "--no-wordnet", "--wordfreq-top", "300", "--bigram-min-count", "2", "--bigram-min-pmi", "1",
        "--entries", f"zh={tmp_path / 'zh.txt'}")
    assert sorted(p.name for p in meta.iterdir()) == ["_build.json", "de.json", "en.json", "zh.json"]
    cli("metadata", "match", str(ds.root), "--metadata", str(meta), "--engine", "local")
    cli("metadata", "balance", str(ds.root), "--t", "4", "--seed", "2", "--engine", "local", "--name", "cli")
    err = capsys.readouterr().err
    assert "metadata zh:" in err and "  zh: t=" in err and "tail proportion p =" in err
    cli_subset = read_subset(ds, "cli")

    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: ww\ndataset: {ds.root}\ninput: all\noutput: wwcurated\nstages:\n  - kind: metaclip_balance\n"
                      f"    metadata: {meta.name}\n    t: 4\n    seed: 2\n", encoding="utf-8")  # beside the recipe
    lineage = run_recipe(load_recipe(recipe), engine="local", quiet=True)
    assert read_subset(ds, "wwcurated") == cli_subset
    assert lineage["stages"][0]["output_count"] == len(cli_subset)
    # The HTML report has the per-language section for both subsets.
    from curate.report.build import collect, render

    for subset in ("cli", "wwcurated"):
        data = collect(ds, subset)
        ml = data["metaclip_languages"]
        assert ml is not None and {r["lang"] for r in ml["rows"]} == {"de", "en", "zh"}
        html = render(data)
        assert "MetaCLIP 2 balancing per language" in html and "<td class=l>zh</td>" in html
