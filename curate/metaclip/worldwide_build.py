"""`curate metadata build --languages ...`: one metadata list per language, offline.

MetaCLIP 2 builds each language's list from numbers, Multilingual WordNet, Wikipedia
unigrams, Wikipedia bigrams (PMI) and Wikipedia titles. Offline, curate uses per language:

1. ``numbers``: "0".."99" (every MetaCLIP 2 language starts with them);
2. ``wordnet``: English: Debian's WordNet (as v1); Thai: the Thai WordNet that pythainlp ships
   (``wordnet_th.db``); no other Multilingual WordNet ships offline here, which the build
   manifest says per language;
3. ``wordfreq``: the language's ``wordfreq`` list by rank (in place of Wikipedia unigrams);
   Thai, which wordfreq lacks: the Thai National Corpus frequency list pythainlp ships;
4. ``bigrams``: mined per language from the pool's captions (or ``--bigram-corpus``) whose
   fastText language is that language, tokenised per language (jieba, fugashi + unidic-lite,
   pythainlp for zh, ja, th; whitespace after MetaCLIP spacing otherwise) with v1's count and
   PMI thresholds; for languages written without spaces a bigram is its two words joined
   without a space, as MetaCLIP 2 does;
5. user lists: ``--entries FILE`` (every language) or ``--entries LANG=FILE`` (one language;
   ``other`` names MetaCLIP 2's fallback list).

Entries are cleaned with MetaCLIP 2's rules (empty, only punctuation, over 256 characters)
plus v1's (duplicates; by default entries no spaced text can match). The output is a folder
with ``<lang>.json`` per language (MetaCLIP 2's ``data/metadata`` layout) and ``_build.json``
(per language: sources and their versions, tokenizer and version, counts).
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa

from curate.errors import InputFileError
from curate.metaclip import metadata as md
from curate.metaclip import worldwide as ww
from curate.metaclip.matching import spacing

LANG_NGRAM_SCHEMA = pa.schema([("lang", pa.string()), ("gram", pa.string()), ("order", pa.int8()),
                               ("n", pa.int64())])
_LANG_PREFIX = re.compile(r"^([a-z]{2,3}(?:_[a-z]+)?|other)=(.+)$")


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"


# ---------------------------------------------------------------- sources per language
def thai_wordnet_entries() -> list[str]:
    """Thai WordNet lemmas (pythainlp's ``wordnet_th.db``), by synset id then lemma."""
    import sqlite3

    from pythainlp.corpus import corpus_path

    db = Path(corpus_path()) / "wordnet_th.db"
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return [r[0] for r in con.execute("SELECT li FROM word_synset ORDER BY synsetid, li")]
    finally:
        con.close()


def thai_frequency_entries(top: int | None) -> list[str]:
    """Thai National Corpus words by decreasing count (pythainlp's ``tnc_freq.txt``)."""
    from pythainlp.corpus import tnc

    words = [w for w, _ in sorted(tnc.word_freqs(), key=lambda x: (-x[1], x[0]))]
    return words[:top] if top else words


def wordnet_source(lang: str, wordnet_dir: str | None) -> tuple[list[str] | None, dict]:
    if lang == ww.ENGLISH:
        from curate.wordnet import wordnet_root

        return md.wordnet_entries(wordnet_dir), {"source": "WordNet 3.0 (Debian wordnet-base)",
                                                 "path": str(wordnet_root(wordnet_dir))}
    if lang == "th":
        return thai_wordnet_entries(), {"source": "Thai WordNet (NICT), shipped by pythainlp",
                                        "version": _version("pythainlp")}
    return None, {"source": None, "note": "no Multilingual WordNet for this language ships offline here"}


def wordfreq_source(lang: str, top: int | None, min_frequency: float | None,
                    wordlist: str) -> tuple[list[str] | None, dict]:
    import wordfreq

    if lang in wordfreq.available_languages(wordlist):
        return md.wordfreq_entries(top, min_frequency, wordlist=wordlist, lang=lang), {
            "source": f"wordfreq {wordlist!r} list", "version": _version("wordfreq")}
    if lang == "th":
        return thai_frequency_entries(top), {"source": "Thai National Corpus frequencies, shipped by pythainlp",
                                             "version": _version("pythainlp")}
    return None, {"source": None, "note": f"wordfreq has no {wordlist!r} list for this language"}


def parse_entry_lists(specs: Iterable[str], languages: list[str]) -> tuple[list[str], dict[str, list[str]]]:
    """``FILE`` (every language) and ``LANG=FILE`` (one language) user lists."""
    shared, per_lang = [], {}
    for spec in specs:
        m = _LANG_PREFIX.match(spec)
        if m and m.group(1) in languages:
            per_lang.setdefault(m.group(1), []).append(m.group(2))
        elif m and not Path(spec).exists():
            raise InputFileError(spec, f"--entries {m.group(1)}=...: {m.group(1)!r} is not one of --languages "
                                       f"({','.join(languages)})")
        else:
            shared.append(spec)
    return shared, per_lang


# ---------------------------------------------------------------- bigrams per language
def language_tokens(text: str, lang: str) -> list[str]:
    """Words of a caption for bigram counting: MetaCLIP spacing, then whitespace, then the
    language's segmenter for zh, ja, th."""
    return ww.tokenize(spacing(text), lang)


def count_language_ngrams(texts: Iterable[str], labels: Iterable[str | None],
                          languages: set[str]) -> dict[str, tuple[dict, dict]]:
    """Unigram and bigram counts per language (bigram key "w1 w2"), word tokens only."""
    out: dict[str, tuple[dict, dict]] = {}
    for text, lang in zip(texts, labels):
        if lang not in languages:
            continue
        uni, bi = out.setdefault(lang, ({}, {}))
        prev = None
        for tok in language_tokens(text or "", lang):
            if md._is_word(tok) and not ww.is_pure_punctuation(tok):
                uni[tok] = uni.get(tok, 0) + 1
                if prev is not None:
                    k = f"{prev} {tok}"
                    bi[k] = bi.get(k, 0) + 1
                prev = tok
            else:
                prev = None
    return out


def lang_ngram_rows(counted: dict[str, tuple[dict, dict]]) -> pa.RecordBatch:
    langs, grams, orders, ns = [], [], [], []
    for lang, (uni, bi) in counted.items():
        langs.append(lang), grams.append(""), orders.append(0), ns.append(sum(uni.values()))
        for order, d in ((1, uni), (2, bi)):
            langs.extend([lang] * len(d))
            grams.extend(d)
            orders.extend([order] * len(d))
            ns.extend(d.values())
    return pa.record_batch([pa.array(langs, pa.string()), pa.array(grams, pa.string()),
                            pa.array(orders, pa.int8()), pa.array(ns, pa.int64())], schema=LANG_NGRAM_SCHEMA)


def lang_ngram_task(task: dict) -> Iterator[pa.RecordBatch]:
    """(lang, gram, order, n) counts of one pool shard's (``input``) or corpus file's
    (``corpus``) texts, by fastText language."""
    from curate import storage
    from curate.filters.langid import load_model, predict_languages

    model = load_model(task.get("lid_model"))
    languages = set(task["languages"])
    col = task.get("column", "text")
    rows = task.get("batch_size", 16384)
    if "corpus" in task:
        batches = md.corpus_text_batches(task["corpus"], col, rows)
    else:
        pf = storage.parquet_file(task["input"])  # a path or a URI, with the run's storage settings
        if col not in pf.schema_arrow.names:
            raise InputFileError(task["input"], f"no column {col!r}")
        batches = (b.column(0) for b in pf.iter_batches(batch_size=rows, columns=[col]))
    for texts in batches:
        labels, _ = predict_languages(texts, model)
        yield lang_ngram_rows(count_language_ngrams(texts.to_pylist(), labels.to_pylist(), languages))


def mine_language_bigrams(languages: list[str], *, dataset=None, corpus: list[str] | None = None,
                          corpus_column: str = "text", executor=None, lid_model: str | None = None,
                          min_count: int = 10, min_pmi: float = 8.0) -> dict[str, tuple[list, int]]:
    """Per language: (bigrams by PMI, word tokens), mined in the engine (``bigram_mining``) from
    the pool's shards or the corpus files, one task each."""
    from curate.engine import LocalExecutor
    from curate.filters.langid import resolve_model_path
    from curate.metaclip.bigram_mining import mine_bigrams
    from curate.metaclip.build_job import corpus_tasks

    lid = str(resolve_model_path(lid_model))
    common = {"languages": sorted(set(languages)), "lid_model": lid}
    if corpus:
        tasks = corpus_tasks(corpus, corpus_column, **common)
    else:
        shards = dataset.shards("samples")
        if not shards:
            from curate.errors import DatasetError

            raise DatasetError(f"table 'samples' not found in {dataset.root}: run `curate ingest` first, "
                               "or give --bigram-corpus")
        tasks = [{"input": str(p), **common} for p in shards]
    found = mine_bigrams(executor or LocalExecutor(), tasks, lang_ngram_task, LANG_NGRAM_SCHEMA, min_count, min_pmi)
    out = {}
    for lang in languages:
        mined, total = found.get(lang, ([], 0))
        if ww.base_language(lang) in ww.NO_SPACE_LANGUAGES:
            for b in mined:  # MetaCLIP 2 joins a no-space language's bigram without the space
                b.text = b.text.replace(" ", "")
        out[lang] = (mined, total)
    return out


# ---------------------------------------------------------------- assembly
def _publish(local: Path, uri: str, build: dict) -> dict:
    """A worldwide build made in ``local`` uploaded under ``uri``: the lists an earlier build of
    ours left there for other languages deleted first (as a local rebuild drops them), each list
    one whole object, ``_build.json`` (naming the URI) last."""
    from curate import outputs, storage

    if storage.is_file(storage.join(uri, "_build.json")):
        for old in storage.list_files(uri):
            name = storage.basename(old)
            if name.endswith(".json") and not name.startswith(("_", ".")) and name[:-5] not in build["languages"]:
                storage.delete(storage.resolve(old))
    build = dict(build, output=uri)
    for f in sorted(local.glob("*.json")):
        if f.name != "_build.json":
            storage.put_file(storage.resolve(storage.join(uri, f.name)), f)
    outputs.write_bytes(storage.join(uri, "_build.json"),
                        (json.dumps(build, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))
    return build


def _prepare_output_folder(out_dir: Path, languages: list[str]) -> None:
    """The output folder, without the lists an earlier build of ours made for other languages."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputFileError(str(out_dir), "worldwide metadata is a folder (one <lang>.json per language), "
                                           "but this path is a file")
    if (out_dir / "_build.json").is_file():  # our earlier build: drop lists of languages not built now
        for old in out_dir.glob("*.json"):
            if ww.is_language_file(old) and old.stem not in languages:
                old.unlink()
    out_dir.mkdir(parents=True, exist_ok=True)


def _language_sources(lang: str, numbers: bool, wordnet: bool, wordnet_dir: str | None, wordfreq_top: int | None,
                      wordfreq_min_frequency: float | None,
                      wordfreq_list: str) -> tuple[list[tuple[str, list[str]]], dict[str, dict]]:
    """One language's corpus-free sources (numbers, its WordNet, its wordfreq) and their records."""
    sources: list[tuple[str, list[str]]] = []
    info: dict[str, dict] = {}
    if numbers:
        sources.append(("numbers", md.number_entries()))
    if wordnet and lang != ww.OTHER:
        entries, info["wordnet"] = wordnet_source(lang, wordnet_dir)
        if entries is not None:
            sources.append(("wordnet", entries))
    if (wordfreq_top or wordfreq_min_frequency is not None) and lang != ww.OTHER:
        entries, info["wordfreq"] = wordfreq_source(lang, wordfreq_top, wordfreq_min_frequency, wordfreq_list)
        if entries is not None:
            sources.append(("wordfreq", entries))
    return sources, info


def _bigrams_info(bg: list, total: int, corpus) -> dict:
    """What the build record says of a language's mined bigrams (the 20 first)."""
    return {"corpus": corpus, "captions": "those whose fastText language is this one",
            "word_tokens": total, "mined": len(bg),
            "top": [{"bigram": b.text, "count": b.count, "pmi": round(b.pmi, 3)} for b in bg[:20]]}


def _write_language(out_dir: Path, lang: str, sources: list[tuple[str, list[str]]], info: dict,
                    keep_unmatchable: bool, max_entries: int | None) -> dict:
    """``out_dir/<lang>.json`` from its sources; returns its record in ``_build.json``."""
    from curate.manifest import file_fingerprint

    entries, report = md.assemble(sources, keep_unmatchable=keep_unmatchable, max_entries=max_entries,
                                  is_punctuation=ww.is_pure_punctuation, max_chars=ww.MAX_ENTRY_CHARS)
    path = md.write_metadata(entries, out_dir / f"{lang}.json")
    tok = ww.tokenizer_for(lang)
    return {
        "file": path.name, "entries": report.entries, "sources": report.sources, "source_info": info,
        "tokenizer": tok.describe(),
        "script": "no spaces (entries unspaced at CJK/Thai/Lao/Burmese/Khmer/Tibetan ends)"
                  if ww.base_language(lang) in ww.NO_SPACE_LANGUAGES else "space-separated",
        "sha256": file_fingerprint(path)["sha256"]}


def check_languages(languages: list[str], lid_model: str | None = None) -> None:
    """Each language names a list a caption can be matched against: a label the language-ID
    model gives (match picks a caption's list by its label), or ``other``. A code the model
    never gives would build a list no caption ever uses, so it is refused in one line."""
    import difflib

    from curate.errors import DatasetError
    from curate.filters.langid import model_labels, resolve_model_path

    labels = model_labels(lid_model)
    for lang in languages:
        if lang != ww.OTHER and lang not in labels:
            base = ww.base_language(lang)  # a Wikipedia variant (zh_yue) -> its language
            near = ([base] if base in labels else [lang.lower()] if lang.lower() in labels
                    else difflib.get_close_matches(lang.lower(), labels, n=3, cutoff=0.6))
            hint = f"did you mean {', '.join(near)}? " if near else ""
            raise DatasetError(
                f"--languages {lang}: the language-ID model {resolve_model_path(lid_model).name} never labels a "
                f"caption '{lang}', so its list would never be matched; {hint}use one of its {len(labels)} "
                f"codes ({', '.join(labels[:8])}, ...), '{ww.OTHER}', or pass the --lid-model that gives it")


def run_build_worldwide(output: str | Path, languages: list[str], *, numbers: bool = True, wordnet: bool = True,
                        wordnet_dir: str | None = None, wordfreq_top: int | None = 100_000,
                        wordfreq_min_frequency: float | None = None, wordfreq_list: str = "best",
                        dataset=None, corpus: list[str] | None = None, corpus_column: str = "text",
                        bigram_min_count: int = 10, bigram_min_pmi: float = 8.0, bigrams: bool = True,
                        entry_lists: list[str] | None = None, keep_unmatchable: bool = False,
                        max_entries: int | None = None, executor=None, lid_model: str | None = None) -> dict:
    """Write ``output/<lang>.json`` for every language and ``output/_build.json``. A URI output is
    built in a local folder and uploaded, ``_build.json`` last (``_publish``)."""
    from curate import storage

    if storage.is_uri(output):
        import tempfile

        with tempfile.TemporaryDirectory(prefix="curate-metadata-") as local:
            build = run_build_worldwide(
                local, languages, numbers=numbers, wordnet=wordnet, wordnet_dir=wordnet_dir, wordfreq_top=wordfreq_top,
                wordfreq_min_frequency=wordfreq_min_frequency, wordfreq_list=wordfreq_list, dataset=dataset,
                corpus=corpus, corpus_column=corpus_column, bigram_min_count=bigram_min_count,
                bigram_min_pmi=bigram_min_pmi, bigrams=bigrams, entry_lists=entry_lists,
                keep_unmatchable=keep_unmatchable, max_entries=max_entries, executor=executor, lid_model=lid_model)
            return _publish(Path(local), storage.resolve(str(output)).uri, build)
    from curate.manifest import code_version
    from curate.tables import atomic_write_bytes

    out_dir = Path(output)
    languages = list(dict.fromkeys(languages))
    check_languages(languages, lid_model)
    _prepare_output_folder(out_dir, languages)
    if lid_model is None and bigrams and (corpus or dataset is not None):
        from curate.filters.langid import resolve_model_path

        lid_model = str(resolve_model_path(None))
    shared_lists, lang_lists = parse_entry_lists(entry_lists or [], languages)
    timings: dict[str, float] = {}
    mined: dict[str, tuple[list, int]] = {}
    if bigrams and (corpus or dataset is not None):
        t0 = time.perf_counter()
        mined = mine_language_bigrams([l for l in languages if l != ww.OTHER], dataset=dataset, corpus=corpus,
                                      corpus_column=corpus_column, executor=executor, lid_model=lid_model,
                                      min_count=bigram_min_count, min_pmi=bigram_min_pmi)
        timings["bigrams"] = round(time.perf_counter() - t0, 3)
    per_lang: dict[str, dict] = {}
    for lang in languages:
        t0 = time.perf_counter()
        sources, info = _language_sources(lang, numbers, wordnet, wordnet_dir, wordfreq_top, wordfreq_min_frequency,
                                          wordfreq_list)
        if lang in mined:
            sources.append(("bigrams", [b.text for b in mined[lang][0]]))
            info["bigrams"] = _bigrams_info(*mined[lang], list(corpus) if corpus else f"{dataset.root}/samples")
        for path in [*shared_lists, *lang_lists.get(lang, [])]:
            sources.append((f"user:{path}", md.read_entry_list(path)))
        per_lang[lang] = _write_language(out_dir, lang, sources, info, keep_unmatchable, max_entries)
        timings[lang] = round(time.perf_counter() - t0, 3)
    build = {"output": str(out_dir), "mode": "worldwide", "languages": per_lang,
             "entries": sum(v["entries"] for v in per_lang.values()),
             "lid_model": lid_model, "params": {
                 "languages": languages, "numbers": numbers, "wordnet": wordnet, "wordnet_dir": wordnet_dir,
                 "wordfreq_top": wordfreq_top, "wordfreq_min_frequency": wordfreq_min_frequency,
                 "wordfreq_list": wordfreq_list, "bigram_min_count": bigram_min_count,
                 "bigram_min_pmi": bigram_min_pmi, "keep_unmatchable": keep_unmatchable,
                 "max_entries": max_entries, "entry_lists": list(entry_lists or [])},
             "code": code_version(), "timings_s": timings}
    atomic_write_bytes(out_dir / "_build.json",
                       (json.dumps(build, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8"))
    return build
