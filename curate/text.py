"""Caption normalisation, vectorised over Arrow arrays.

Rule (the same as ``normalize_text_py``, which tests check it against): Unicode NFC;
drop C0/C1 control characters that are not whitespace; collapse every run of whitespace
(exactly Python's ``str.isspace`` set) to one space; strip both ends.
"""

from __future__ import annotations

import re
import unicodedata

import pyarrow as pa
import pyarrow.compute as pc

# Python's str.isspace() set, spelled for RE2: \t-\r, \x1c-\x20, \x85, and Unicode Z*.
_WHITESPACE_RE2 = r"[\t-\r\x{1c}-\x{20}\x{85}\p{Z}]+"
# Controls that are not whitespace: C0 except \t-\r and \x1c-\x1f, DEL, C1 except \x85.
_CONTROLS_RE2 = r"[\x{00}-\x{08}\x{0e}-\x{1b}\x{7f}-\x{84}\x{86}-\x{9f}]+"
_CONTROLS_PY = re.compile("[\x00-\x08\x0e-\x1b\x7f-\x84\x86-\x9f]+")


def normalize_text_py(text: str) -> str:
    """Reference (per-string) implementation of the normalisation."""
    text = unicodedata.normalize("NFC", text)
    text = _CONTROLS_PY.sub("", text)
    return " ".join(text.split())


def normalize_text(values: pa.Array | pa.ChunkedArray) -> pa.Array | pa.ChunkedArray:
    """Vectorised normalisation of a string array (nulls stay null)."""
    if pa.types.is_large_string(values.type):
        values = values.cast(pa.string())
    if len(values) == 0:
        return values
    out = pc.utf8_normalize(values, form="NFC")
    out = pc.replace_substring_regex(out, _CONTROLS_RE2, "")
    out = pc.replace_substring_regex(out, _WHITESPACE_RE2, " ")
    return pc.utf8_trim(out, characters=" ")


def word_count(values: pa.Array | pa.ChunkedArray) -> pa.Array:
    """Whitespace-separated words per string (0 for empty), like ``len(s.split())``."""
    parts = pc.split_pattern_regex(pc.utf8_trim_whitespace(values), r"[\t-\r\x{1c}-\x{20}\x{85}\p{Z}]+")
    counts = pc.list_value_length(parts)
    empty = pc.equal(pc.utf8_length(pc.utf8_trim_whitespace(values)), 0)
    return pc.if_else(empty, 0, counts)
