"""Parquet pools: generic url/caption tables, DataComp metadata, img2dataset's per-shard Parquet."""

from __future__ import annotations

from typing import Iterator

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from curate.errors import InputFileError
from curate.readers.base import (HEIGHT_CANDIDATES, RAW_SCHEMA, TEXT_CANDIDATES, UID_CANDIDATES,
                                 URL_CANDIDATES, WIDTH_CANDIDATES, ReaderOptions, as_int, clip_raw, extra_json,
                                 pick, shown_columns)

_STRINGISH = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
_INT64_MAX = (1 << 63) - 1
_FLOAT_INT64_MAX = 9.2e18  # below 2**63: larger floats do not fit int64


def _value_type(t: pa.DataType) -> pa.DataType:
    """A dictionary column's value type (pandas' Categorical, a dictionary-encoded string
    column), else the type itself."""
    return t.value_type if pa.types.is_dictionary(t) else t


def _stringish(t: pa.DataType) -> bool:
    """A column that can hold url/caption/uid text: a string or binary type (dictionary-encoded
    too), or the null type pyarrow gives a column with no value at all."""
    return pa.types.is_null(t) or any(f(_value_type(t)) for f in _STRINGISH)


def _decimal_or_text(t: pa.DataType) -> bool:
    """A size column of decimals, or of text as a CSV's is ("200", "200.0")."""
    return pa.types.is_decimal(t) or pa.types.is_string(t) or pa.types.is_large_string(t)


def open_parquet(path: str) -> pq.ParquetFile:
    """A Parquet file, or an object named by URI opened for random access: reading a footer or a
    few row groups fetches those byte ranges, not the object."""
    from curate import storage

    try:
        return pq.ParquetFile(storage.open_input(path))
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise InputFileError(path, f"not a readable Parquet file ({e})") from e


def resolve_columns(path: str, schema: pa.Schema, options: ReaderOptions) -> dict[str, str | None]:
    names = schema.names
    cm = options.columns
    cols = {
        "url": pick(names, cm.url, URL_CANDIDATES),
        "text": pick(names, cm.text, TEXT_CANDIDATES),
        "uid": pick(names, cm.uid, UID_CANDIDATES),
        "width": pick(names, cm.width, WIDTH_CANDIDATES),
        "height": pick(names, cm.height, HEIGHT_CANDIDATES),
    }
    for role, flag in (("url", "--url-col"), ("text", "--text-col")):
        if cols[role] is None:
            asked = getattr(cm, role)
            what = f"column {asked!r} not found" if asked else f"no {role} column found"
            raise InputFileError(path, f"{what}; columns are {shown_columns(names)}; map one with {flag}")
    for role in ("url", "text", "uid"):
        c = cols[role]
        if c is not None and not _stringish(schema.field(c).type):
            raise InputFileError(path, f"column {c!r} ({role}) has type {schema.field(c).type}, expected a string type")
    for role in ("width", "height"):
        c = cols[role]
        t = _value_type(schema.field(c).type) if c is not None else None
        if c is not None and not (pa.types.is_null(t) or pa.types.is_integer(t) or pa.types.is_floating(t)
                                  or _decimal_or_text(t)):
            raise InputFileError(path, f"column {c!r} ({role}) has type {schema.field(c).type}, expected a number "
                                       f"or number text; name another column with --{role}-col")
    return cols


def _to_string(arr: pa.Array, path: str, column: str, offsets: int):
    """Binary -> string; returns (strings, mask of rows whose bytes are not UTF-8)."""
    if pa.types.is_null(arr.type):
        return pa.nulls(len(arr), pa.string()), None
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    if pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type):
        try:  # Parquet does not check that strings are UTF-8: a writer may have stored any bytes
            arr.validate(full=True)
            return arr.cast(pa.string()), None
        except pa.ArrowInvalid:
            arr = arr.cast(pa.large_binary() if pa.types.is_large_string(arr.type) else pa.binary())
    try:
        return arr.cast(pa.string()), None
    except pa.ArrowInvalid:
        values, bad = [], []
        for v in arr.to_pylist():
            if v is None:
                values.append(None)
                bad.append(False)
                continue
            try:
                values.append(v.decode("utf-8"))
                bad.append(False)
            except UnicodeDecodeError:
                values.append(None)
                bad.append(True)
        return pa.array(values, pa.string()), pa.array(bad, pa.bool_())


