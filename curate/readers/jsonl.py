"""JSON Lines pools: one JSON object per line."""

from __future__ import annotations

import json
from typing import Iterator

import pyarrow as pa

from curate.errors import InputFileError
from curate.readers.base import (HEIGHT_CANDIDATES, TEXT_CANDIDATES, UID_CANDIDATES, URL_CANDIDATES,
                                 WIDTH_CANDIDATES, RawBuilder, ReaderOptions, extra_json, iter_flush,
                                 pick, stated_size)


def read_jsonl(path: str, options: ReaderOptions) -> Iterator[pa.RecordBatch]:
    """source_row is the 0-based line number; blank lines are skipped but keep their number."""
    cm = options.columns
    out = RawBuilder(options.batch_size)
    from curate import storage

    try:  # a URI: the object streamed, never copied
        fh = storage.open_binary(path)
    except OSError as e:
        raise InputFileError(path, f"cannot open ({e.strerror})") from e
    with fh:
        try:
            yield from _read_lines(fh, path, cm, out)
        except OSError as e:  # an I/O error mid-file: one line naming the file
            raise InputFileError(path, f"read error ({e.strerror or e})") from e
    yield from iter_flush(out)


def _read_lines(fh, path: str, cm, out: RawBuilder) -> Iterator[pa.RecordBatch]:
    """Rows of the open file ``fh`` into ``out``, yielding full batches."""
    for lineno, line in enumerate(fh):
        if not line.strip():
            continue
        if lineno == 0 and line.startswith(b"\xef\xbb\xbf"):
            line = line[3:]  # a byte-order mark: not part of the first record
        try:
            s = line.decode("utf-8")
        except UnicodeDecodeError as e:
            out.reject(lineno, "text_not_utf8", f"line {lineno + 1}: not valid UTF-8 ({e.reason} at byte {e.start})", line)
            continue
        try:
            obj = json.loads(s)
        except json.JSONDecodeError as e:
            out.reject(lineno, "malformed_record", f"line {lineno + 1}: invalid JSON ({e.msg})", s)
            continue
        if not isinstance(obj, dict):
            out.reject(lineno, "malformed_record", f"line {lineno + 1}: expected a JSON object, got {type(obj).__name__}", s)
            continue
        names = list(obj)
        url_c = pick(names, cm.url, URL_CANDIDATES)
        text_c = pick(names, cm.text, TEXT_CANDIDATES)
        uid_c = pick(names, cm.uid, UID_CANDIDATES)
        w_c = pick(names, cm.width, WIDTH_CANDIDATES)
        h_c = pick(names, cm.height, HEIGHT_CANDIDATES)
        url = obj.get(url_c) if url_c else None
        text = obj.get(text_c) if text_c else None
        uid = obj.get(uid_c) if uid_c else None
        bad = [n for n, v in (("url", url), ("text", text), ("uid", uid)) if v is not None and not isinstance(v, str)]
        if bad:
            out.reject(lineno, "wrong_type", f"line {lineno + 1}: field(s) {bad} must be strings", s)
            continue
        w, h, problem = stated_size(obj.get(w_c) if w_c else None, obj.get(h_c) if h_c else None)
        if problem:
            out.reject(lineno, problem[0], f"line {lineno + 1}: {problem[1]}", s)
            continue
        used = {url_c, text_c, uid_c, w_c, h_c}
        extra = extra_json({k: v for k, v in obj.items() if k not in used})
        out.add(lineno, url=url, text=text, uid=uid, width=w, height=h, extra=extra)
        if out.full():
            yield from iter_flush(out)
