"""MetaCLIP v1 substring matching, exactly.

MetaCLIP (``metaclip/substr_matching.py``) matches a caption against every metadata entry
after "spacing" both sides:

- the text gets one space at both ends, each of ``, . ; : ? !`` and the backtick gets a
  space on both sides, and tab, newline and carriage return become spaces;
- each entry gets one space at both ends (nothing else: an entry holding one of the wrapped
  punctuation marks can never match, and case is significant);
- entry ``e`` matches text ``t`` iff ``" e "`` is a substring of ``spacing(t)``.

A text's result is its set of entry ids (positions in the metadata list), sorted here.
``Matcher`` finds all of them in one pass with an Aho-Corasick automaton, which reports
every occurrence of every pattern, overlapping ones included, so its result equals the
plain ``[i for i, e in enumerate(entries) if f" {e} " in spacing(t)]`` (``naive_match``).
Duplicate entries are kept apart: each id of a repeated entry is reported.
"""

from __future__ import annotations

import operator
import os
from typing import Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PUNCTS_TO_WRAP = (",", ".", ";", ":", "?", "!", "`")
CHARS_TO_SPACE = ("\t", "\n", "\r")
_NEVER_IN_SPACED_TEXT = frozenset("\t\n\r")


def spacing(text: str) -> str:
    """MetaCLIP's text spacing (see module doc)."""
    spaced = f" {text} "
    for p in PUNCTS_TO_WRAP:
        spaced = spaced.replace(p, f" {p} ")
    for c in CHARS_TO_SPACE:
        spaced = spaced.replace(c, " ")
    return spaced


def spacing_array(texts: pa.Array | pa.ChunkedArray) -> pa.Array:
    """``spacing`` over an Arrow string array, vectorised (nulls count as empty texts)."""
    arr = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
    if not pa.types.is_string(arr.type):
        arr = arr.cast(pa.string())
    arr = pc.fill_null(arr, "")
    for p in PUNCTS_TO_WRAP:
        arr = pc.replace_substring(arr, pattern=p, replacement=f" {p} ")
    for c in CHARS_TO_SPACE:
        arr = pc.replace_substring(arr, pattern=c, replacement=" ")
    space = pa.scalar(" ", pa.string())
    return pc.binary_join_element_wise(space, arr, space, pa.scalar("", pa.string()))


def can_match(entry: str) -> bool:
    """False for entries no text can ever match (they hold a wrapped mark or a tab/newline)."""
    return not any(p in entry for p in PUNCTS_TO_WRAP) and not (_NEVER_IN_SPACED_TEXT & set(entry))


def naive_match(text: str, entries: Sequence[str]) -> list[int]:
    """Reference implementation: the plain ``entry in text`` loop MetaCLIP started from."""
    spaced = spacing(text)
    return [i for i, e in enumerate(entries) if f" {e} " in spaced]


