"""MetaCLIP metadata build: the entry list from numbers, WordNet, wordfreq, mined bigrams and
user lists; bigrams are mined in the engine (``bigram_mining``) from the pool's shards or the
corpus files, one task each."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from curate import storage
from curate.metaclip.metadata import NGRAM_SCHEMA, ngram_batch
from curate.tables import Dataset, atomic_write_bytes
from curate.metaclip.job_shards import (check_columns, input_shards)


def ngram_count_task(task: dict) -> Iterator[pa.RecordBatch]:
    """(gram, order, n) counts of one input shard's text column, one batch per read batch."""
    pf = check_columns(task["input"], [task.get("column", "text")])  # a path or a URI
    for b in pf.iter_batches(batch_size=task.get("batch_size", 65536), columns=[task.get("column", "text")]):
        yield ngram_batch(b.column(0))


def run_build(output: str | Path, *, numbers: bool = True, wordnet: bool = True, wordnet_dir: str | None = None,
              wordfreq_top: int | None = 100_000, wordfreq_min_frequency: float | None = None,
              wordfreq_list: str = "best", dataset: Dataset | None = None, corpus: list[str] | None = None,
              corpus_column: str = "text", bigram_min_count: int = 10, bigram_min_pmi: float = 8.0,
              bigrams: bool = True, entry_lists: list[str] | None = None, keep_unmatchable: bool = False,
              max_entries: int | None = None, executor=None, languages: list[str] | None = None,
              lid_model: str | None = None) -> dict:
    """Build a metadata JSON list from the sources of ``curate.metaclip.metadata``; writes
    ``output`` and ``<output>.build.json`` (sources, parameters, counts) and returns the latter.

    ``languages`` other than None or ``["en"]`` builds MetaCLIP 2 worldwide metadata instead:
    ``output`` is then a folder with one ``<lang>.json`` per language
    (``curate.metaclip.worldwide_build``)."""
    if languages is not None and list(languages) != ["en"]:
        from curate.metaclip.worldwide_build import run_build_worldwide

        return run_build_worldwide(
            output, list(languages), numbers=numbers, wordnet=wordnet, wordnet_dir=wordnet_dir,
            wordfreq_top=wordfreq_top, wordfreq_min_frequency=wordfreq_min_frequency, wordfreq_list=wordfreq_list,
            dataset=dataset, corpus=corpus, corpus_column=corpus_column, bigram_min_count=bigram_min_count,
            bigram_min_pmi=bigram_min_pmi, bigrams=bigrams, entry_lists=entry_lists,
            keep_unmatchable=keep_unmatchable, max_entries=max_entries, executor=executor, lid_model=lid_model)
    from curate.manifest import code_version
    from curate.metaclip import metadata as md

    timings: dict[str, float] = {}
    sources = _builtin_sources(numbers, wordnet, wordnet_dir, wordfreq_top, wordfreq_min_frequency, wordfreq_list,
                               timings)
    bigram_info: dict = {}
    if bigrams and (corpus or dataset is not None):
        mined, bigram_info = _timed(timings, "bigrams", lambda: _mine_bigrams(
            dataset, corpus, corpus_column, executor, bigram_min_count, bigram_min_pmi))
        sources.append(("bigrams", [b.text for b in mined]))
    for path in entry_lists or []:
        sources.append((f"user:{path}", md.read_entry_list(path)))
    entries, report = md.assemble(sources, keep_unmatchable=keep_unmatchable, max_entries=max_entries)
    out = md.write_metadata(entries, output)
    build = {
        "output": str(out), "entries": report.entries, "sources": report.sources, "bigrams": bigram_info,
        # wordfreq_top 0 as the user gave it (the job takes None for no top-N list)
        "params": {"numbers": numbers, "wordnet": wordnet, "wordnet_dir": wordnet_dir,
                   "wordfreq_top": wordfreq_top or 0,
                   "wordfreq_min_frequency": wordfreq_min_frequency, "wordfreq_list": wordfreq_list,
                   "bigram_min_count": bigram_min_count, "bigram_min_pmi": bigram_min_pmi,
                   "keep_unmatchable": keep_unmatchable, "max_entries": max_entries,
                   "entry_lists": list(entry_lists or [])},
        "sha256": hashlib.sha256(storage.read_bytes(out)).hexdigest(), "code": code_version(), "timings_s": timings,
    }
    atomic_write_bytes(f"{out}.build.json" if storage.is_uri(out) else Path(f"{out}.build.json"),
                       (json.dumps(build, indent=2, sort_keys=True) + "\n").encode(), shard=False)
    return build


