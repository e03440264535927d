"""Metadata lists for MetaCLIP matching, built offline and deterministically.

Sources, in the order their entries get ids (first occurrence wins when sources overlap):

1. ``numbers``: "0" .. "99", as MetaCLIP's ``build_metadata.py`` seeds its list;
2. ``wordnet``: WordNet synset names, the part before the first dot, underscores as spaces
   (``hot_dog.n.01`` -> "hot dog"), in WordNet's own synset order;
3. ``wordfreq``: the most frequent English words of the ``wordfreq`` package, by rank, cut
   by a count (top N) or a frequency threshold;
4. ``bigrams``: word pairs mined from a text corpus (by default the pool's own captions)
   with at least ``min_count`` occurrences and a pointwise mutual information of at least
   ``min_pmi`` bits, by decreasing PMI;
5. ``user``: any user lists (JSON list of strings, or a text file with one entry a line).

Empty entries and single punctuation characters are dropped (as MetaCLIP does), and so
are, by default, entries no spaced text can ever match (holding , . ; : ? ! ` or a tab or
newline; see ``curate.metaclip.matching``).
"""

from __future__ import annotations

import json
import math
import os
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Sequence

import pyarrow as pa

from curate.errors import InputFileError
from curate.metaclip.matching import PUNCTS_TO_WRAP, can_match, spacing_array

_PUNCTUATION = frozenset(string.punctuation)
_WRAPPED = frozenset(PUNCTS_TO_WRAP)

NGRAM_SCHEMA = pa.schema([("gram", pa.string()), ("order", pa.int8()), ("n", pa.int64())])


# ---------------------------------------------------------------- sources
def number_entries(upto: int = 100) -> list[str]:
    return [str(i) for i in range(upto)]


def wordnet_entries(root: str | os.PathLike | None = None) -> list[str]:
    """WordNet synset names as MetaCLIP uses them (see module doc), duplicates included."""
    from curate.wordnet import synset_lemma, synset_names

    return [synset_lemma(n) for n in synset_names(root)]


def wordfreq_entries(top: int | None = 100_000, min_frequency: float | None = None,
                     wordlist: str = "best", lang: str = "en") -> list[str]:
    """Most frequent words of ``wordfreq`` by rank: the first ``top`` and/or those with a
    frequency of at least ``min_frequency`` (both limits apply when both are given)."""
    import wordfreq

    words = wordfreq.top_n_list(lang, top if top else 10**8, wordlist=wordlist)
    if min_frequency is not None:
        freqs = wordfreq.get_frequency_dict(lang, wordlist=wordlist)
        words = [w for w in words if freqs.get(w, 0.0) >= min_frequency]
    return words


def local_input(path: str | os.PathLike, what: str) -> Path:
    """A build input (an entry list, a corpus file) as a local file: a URI's object copied to the
    input cache (``InputFileError`` naming the URI when it is not there), a path as it is."""
    from curate import storage

    if not storage.is_uri(path):
        return Path(path)
    if not storage.is_file(path):
        raise InputFileError(str(path), f"{what} not found")
    return Path(storage.local_copy(path))


def read_entry_list(path: str | os.PathLike) -> list[str]:
    """A user list: a ``.json`` list of strings, else a UTF-8 text file with one entry a line;
    a path or a URI."""
    p = local_input(path, "entry list")
    if p.suffix.lower() == ".json":
        from curate.metaclip.matching import load_metadata

        return load_metadata(p)
    try:
        with open(p, encoding="utf-8") as f:
            return [line.rstrip("\r\n") for line in f if line.strip()]
    except FileNotFoundError:
        raise InputFileError(str(path), "entry list not found") from None
    except UnicodeDecodeError as e:
        raise InputFileError(str(path), f"not UTF-8 text ({e})") from None


# ---------------------------------------------------------------- bigram mining
def _is_word(token: str) -> bool:
    return token not in _WRAPPED and any(c.isalnum() for c in token)


def count_ngrams(spaced_texts: Iterable[str]) -> tuple[Counter, Counter]:
    """Unigram and bigram counts of already-spaced texts.

    Tokens are the spaced text split on whitespace (case kept, since matching is
    case-sensitive); a bigram is two adjacent word tokens, so the wrapped punctuation
    marks (and tokens without a letter or digit) break bigrams.
    """
    unigrams: Counter = Counter()
    bigrams: Counter = Counter()
    for text in spaced_texts:
        prev = None
        for tok in text.split():
            if _is_word(tok):
                unigrams[tok] += 1
                if prev is not None:
                    bigrams[prev + " " + tok] += 1
                prev = tok
            else:
                prev = None
    return unigrams, bigrams


def ngram_batch(texts: pa.Array | pa.ChunkedArray) -> pa.RecordBatch:
    """(gram, order, n) rows counting the unigrams and bigrams of ``texts``, plus one row
    ("", 0, number of word tokens) so one aggregation also gives the corpus size."""
    uni, bi = count_ngrams(spacing_array(texts).to_pylist())
    grams = [""] + list(uni) + list(bi)
    orders = [0] + [1] * len(uni) + [2] * len(bi)
    counts = [sum(uni.values())] + list(uni.values()) + list(bi.values())
    return pa.record_batch([pa.array(grams, pa.string()), pa.array(orders, pa.int8()),
                            pa.array(counts, pa.int64())], schema=NGRAM_SCHEMA)


@dataclass
class Bigram:
    text: str
    count: int
    pmi: float


