"""CSV and TSV pools, with or without a header line.

Parsed with Python's csv module (C-speed) so each malformed record can be rejected on its
own with its record index, instead of failing the whole file. Bytes that are not UTF-8
are kept as surrogate escapes while parsing and turn the row into a ``text_not_utf8`` reject.
"""

from __future__ import annotations

import csv
import itertools
import re
import sys
from collections import Counter, deque
from pathlib import Path
from typing import Iterator

import pyarrow as pa

from curate.errors import InputFileError
from curate.readers.base import (HEIGHT_CANDIDATES, IMAGE_EXTS, TEXT_CANDIDATES, UID_CANDIDATES, URL_CANDIDATES,
                                 WIDTH_CANDIDATES, RawBuilder, ReaderOptions, extra_json, iter_flush,
                                 pick, shown_columns, stated_size)

csv.field_size_limit(sys.maxsize)
_URL_LIKE = re.compile(r"^(https?|file|s3|gs)://", re.I)
_SURROGATE = re.compile("[\udc80-\udcff]")


def _has_bad_bytes(s: str) -> bool:
    return bool(_SURROGATE.search(s))


def _open_text(path: str):
    import io

    from curate import storage

    try:  # a URI: the object streamed (curate.storage.open_binary), never copied
        # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
        return io.TextIOWrapper(storage.open_binary(path), encoding="utf-8-sig", errors="surrogateescape", newline="")
    except OSError as e:
        raise InputFileError(path, f"cannot open ({e.strerror})") from e


class LineFeed:
    """The file's physical lines for ``csv.reader``, remembering which lines made the last
    record; lines handed back with ``push_back`` are read again first (after a record with
    an unterminated quote has been cut to its first line)."""

    def __init__(self, fh):
        self.lines = iter(fh)
        self.lineno = 0
        self.pending: deque[tuple[int, str]] = deque()
        self.taken: list[tuple[int, str]] = []

    def __iter__(self):
        return self

    def __next__(self) -> str:
        if self.pending:
            item = self.pending.popleft()
        else:
            self.lineno += 1
            item = (self.lineno, next(self.lines))  # StopIteration ends the file
        self.taken.append(item)
        return item[1]

    def push_back(self, lines: list[tuple[int, str]]) -> None:
        self.pending.extendleft(reversed(lines))


def _records(reader, feed: LineFeed, path: str) -> Iterator[tuple[int, list[str] | None, str | None, list]]:
    """(record index, fields or None, error, physical lines) for each non-blank record,
    surviving bad lines. The index counts records as they come (a record cut short by
    ``push_back`` is one record; its pushed-back lines make the following ones)."""
    index = 0
    while True:
        feed.taken = []
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield index, None, f"line {feed.taken[0][0] if feed.taken else feed.lineno}: {e}", feed.taken
            index += 1
            continue
        except OSError as e:
            raise InputFileError(path, f"read error at record {index} ({e})") from e
        if not fields:  # blank line: not a record
            continue
        yield index, fields, None, feed.taken
        index += 1


def _ends_inside_quotes(lines: list[tuple[int, str]], delimiter: str) -> bool:
    """Whether the record's text ends inside a quoted field (the file ended first). Only an
    odd number of quote characters can, so the strict re-parse is rare."""
    if sum(t.count('"') for _, t in lines) % 2 == 0:
        return False
    try:
        for _ in csv.reader([t for _, t in lines], delimiter=delimiter, strict=True):
            pass
    except csv.Error as e:
        return "unexpected end of data" in str(e)
    return False