class Matcher:
    """Aho-Corasick automaton over the spaced entries; build once, match many batches.

    Building takes about 1 s per 150k entries, so jobs get one per Python worker through
    ``curate.engine.worker_cache`` (see ``curate.metaclip.jobs``). A batch is matched in one
    automaton pass over its distinct texts, spaced and joined by newlines into one string:
    no pattern holds a newline (entries that do can never match a spaced text and are left
    out), so no match crosses two texts. The newline is itself a pattern, with the id
    ``num_entries``, so the stream of matched ids alone tells where each text ends.
    """

    def __init__(self, entries: Sequence[str], key_fn=None, text_transform=None):
        """``key_fn`` maps an entry to its automaton key (default: v1's ``" e "``; MetaCLIP 2
        uses ``curate.metaclip.worldwide.spaced_entry``); ``text_transform`` rewrites the
        distinct raw texts of a batch (an Arrow string array) before spacing (token mode)."""
        import ahocorasick

        self.num_entries = len(entries)
        self._text_transform = text_transform
        first_id: dict[str, int] = {}
        extra: dict[int, list[int]] = {}
        for i, e in enumerate(entries):
            if _NEVER_IN_SPACED_TEXT.intersection(e):
                continue  # can never match; keeps "\n" free to separate texts
            key = f" {e} " if key_fn is None else key_fn(e)
            if not key:
                continue  # an empty entry: nothing to find
            j = first_id.setdefault(key, i)
            if j != i:
                extra.setdefault(j, []).append(i)
        # Repeated entries share one pattern; the automaton stores the first id, `_extra` the rest.
        self._extra = {j: tuple(ids) for j, ids in extra.items()}
        self._extra_keys = np.array(sorted(self._extra), dtype=np.int64)
        self._automaton = None
        if first_id:
            automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
            for key in _insertion_order([*first_id, *_signposts(first_id)]):
                automaton.add_word(key, first_id.get(key, self.num_entries))
            automaton.add_word("\n", self.num_entries)
            automaton.make_automaton()
            self._automaton = automaton

    def _pairs(self, texts: pa.Array) -> tuple[np.ndarray, np.ndarray]:
        """(text index, entry id) of every match, unique, sorted by text then entry."""
        n = len(texts)
        if self._automaton is None or n == 0:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        sep = self.num_entries
        ids = np.fromiter(map(_SECOND, self._automaton.iter(_spaced_joined(texts))), dtype=np.int64)
        is_sep = ids == sep
        rows = np.cumsum(is_sep)[~is_sep]  # separators before a match = its text's index
        ids = ids[~is_sep]
        if len(self._extra_keys):
            dup = np.isin(ids, self._extra_keys)
            if dup.any():
                more = [(r, k) for r, j in zip(rows[dup].tolist(), ids[dup].tolist()) for k in self._extra[j]]
                rows = np.concatenate([rows, np.array([r for r, _ in more], np.int64)])
                ids = np.concatenate([ids, np.array([k for _, k in more], np.int64)])
        width = max(self.num_entries, 1)
        key = np.sort(rows * width + ids)  # sort + neighbour test: much faster than np.unique here
        if len(key):
            key = key[np.concatenate(([True], key[1:] != key[:-1]))]
        return key // width, key % width

    def _match_distinct(self, texts: pa.Array) -> pa.ListArray:
        rows, ids = [], []
        for start, stop in _chunks(texts, _MAX_CHUNK_BYTES):
            r, i = self._pairs(texts.slice(start, stop - start))
            rows.append(r + start)
            ids.append(i)
        rows = np.concatenate(rows) if rows else np.zeros(0, np.int64)
        ids = np.concatenate(ids) if ids else np.zeros(0, np.int64)
        offsets = np.zeros(len(texts) + 1, dtype=np.int32)
        np.cumsum(np.bincount(rows, minlength=len(texts)), out=offsets[1:])
        return pa.ListArray.from_arrays(pa.array(offsets), pa.array(ids.astype(np.int32), pa.int32()))

    def match_array(self, texts: pa.Array | pa.ChunkedArray) -> pa.ListArray:
        """Matches of an Arrow string array as ``list<int32>`` (sorted ids per text; a null
        text counts as empty). Each distinct text is matched once: web pools repeat captions."""
        arr = texts.combine_chunks() if isinstance(texts, pa.ChunkedArray) else texts
        if not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)):
            arr = arr.cast(pa.string())
        encoded = pc.dictionary_encode(pc.fill_null(arr, ""))
        distinct = encoded.dictionary
        if self._text_transform is not None:
            distinct = self._text_transform(distinct)
        out = self._match_distinct(distinct)
        return out if len(out) == len(arr) else out.take(encoded.indices)

    def match(self, texts: Iterable[str | None]) -> list[list[int]]:
        """Sorted entry ids for each raw text."""
        return self.match_array(pa.array(list(texts), pa.string())).to_pylist()


_SECOND = operator.itemgetter(1)  # the automaton yields (end offset, id); only the id is needed
_MAX_CHUNK_BYTES = 1 << 28  # the automaton indexes its input with C ints: stay far below 2**31