def pmi_bigrams(unigrams: dict[str, int], bigrams: dict[str, int], total_words: int,
                min_count: int, min_pmi: float) -> list[Bigram]:
    """Bigrams with ``count >= min_count`` and ``PMI >= min_pmi``, by PMI then count then text.

    ``PMI = log2(n(w1 w2) * N / (n(w1) * n(w2)))`` with N the number of word tokens, the
    measure NLTK's ``BigramAssocMeasures.pmi`` computes (and MetaCLIP thresholds).
    """
    out = []
    for text, c in bigrams.items():
        if c < min_count:
            continue
        w1, w2 = text.split(" ")
        pmi = bigram_pmi(c, total_words, unigrams[w1], unigrams[w2])
        if pmi >= min_pmi:
            out.append(Bigram(text, c, pmi))
    return sorted_bigrams(out)


def bigram_pmi(count: int, total_words: int, count_w1: int, count_w2: int) -> float:
    """``log2(n(w1 w2) * N / (n(w1) * n(w2)))`` on Python ints (exact products: at a pool's
    size ``n * N`` passes 2^63), divided once, as NLTK does."""
    return math.log2(count * total_words / (count_w1 * count_w2))


def sorted_bigrams(bigrams: Iterable[Bigram]) -> list[Bigram]:
    """Mined bigrams in their list order: by PMI, then count (both descending), then text."""
    return sorted(bigrams, key=lambda b: (-b.pmi, -b.count, b.text))


CORPUS_BATCH_ROWS = 65536


def corpus_text_batches(path: str | os.PathLike, column: str = "text",
                        rows: int = CORPUS_BATCH_ROWS) -> Iterator[pa.Array]:
    """Texts of a corpus file in Arrow batches of up to ``rows`` (a null text is ""): Parquet
    (``column``), else UTF-8 text with one text a line; a path or a URI (copied to this
    machine's input cache, so each worker reads its own copy)."""
    p = local_input(path, "corpus file")
    if p.suffix.lower() == ".parquet":
        import pyarrow.compute as pc
        import pyarrow.parquet as pq

        try:
            pf = pq.ParquetFile(p)
        except (OSError, pa.ArrowInvalid) as e:
            raise InputFileError(str(path), f"cannot read Parquet ({e})") from None
        if column not in pf.schema_arrow.names:
            raise InputFileError(str(path), f"no column {column!r} (columns: {', '.join(pf.schema_arrow.names)})")
        for b in pf.iter_batches(batch_size=rows, columns=[column]):
            yield pc.fill_null(b.column(0).cast(pa.string()), "")
        return
    try:
        with open(p, encoding="utf-8") as f:
            lines: list[str] = []
            for line in f:
                lines.append(line.rstrip("\r\n"))
                if len(lines) == rows:
                    yield pa.array(lines, pa.string())
                    lines = []
            if lines:
                yield pa.array(lines, pa.string())
    except FileNotFoundError:
        raise InputFileError(str(path), "corpus file not found") from None
    except UnicodeDecodeError as e:
        raise InputFileError(str(path), f"not UTF-8 text ({e})") from None


# ---------------------------------------------------------------- assembly
@dataclass
class BuildReport:
    entries: int = 0
    sources: dict[str, dict[str, int]] = field(default_factory=dict)


def assemble(sources: Sequence[tuple[str, Iterable[str]]], keep_unmatchable: bool = False,
             max_entries: int | None = None, is_punctuation=None,
             max_chars: int | None = None) -> tuple[list[str], BuildReport]:
    """Concatenate sources in order, dropping repeats, empty entries, lone punctuation and
    (unless ``keep_unmatchable``) entries that can never match; cap at ``max_entries``.

    Worldwide builds pass MetaCLIP 2's rules: ``is_punctuation`` (entries made only of
    punctuation, CJK marks included) and ``max_chars`` (256); those drops count as
    ``empty_or_punctuation`` and ``too_long``."""
    def punctuation(e: str) -> bool:
        return e in _PUNCTUATION if is_punctuation is None else is_punctuation(e)

    seen: set[str] = set()
    entries: list[str] = []
    report = BuildReport()
    for name, items in sources:
        stats = Counter(offered=0, added=0, duplicate=0, empty_or_punctuation=0, unmatchable=0, over_cap=0)
        for e in items:
            stats["offered"] += 1
            if not isinstance(e, str):
                raise TypeError(f"source {name}: entry {e!r} is not a string")
            e = e.strip()
            if not e or punctuation(e):
                stats["empty_or_punctuation"] += 1
            elif max_chars is not None and len(e) > max_chars:
                stats["too_long"] += 1
            elif not keep_unmatchable and not can_match(e):
                stats["unmatchable"] += 1
            elif e in seen:
                stats["duplicate"] += 1
            elif max_entries is not None and len(entries) >= max_entries:
                stats["over_cap"] += 1
            else:
                seen.add(e)
                entries.append(e)
                stats["added"] += 1
        report.sources[name] = dict(stats)
    report.entries = len(entries)
    return entries, report


def write_metadata(entries: Sequence[str], path: str | os.PathLike) -> Path | str:
    """Write a metadata JSON list (UTF-8, one JSON array), atomically: a file, or one whole
    object under a URI."""
    from curate import storage
    from curate.tables import atomic_write_bytes

    p = str(path) if storage.is_uri(path) else Path(path)
    atomic_write_bytes(p, json.dumps(list(entries), ensure_ascii=False).encode("utf-8"), shard=False)
    return p