def read_delimited(path: str, options: ReaderOptions, delimiter: str) -> Iterator[pa.RecordBatch]:
    fh = _open_text(path)
    with fh:
        feed = LineFeed(fh)
        reader = csv.reader(feed, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
        records = _records(reader, feed, path)
        first = next(records, None)
        if first is None:
            return
        columns, pending = _columns(path, first, options, delimiter, lambda: _usual_record(path, delimiter))
        out = RawBuilder(options.batch_size)
        if pending is not None:
            columns.take(out, feed, *pending)
        for rec in records:
            columns.take(out, feed, *rec)
            if out.full():
                yield from iter_flush(out)
        yield from iter_flush(out)


def delimited_columns(path: str, options: ReaderOptions, delimiter: str) -> dict[str, str] | None:
    """The columns the reader takes the url and caption from (a header's names, or ``column N``
    of a headerless file), read from the file's first records; None for an empty file."""
    with _open_text(path) as fh:
        feed = LineFeed(fh)
        reader = csv.reader(feed, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
        first = next(_records(reader, feed, path), None)
        if first is None:
            return None
        cols, _ = _columns(path, first, options, delimiter, lambda: _usual_record(path, delimiter))
    named = cols.shift == 1
    return {role: (cols.names[i] if named else f"column {i}") for role, i in (("url", cols.iu), ("text", cols.it))}


SAMPLE_RECORDS = 100  # records a headerless file's column count is taken from


def _usual_record(path: str, delimiter: str) -> list[str] | None:
    """The first of a headerless file's first ``SAMPLE_RECORDS`` records that has their most
    common field count: the file's shape, so that a ragged first record is one reject rather
    than the whole file refused (or every other record rejected). Read from a second stream of
    the file: the main reader's records are not held back."""
    with _open_text(path) as fh:
        feed = LineFeed(fh)
        reader = csv.reader(feed, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
        sample = [f for _, f, _, _ in itertools.islice(_records(reader, feed, path), SAMPLE_RECORDS) if f]
    if not sample:
        return None
    usual = Counter(len(f) for f in sample).most_common(1)[0][0]
    return next(f for f in sample if len(f) == usual)


def _columns(path: str, first, options: ReaderOptions, delimiter: str,
             usual_record=None) -> tuple["_Columns", tuple | None]:
    """The file's column roles from its first record (a header, or, headerless, the first of
    the usual shape (``usual_record()``) whose URL-like field is the url column), and the first
    record when it is data."""
    cm = options.columns
    header = options.header
    if header == "auto":
        f0 = first[1]
        header = "no" if (f0 is not None and any(_URL_LIKE.match(x.strip()) for x in f0)) else "yes"
    if header == "yes":
        names, err = first[1], first[2]
        if names is None:
            raise InputFileError(path, f"cannot parse the header line ({err})")
        # column names are labels, not data: undecodable bytes become U+FFFD
        names = [n.strip().encode("utf-8", "surrogateescape").decode("utf-8", "replace") for n in names]
        pending = None
    else:
        fields = (usual_record() if usual_record else None) or first[1] or []
        names = [str(i) for i in range(len(fields))]
        pending = first
    url_c = pick(names, cm.url, URL_CANDIDATES)
    text_c = pick(names, cm.text, TEXT_CANDIDATES)
    if header == "no" and pending is not None and fields:
        # Headerless: the url column is the one that looks like a URL; with two columns
        # the caption is the other one (e.g. Conceptual Captions' caption<TAB>url).
        if url_c is None:
            url_c = next((names[i] for i, x in enumerate(fields) if _URL_LIKE.match(x.strip())), None)
        if text_c is None and len(names) == 2 and url_c is not None:
            text_c = names[1 - names.index(url_c)]
    for role, c, flag in (("url", url_c, "--url-col"), ("text", text_c, "--text-col")):
        if c is None:
            asked = getattr(cm, role)
            what = f"column {asked!r} not found" if asked else f"no {role} column found"
            raise InputFileError(path, f"{what}; columns are {shown_columns(names)}; map one with {flag}")
    roles = (url_c, text_c, pick(names, cm.uid, UID_CANDIDATES), pick(names, cm.width, WIDTH_CANDIDATES),
             pick(names, cm.height, HEIGHT_CANDIDATES))
    return _Columns(names, roles, delimiter, shift=1 if header == "yes" else 0), pending


class _Columns:
    """Where each role sits in a record, and how one record becomes a sample or a reject."""

    def __init__(self, names: list[str], roles: tuple, delimiter: str, shift: int):
        url_c, text_c, uid_c, w_c, h_c = roles
        self.names, self.ncol, self.delimiter = names, len(names), delimiter
        self.iu, self.it = names.index(url_c), names.index(text_c)
        self.iuid = names.index(uid_c) if uid_c else None
        self.iw = names.index(w_c) if w_c else None
        self.ih = names.index(h_c) if h_c else None
        used = {i for i in (self.iu, self.it, self.iuid, self.iw, self.ih) if i is not None}
        self.extra_idx = [i for i in range(self.ncol) if i not in used]
        self.delim_name = "tab" if delimiter == "\t" else repr(delimiter)
        self.shift = shift  # source_row counts data records only

    def starts_record(self, line: str) -> bool:
        """Whether a physical line reads as a whole record of its own (the right number
        of fields, a URL or image file where the url column is)."""
        fields = next(csv.reader([line], delimiter=self.delimiter, strict=False), [])
        if len(fields) != self.ncol:
            return False
        v = fields[self.iu].strip()
        return bool(_URL_LIKE.match(v)) or Path(v).suffix.lower() in IMAGE_EXTS

    def unterminated(self, lines) -> bool:
        """A quote opened in the record's first line never closed where it should: the
        file ended inside it, or it swallowed lines that are records of their own."""
        if len(lines) > 1 and any(self.starts_record(t) for _, t in lines[1:]):
            return True
        return _ends_inside_quotes(lines, self.delimiter)

    def take(self, out: RawBuilder, feed: LineFeed, index, fields, err, lines) -> None:
        # most records are one line with balanced quotes: nothing more to check
        suspect = len(lines) > 1 or (len(lines) == 1 and lines[0][1].count('"') % 2 == 1)
        if fields is not None and suspect and self.unterminated(lines):
            out.reject(index - self.shift, "malformed_record",
                       f"line {lines[0][0]}: unterminated quote (the quoted field does not close on this "
                       "line; the lines after it are read as records of their own)",
                       lines[0][1].encode("utf-8", "surrogateescape"))
            feed.push_back(lines[1:])
            return
        self.handle(out, index, fields, err, lines)

    def handle(self, out: RawBuilder, index, fields, err, lines) -> None:
        index -= self.shift
        delimiter, ncol = self.delimiter, self.ncol
        if fields is None:
            out.reject(index, "malformed_record", err, "".join(t for _, t in lines))
            return
        if len(fields) != ncol:
            out.reject(index, "malformed_record",
                       f"line {lines[0][0]}: expected {ncol} {self.delim_name}-separated fields, found {len(fields)}",
                       delimiter.join(fields).encode("utf-8", "surrogateescape"))
            return
        if (_has_bad_bytes(lines[0][1]) if len(lines) == 1 else any(_has_bad_bytes(t) for _, t in lines)):
            bad = [self.names[i] for i, f in enumerate(fields) if _has_bad_bytes(f)]
            out.reject(index, "text_not_utf8", f"line {lines[0][0]}: column(s) {bad} are not valid UTF-8",
                       delimiter.join(fields).encode("utf-8", "surrogateescape"))
            return
        url, text = fields[self.iu], fields[self.it]
        w, h, problem = stated_size(fields[self.iw] if self.iw is not None else None,
                                    fields[self.ih] if self.ih is not None else None)
        if problem:
            out.reject(index, problem[0], f"line {lines[0][0]}: {problem[1]}", delimiter.join(fields))
            return
        extra = extra_json({self.names[i]: fields[i] for i in self.extra_idx}) if self.extra_idx else None
        out.add(index, url=url, text=text, uid=fields[self.iuid] if self.iuid is not None else None,
                width=w, height=h, extra=extra)
