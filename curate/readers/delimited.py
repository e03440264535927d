"""CSV and TSV pools, with or without a header line.

Parsed with Python's csv module (C-speed) so each malformed record can be rejected on its
own with its record index, instead of failing the whole file. Bytes that are not UTF-8
are kept as surrogate escapes while parsing and turn the row into a ``text_not_utf8`` reject.
"""

from __future__ import annotations

import csv
import io
import re
import sys
from typing import Iterator

import pyarrow as pa

from curate.errors import InputFileError
from curate.readers.base import (HEIGHT_CANDIDATES, TEXT_CANDIDATES, UID_CANDIDATES, URL_CANDIDATES,
                                 WIDTH_CANDIDATES, RawBuilder, ReaderOptions, as_int, extra_json, iter_flush,
                                 pick)

csv.field_size_limit(sys.maxsize)
_URL_LIKE = re.compile(r"^(https?|file|s3|gs)://", re.I)
_SURROGATE = re.compile("[\udc80-\udcff]")


def _has_bad_bytes(s: str) -> bool:
    return bool(_SURROGATE.search(s))


def _open_text(path: str):
    try:
        return open(path, "r", encoding="utf-8", errors="surrogateescape", newline="")
    except OSError as e:
        raise InputFileError(path, f"cannot open ({e.strerror})") from e


def _records(reader, path: str, fh) -> Iterator[tuple[int, list[str] | None, str | None]]:
    """(record index, fields or None, error) for each non-blank record, surviving bad lines."""
    index = 0
    while True:
        try:
            fields = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            yield index, None, f"line {reader.line_num}: {e}"
            index += 1
            continue
        except OSError as e:
            raise InputFileError(path, f"read error at record {index} ({e})") from e
        if not fields:  # blank line: not a record
            continue
        yield index, fields, None
        index += 1


def read_delimited(path: str, options: ReaderOptions, delimiter: str) -> Iterator[pa.RecordBatch]:
    fh = _open_text(path)
    with fh:
        reader = csv.reader(fh, delimiter=delimiter, quotechar='"', doublequote=True, strict=False)
        records = _records(reader, path, fh)
        first = next(records, None)
        if first is None:
            return
        cm = options.columns
        header = options.header
        if header == "auto":
            _, f0, err0 = first
            header = "no" if (f0 is not None and any(_URL_LIKE.match(x.strip()) for x in f0)) else "yes"
        if header == "yes":
            _, names, err = first
            if names is None:
                raise InputFileError(path, f"cannot parse the header line ({err})")
            names = [n.strip() for n in names]
            pending = None
        else:
            fields = first[1] or []
            names = [str(i) for i in range(len(fields))]
            pending = first
        url_c = pick(names, cm.url, URL_CANDIDATES)
        text_c = pick(names, cm.text, TEXT_CANDIDATES)
        if header == "no" and pending is not None and pending[1] is not None:
            # Headerless: the url column is the one that looks like a URL; with two columns
            # the caption is the other one (e.g. Conceptual Captions' caption<TAB>url).
            if url_c is None:
                url_c = next((names[i] for i, x in enumerate(pending[1]) if _URL_LIKE.match(x.strip())), None)
            if text_c is None and len(names) == 2 and url_c is not None:
                text_c = names[1 - names.index(url_c)]
        for role, c, flag in (("url", url_c, "--url-col"), ("text", text_c, "--text-col")):
            if c is None:
                asked = getattr(cm, role)
                what = f"column {asked!r} not found" if asked else f"no {role} column found"
                raise InputFileError(path, f"{what}; columns are {names}; map one with {flag}")
        uid_c = pick(names, cm.uid, UID_CANDIDATES)
        w_c = pick(names, cm.width, WIDTH_CANDIDATES)
        h_c = pick(names, cm.height, HEIGHT_CANDIDATES)
        ncol = len(names)
        iu, it = names.index(url_c), names.index(text_c)
        iuid = names.index(uid_c) if uid_c else None
        iw = names.index(w_c) if w_c else None
        ih = names.index(h_c) if h_c else None
        used = {i for i in (iu, it, iuid, iw, ih) if i is not None}
        extra_idx = [i for i in range(ncol) if i not in used]
        out = RawBuilder(options.batch_size)
        delim_name = "tab" if delimiter == "\t" else repr(delimiter)

        shift = 1 if header == "yes" else 0  # source_row counts data records only

        def handle(index, fields, err):
            index -= shift
            if fields is None:
                out.reject(index, "malformed_record", err, None)
                return
            if len(fields) != ncol:
                out.reject(index, "malformed_record",
                           f"expected {ncol} {delim_name}-separated fields, found {len(fields)}",
                           delimiter.join(fields))
                return
            url, text = fields[iu], fields[it]
            if _has_bad_bytes(url) or _has_bad_bytes(text):
                out.reject(index, "text_not_utf8", "url or caption is not valid UTF-8",
                           delimiter.join(fields).encode("utf-8", "surrogateescape"))
                return
            w, okw = as_int(fields[iw]) if iw is not None else (None, True)
            h, okh = as_int(fields[ih]) if ih is not None else (None, True)
            if not (okw and okh):
                out.reject(index, "wrong_type", "width/height is not an integer", delimiter.join(fields))
                return
            extra = None
            if extra_idx:
                extra = extra_json({names[i]: fields[i].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                                    for i in extra_idx})
            out.add(index, url=url, text=text, uid=fields[iuid] if iuid is not None else None,
                    width=w, height=h, extra=extra)

        if pending is not None:
            handle(*pending)
        for rec in records:
            handle(*rec)
            if out.full():
                yield from iter_flush(out)
        yield from iter_flush(out)