def _timed(timings: dict[str, float], name: str, fn):
    t0 = time.perf_counter()
    out = fn()
    timings[name] = round(time.perf_counter() - t0, 3)
    return out


def _builtin_sources(numbers: bool, wordnet: bool, wordnet_dir: str | None, wordfreq_top: int | None,
                     wordfreq_min_frequency: float | None, wordfreq_list: str,
                     timings: dict[str, float]) -> list[tuple[str, list[str]]]:
    """The entry sources that need no corpus: numbers, WordNet, wordfreq (each timed)."""
    from curate.metaclip import metadata as md

    sources: list[tuple[str, list[str]]] = []
    if numbers:
        sources.append(("numbers", md.number_entries()))
    if wordnet:
        sources.append(("wordnet", _timed(timings, "wordnet", lambda: md.wordnet_entries(wordnet_dir))))
    if wordfreq_top or wordfreq_min_frequency is not None:
        sources.append(("wordfreq", _timed(timings, "wordfreq", lambda: md.wordfreq_entries(
            wordfreq_top, wordfreq_min_frequency, wordlist=wordfreq_list))))
    return sources


def _mine_bigrams(dataset: Dataset | None, corpus: list[str] | None, corpus_column: str, executor,
                  min_count: int, min_pmi: float) -> tuple[list, dict]:
    """High-PMI bigrams of the corpus files (or of the pool's captions), mined in the engine
    (``bigram_mining``), and their build record."""
    from curate.engine import LocalExecutor
    from curate.metaclip.bigram_mining import corpus_ngram_task, mine_bigrams

    if corpus:
        tasks, fn = corpus_tasks(corpus, corpus_column), corpus_ngram_task
    else:
        shards = input_shards(dataset, "samples", "run `curate ingest` first, or give --bigram-corpus")
        tasks, fn = [{"input": str(p)} for p in shards], ngram_count_task
    found = mine_bigrams(executor or LocalExecutor(), tasks, fn, NGRAM_SCHEMA, min_count, min_pmi)
    mined, total = found.get("", ([], 0))
    info = {"corpus": list(corpus) if corpus else f"{dataset.root}/samples", "word_tokens": total,
            "mined": len(mined),
            "top": [{"bigram": b.text, "count": b.count, "pmi": round(b.pmi, 3)} for b in mined[:20]]}
    return mined, info


def corpus_tasks(corpus: list[str], column: str, **extra) -> list[dict]:
    """One n-gram task per corpus file, each checked to exist first (one line naming it)."""
    from curate.errors import InputFileError

    for path in corpus:
        if not (storage.is_file(path) if storage.is_uri(path) else Path(path).is_file()):
            raise InputFileError(str(path), "corpus file not found")
    return [{"corpus": str(path), "column": column, **extra} for path in corpus]


CORPUS_LINE_BYTES = 40  # a caption-like line, to size a text corpus for ``--engine auto``


def corpus_rows(corpus: list[str]) -> int | None:
    """About how many texts the corpus files hold, from Parquet footers and text files' sizes
    (nothing else is read); None when a file cannot be sized (its task will say why)."""
    rows = 0
    for path in corpus:
        try:
            if str(path).lower().endswith(".parquet"):
                rows += storage.parquet_file(str(path)).metadata.num_rows
            else:
                rows += storage.fingerprint(path)[2] // CORPUS_LINE_BYTES + 1
        except (OSError, pa.ArrowInvalid):
            return None
    return rows