def read_parquet(path: str, options: ReaderOptions, row_groups: list[int] | None = None,
                 first_row: int = 0) -> Iterator[pa.RecordBatch]:
    """Raw batches from ``path`` (optionally only ``row_groups``, whose first row is ``first_row``)."""
    pf = open_parquet(path)
    cols = resolve_columns(path, pf.schema_arrow, options)
    used = {c for c in cols.values() if c is not None}
    # pandas index columns are storage artefacts, not data
    extras = [n for n in pf.schema_arrow.names if n not in used and not n.startswith("__index_level_")]
    row = first_row
    try:
        batches = pf.iter_batches(batch_size=options.batch_size, row_groups=row_groups)
        for b in batches:
            yield _raw_from_batch(b, cols, extras, row, path)
            row += b.num_rows
    except (pa.ArrowInvalid, pa.ArrowIOError, OSError) as e:
        raise InputFileError(path, f"corrupt Parquet data after row {row} ({e})") from e


def _raw_from_batch(b: pa.RecordBatch, cols: dict, extras: list[str], row0: int, path: str) -> pa.RecordBatch:
    n = b.num_rows
    reason = pa.nulls(n, pa.string())
    detail = pa.nulls(n, pa.string())
    raw = pa.nulls(n, pa.string())

    def col(role):
        c = cols[role]
        return b.column(c) if c is not None else pa.nulls(n, pa.string())

    url, bad_url = _to_string(col("url"), path, cols["url"], row0)
    text, bad_text = _to_string(col("text"), path, cols["text"], row0)
    uid, bad_uid = (_to_string(col("uid"), path, cols["uid"], row0) if cols["uid"] else (pa.nulls(n, pa.string()), None))
    for bad, name in ((bad_url, "url"), (bad_text, "text"), (bad_uid, "uid")):
        if bad is not None and pc.any(bad).as_py():
            reason = pc.if_else(pc.and_(bad, pc.is_null(reason)), "text_not_utf8", reason)
            detail = pc.if_else(pc.and_(bad, pc.is_null(detail)), f"column {cols[name]!r} is not valid UTF-8", detail)
            column = b.column(cols[name])
            if not (pa.types.is_binary(column.type) or pa.types.is_large_binary(column.type)):
                column = column.cast(pa.binary())  # a string column holding non-UTF-8 bytes
            raws = pa.array([clip_raw(v) for v in column.to_pylist()], pa.string())
            raw = pc.if_else(pc.and_(bad, pc.is_null(raw)), raws, raw)

    def size(role):
        """(int64 sizes, [(mask, reason, detail, values given)] of the rows the reader rejects): a value that is
        not an integer (inf, a fraction) is a ``wrong_type``, one past int64 an ``invalid_size``,
        as in the text formats; NaN is unknown (pandas' missing value)."""
        c = cols[role]
        if c is None:
            return pa.nulls(n, pa.int64()), []
        a = b.column(c)
        if pa.types.is_dictionary(a.type):
            a = a.dictionary_decode()
        if pa.types.is_null(a.type):
            return pa.nulls(n, pa.int64()), []
        found, given = [], a
        if pa.types.is_floating(a.type):
            a = pc.if_else(pc.is_nan(a), None, a) if len(a) else a  # NaN -> null
            wrong = pc.fill_null(pc.or_(pc.is_inf(a), pc.not_equal(pc.floor(a), a)), False)
            huge = pc.fill_null(pc.greater(pc.abs(a), _FLOAT_INT64_MAX), False)
        elif _decimal_or_text(a.type):  # judged value by value, as the text formats' fields are
            judged = [as_int(v) for v in a.to_pylist()]
            wrong = pa.array([not ok for _, ok in judged], pa.bool_())
            huge = pa.array([ok and v is not None and not -_INT64_MAX - 1 <= v <= _INT64_MAX for v, ok in judged],
                            pa.bool_())
            a = pa.array([v if ok and v is not None and -_INT64_MAX - 1 <= v <= _INT64_MAX else None
                          for v, ok in judged], pa.int64())
        elif pa.types.is_uint64(a.type):
            wrong, huge = None, pc.fill_null(pc.greater(a, pa.scalar(_INT64_MAX, pa.uint64())), False)
        else:
            return a.cast(pa.int64()), []
        for mask, code, what in ((wrong, "wrong_type", "is not an integer"),
                                 (huge, "invalid_size", "is not a positive image size")):
            if mask is not None and pc.any(mask).as_py():
                found.append((mask, code, f"column {c!r} ({role}) {what}", given))
                a = pc.if_else(mask, None, a)
        return pc.cast(a, pa.int64()), found

    if extras:
        extra, bad_extra = _extra_json_column(b.select(extras))
        if bad_extra is not None:
            bad_now = pc.and_(bad_extra, pc.is_null(reason))
            reason = pc.if_else(bad_now, "text_not_utf8", reason)
            detail = pc.if_else(bad_now, "an extra column is not valid UTF-8", detail)
            extra = pc.if_else(bad_extra, pa.scalar(None, pa.string()), extra)
    else:
        extra = pa.nulls(n, pa.string())
    (width, bad_w), (height, bad_h) = size("width"), size("height")
    for bad, code, message, values in bad_w + bad_h:
        bad_now = pc.and_(bad, pc.is_null(reason))
        reason = pc.if_else(bad_now, code, reason)
        detail = pc.if_else(bad_now, message, detail)
        raw = pc.if_else(pc.and_(bad_now, pc.is_null(raw)), values.cast(pa.string()), raw)
    source_row = pa.array(range(row0, row0 + n), pa.int64())
    return pa.RecordBatch.from_arrays(
        [source_row, url, text, uid, width, height, extra, reason, detail, raw], schema=RAW_SCHEMA)


