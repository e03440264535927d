"""Matching equals the plain `entry in text` semantics on every real caption in ../shared/data,
against a metadata list of more than 100,000 entries built offline."""

from __future__ import annotations

import random

from curate.metaclip.matching import Matcher, naive_match, spacing


def span_reference(texts, entries):
    """`entry in text` for all entries at once: a spaced entry " e " starts and ends with a
    space, so every occurrence is a slice of the spaced text between two of its spaces."""
    by_key: dict[str, list[int]] = {}
    for i, e in enumerate(entries):
        by_key.setdefault(f" {e} ", []).append(i)
    longest = max(len(k) for k in by_key)
    out = []
    for text in texts:
        s = spacing(text)
        spaces = [i for i, ch in enumerate(s) if ch == " "]
        found: set[int] = set()
        for a, start in enumerate(spaces):
            for end in spaces[a + 1:]:
                if end - start + 1 > longest:
                    break
                hit = by_key.get(s[start:end + 1])
                if hit:
                    found.update(hit)
        out.append(sorted(found))
    return out


def test_equal_to_plain_loop_on_all_real_captions(real_captions, big_metadata):
    entries, build = big_metadata
    assert build["sources"]["wordnet"]["added"] > 80_000 and build["sources"]["bigrams"]["added"] > 100
    texts = [t for source in real_captions.values() for t in source]
    assert len(texts) > 90_000
    got = Matcher(entries).match(texts)
    assert got == span_reference(texts, entries)
    assert sum(1 for g in got if g) > 0.9 * len(texts)

    # The literal loop MetaCLIP started from, on a sample of every source (~50 ms a text).
    rng = random.Random(0)
    start = 0
    for name, source in real_captions.items():
        for i in rng.sample(range(len(source)), 10):
            assert got[start + i] == naive_match(source[i], entries), (name, i)
        start += len(source)