def _chunks(texts: pa.Array, max_bytes: int) -> list[tuple[int, int]]:
    """Row ranges of ``texts`` holding at most ``max_bytes`` of text each (at least one row)."""
    n = len(texts)
    if n == 0:
        return []
    ends = np.cumsum(pc.binary_length(texts).to_numpy(zero_copy_only=False).astype(np.int64))
    out, start = [], 0
    while start < n:
        base = ends[start - 1] if start else 0
        stop = max(int(np.searchsorted(ends, base + max_bytes, side="right")), start + 1)
        out.append((start, min(stop, n)))
        start = stop
    return out


def _spaced_joined(texts: pa.Array) -> str:
    """``"\\n".join(spacing(t) for t in texts)``, computed by Arrow on one joined string.

    Newlines inside a text become spaces first (spacing does that anyway), so the joining
    newlines are the only ones left; the other replacements then run once over the whole
    batch instead of once per text."""
    arr = pc.replace_substring(texts, pattern="\n", replacement=" ")
    one = pa.ListArray.from_arrays(pa.array([0, len(arr)], pa.int32()), arr)
    joined = pc.binary_join(one, " \n ")
    for c in ("\t", "\r"):
        joined = pc.replace_substring(joined, pattern=c, replacement=" ")
    for p in PUNCTS_TO_WRAP:
        joined = pc.replace_substring(joined, pattern=p, replacement=f" {p} ")
    return f" {joined[0].as_py()} "


# pyahocorasick scans a node's children linearly, in insertion order, and a character that is
# not a child costs a scan of all of them. The node after the leading space (a word start)
# has over a thousand children with a full metadata list, so the order of keys matters:
# - keys are inserted sorted by character ranks, so the children a caption needs most come
#   first: at a word start by how often a character follows a space in spaced captions
#   (measured on real alt-text, CC3M, COCO and Flickr captions), deeper by English letter
#   frequency;
# - characters that often follow a space but start no entry (a second space, the newline
#   ending a text, the wrapped punctuation) get a signpost key, space + character + tab,
#   which can never match (spaced texts hold no tab) but makes the character an early child
#   instead of a full scan. Together about 30% less automaton time. Matches do not depend
#   on any of this.
_WORD_START_CHARS = (" a\nts.oibwApcdfhmrglT,nSeyujCPBMvFk-WDLGRHI:OE12N'KJV(!YU\"z34&#5q?6/7|80Z9;QXx"
                     "\u2014\u2013$<[+)*~@\xa9\xa3{%\xa0=]`>_")
_COMMON_CHARS = " etaoinsrhldcumfpgwybvkxjqzETAOINSRHLDCUMFPGWYBVKXJQZ0123456789-'&/()"
_SIGNPOST_CHARS = " \n" + "".join(PUNCTS_TO_WRAP) + "-\"'(&#/|"


def _signposts(keys: Iterable[str]) -> list[str]:
    """Never-matching keys for the word-start characters no key continues with."""
    starts = {k[1] for k in keys if len(k) > 1}
    return [f" {c}\t" for c in _SIGNPOST_CHARS if c not in starts]


def _insertion_order(keys: Iterable[str]) -> list[str]:
    keys = list(keys)
    counts: dict[str, int] = {}
    for k in keys:
        for c in k:
            counts[c] = counts.get(c, 0) + 1
    rank = {c: i for i, c in enumerate(_COMMON_CHARS)}
    for c in sorted(counts, key=lambda c: (-counts[c], c)):
        rank.setdefault(c, len(rank))
    table = {ord(c): chr(r) for c, r in rank.items()}  # rank as a code point: sortable strings
    start_rank = {c: i for i, c in enumerate(dict.fromkeys(_WORD_START_CHARS))}
    last = len(start_rank)
    return sorted(keys, key=lambda k: (start_rank.get(k[1:2], last), k.translate(table)))


def load_metadata(path: str | os.PathLike) -> list[str]:
    """Entries of a metadata file: a JSON list of strings (MetaCLIP's ``metadata.json``),
    kept as is and in order, so entry ids are the same as MetaCLIP's. Errors name the line."""
    from curate.metaclip.worldwide import read_language_file

    return read_language_file(path, allow_object=False)
