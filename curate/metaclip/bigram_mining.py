"""MetaCLIP bigram mining in the engine, for a pool's captions or corpus files.

Each task counts its texts' unigrams and bigrams (``(gram, order, n)`` rows, per language for a
worldwide build); the engine sums them by key, keeps the grams seen at least ``min_count``
times, joins each frequent bigram with the counts of its two words and scores it by PMI on the
workers. The driver receives one word total per language and the bigrams that pass
``min_pmi``: the mined list, which is part of the metadata it writes. It never holds the
vocabulary. A pool of billions of captions has hundreds of millions of distinct grams above a
count of 10.

The numbers are the ones ``metadata.pmi_bigrams`` computes in memory: integer sums, then
``bigram_pmi`` on Python ints per bigram, and the same order of the list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial

import pyarrow as pa
import pyarrow.compute as pc

from curate.engine.frame import TooManyRows
from curate.errors import DatasetError
from curate.metaclip import metadata as md

# The mined bigrams the driver takes (with their counts and PMI: ~100 bytes each in Python).
# MetaCLIP's whole English metadata is 500,000 entries; a threshold that mines more than this is
# a threshold to raise, not a list to hold.
MAX_MINED_BIGRAMS = 10_000_000
MAX_LANGUAGES = 1_000

COUNTS = pa.schema([("lang", pa.string()), ("gram", pa.string()), ("order", pa.int8()), ("n", pa.int64())])
WORDS = pa.schema([("key", pa.string()), ("n_word", pa.int64())])
PAIRS = pa.schema([("lang", pa.string()), ("gram", pa.string()), ("n", pa.int64()), ("key1", pa.string()),
                   ("key2", pa.string())])
SCORED = pa.schema([("lang", pa.string()), ("gram", pa.string()), ("n", pa.int64()), ("pmi", pa.float64())])


def corpus_ngram_task(task: dict) -> Iterator[pa.RecordBatch]:
    """(gram, order, n) counts of one corpus file's texts, one batch per read batch."""
    for texts in md.corpus_text_batches(task["corpus"], task.get("column", "text"),
                                        task.get("batch_size", md.CORPUS_BATCH_ROWS)):
        yield md.ngram_batch(texts)


def mine_bigrams(executor, tasks: list[dict], task_fn: Callable, schema: pa.Schema, min_count: int,
                 min_pmi: float) -> dict[str, tuple[list[md.Bigram], int]]:
    """{language: (its mined bigrams in list order, its word tokens)} from the tasks' n-gram
    rows (``schema``: ``metadata.NGRAM_SCHEMA``, language "", or with a ``lang`` column).
    A language without a word has no entry. ``DatasetError`` if more than
    ``MAX_MINED_BIGRAMS`` bigrams pass the thresholds."""
    rows = executor.frame_from_tasks(tasks, task_fn, schema)
    if "lang" not in schema.names:
        rows = rows.with_constant("lang", "", pa.string())
    frequent = (rows.aggregate(["lang", "gram", "order"], {"n": ("n", "sum")})
                .map_batches(partial(_frequent, min_count=min_count), COUNTS).cache())
    try:
        t = frequent.map_batches(_totals, COUNTS).collect_small(MAX_LANGUAGES)
        totals = dict(zip(t.column("lang").to_pylist(), t.column("n").to_pylist()))
        words = frequent.map_batches(_words, WORDS)
        scored = (frequent.map_batches(_pairs, PAIRS)
                  .join(words.select_as([("key1", "key"), ("n1", "n_word")]), on="key1")
                  .join(words.select_as([("key2", "key"), ("n2", "n_word")]), on="key2")
                  .map_batches(partial(_scored, totals=tuple(sorted(totals.items())), min_pmi=min_pmi), SCORED))
        try:
            mined = scored.collect_small(MAX_MINED_BIGRAMS)
        except TooManyRows:
            raise DatasetError(f"bigram mining: more than {MAX_MINED_BIGRAMS:,} bigrams pass count >= {min_count} "
                               f"and PMI >= {min_pmi}; raise --bigram-min-count or --bigram-min-pmi") from None
    finally:
        frequent.release()
    found: dict[str, list[md.Bigram]] = {lang: [] for lang in totals}
    for lang, gram, n, pmi in zip(*(mined.column(c).to_pylist() for c in SCORED.names)):
        found[lang].append(md.Bigram(gram, n, pmi))
    return {lang: (md.sorted_bigrams(found[lang]), totals[lang]) for lang in totals}


def _frequent(batch: pa.RecordBatch, min_count: int) -> pa.RecordBatch:
    """Grams seen at least ``min_count`` times, and every language's word total (order 0)."""
    order = batch.column("order")
    return batch.filter(pc.or_(pc.greater_equal(batch.column("n"), min_count), pc.equal(order, 0)))


def _totals(batch: pa.RecordBatch) -> pa.RecordBatch:
    return batch.filter(pc.equal(batch.column("order"), 0))


def _key(lang: pa.Array, word: pa.Array) -> pa.Array:
    # a word never holds a space (a bigram is "w1 w2"); a language code never does either
    return pc.binary_join_element_wise(lang, word, " ")


def _words(batch: pa.RecordBatch) -> pa.RecordBatch:
    b = batch.filter(pc.equal(batch.column("order"), 1))
    return pa.record_batch([_key(b.column("lang"), b.column("gram")), b.column("n")], schema=WORDS)


def _pairs(batch: pa.RecordBatch) -> pa.RecordBatch:
    b = batch.filter(pc.equal(batch.column("order"), 2))
    parts = pc.split_pattern(b.column("gram"), " ", max_splits=1)
    w1, w2 = pc.list_element(parts, 0), pc.list_element(parts, 1)
    return pa.record_batch([b.column("lang"), b.column("gram"), b.column("n"), _key(b.column("lang"), w1),
                            _key(b.column("lang"), w2)], schema=PAIRS)


def _scored(batch: pa.RecordBatch, totals: tuple[tuple[str, int], ...], min_pmi: float) -> pa.RecordBatch:
    """The batch's bigrams with their PMI (``metadata.bigram_pmi``, per row on Python ints),
    those at ``min_pmi`` or more."""
    total = dict(totals)
    d = batch.to_pydict()
    keep: dict[str, list] = {c: [] for c in SCORED.names}
    for lang, gram, n, n1, n2 in zip(d["lang"], d["gram"], d["n"], d["n1"], d["n2"]):
        pmi = md.bigram_pmi(n, total[lang], n1, n2)
        if pmi >= min_pmi:
            for c, v in zip(SCORED.names, (lang, gram, n, pmi)):
                keep[c].append(v)
    return pa.record_batch([pa.array(keep[c], SCORED.field(c).type) for c in SCORED.names], schema=SCORED)