def _extra_json_column(extras: pa.RecordBatch) -> tuple[pa.Array, pa.Array | None]:
    """JSON text of each row's extra columns; also a mask of rows whose strings are not
    UTF-8 (None when all are), found row by row only in a batch that fails validation."""
    try:
        extras.validate(full=True)
    except pa.ArrowInvalid:
        values, bad = [], []
        for i in range(extras.num_rows):
            row = extras.slice(i, 1)
            try:
                row.validate(full=True)
                values.append(extra_json(row.to_pylist()[0]))
                bad.append(False)
            except pa.ArrowInvalid:
                values.append(None)
                bad.append(True)
        return pa.array(values, pa.string()), pa.array(bad, pa.bool_())
    return pa.array([extra_json(r) for r in extras.to_pylist()], pa.string()), None


def plan_parquet(path: str, target_rows: int, pf: pq.ParquetFile | None = None) -> list[dict]:
    """Split a Parquet file into tasks of whole row groups, about ``target_rows`` each (``pf``:
    the file already opened, so its footer is read once)."""
    pf = pf or open_parquet(path)
    md = pf.metadata
    tasks, groups, first, rows, start = [], [], 0, 0, 0
    for i in range(md.num_row_groups):
        if not groups:
            start = first
        groups.append(i)
        rows += md.row_group(i).num_rows
        first += md.row_group(i).num_rows
        if rows >= target_rows:
            tasks.append({"row_groups": groups, "first_row": start, "rows": rows})
            groups, rows = [], 0
    if groups or not tasks:
        tasks.append({"row_groups": groups or None, "first_row": start, "rows": rows})
    return tasks
