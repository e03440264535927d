"""What every reader produces: "raw" Arrow batches, one row per input record.

A reader turns one input file (or a slice of one) into batches of ``RAW_SCHEMA``. A row
whose ``reason`` is set could not be read (malformed line, wrong type, undecodable text...)
and becomes a reject; the ingest stage validates and normalises the rest. Whole-file
problems (corrupt file, missing column) raise ``InputFileError`` naming the file.
"""

from __future__ import annotations

import base64
import json
import math
import re
from decimal import Decimal
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import pyarrow as pa

RAW_SCHEMA = pa.schema([
    pa.field("source_row", pa.int64(), nullable=False),
    pa.field("url", pa.string()),
    pa.field("text", pa.string()),
    pa.field("uid", pa.string()),
    pa.field("original_width", pa.int64()),
    pa.field("original_height", pa.int64()),
    pa.field("extra", pa.string()),
    pa.field("reason", pa.string()),
    pa.field("detail", pa.string()),
    pa.field("raw", pa.string()),
])

RAW_MAX_CHARS = 2000
IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}

# Every reason a row of the rejects table can carry (schemas/rejects.yaml lists the same
# codes; a test checks both against the code). Readers and the ingest stage use only these.
REJECT_REASONS = {
    "malformed_record": "the record cannot be parsed (bad JSON, wrong field count, unterminated quote, "
                        "a tar member whose JSON is not an object)",
    "wrong_type": "a field has the wrong type (url/caption/uid not a string, width/height not an integer)",
    "text_not_utf8": "url, caption or another text column is not valid UTF-8 (bad bytes, lone surrogates)",
    "empty_url": "the url is empty or missing",
    "url_too_long": "the url is longer than the ingest limit (--max-url-chars)",
    "url_control_character": "the url holds a control character (NUL, tab, newline, DEL, C1 controls)",
    "missing_text": "the caption is missing (null), or an image has no readable caption file",
    "text_too_long": "the caption (or a tar text/json member) is longer than the ingest limit (--max-text-chars)",
    "invalid_uid": "a given uid is not 32 hex characters",
    "invalid_size": "a stated width/height is not a positive image size",
    "unsafe_member_path": "a tar member or image path could leave its folder (absolute, or with '..')",
    "duplicate_member_key": "a WebDataset sample key (or one member of it) repeats in the same tar; the first copy is used",
    "missing_image": "an image folder row names no image, or an image file that does not exist",
    "unreadable_image": "an image folder image that cannot be opened as an image",
}

# Column names tried, in order, when the user maps none.
URL_CANDIDATES = ("url", "URL", "image_url", "img_url", "imageurl", "link")
TEXT_CANDIDATES = ("text", "TEXT", "caption", "CAPTION", "alt", "alt_text", "title", "description")
UID_CANDIDATES = ("uid", "UID")
WIDTH_CANDIDATES = ("original_width", "width", "WIDTH")
HEIGHT_CANDIDATES = ("original_height", "height", "HEIGHT")


@dataclass(frozen=True)
class ColumnMap:
    """Which input column holds what; None means: detect from the candidate names."""

    url: str | None = None
    text: str | None = None
    uid: str | None = None
    width: str | None = None
    height: str | None = None
    image: str | None = None  # image-folder captions file: column naming the image file

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ReaderOptions:
    columns: ColumnMap = field(default_factory=ColumnMap)
    header: str = "auto"          # csv/tsv: yes | no | auto
    batch_size: int = 65536
    image_root: str | None = None  # image folders: where image files are
    captions: str | None = None    # image folders: captions file
    exclude: list[str] = field(default_factory=list)  # folders never read (the output dataset)

    def to_dict(self) -> dict:
        d = asdict(self)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "ReaderOptions":
        d = dict(d)
        d["columns"] = ColumnMap(**d.get("columns", {}))
        return cls(**d)


def pick(names: list[str], wanted: str | None, candidates: tuple[str, ...]) -> str | None:
    """The mapped column if given (must exist), else the first candidate present."""
    if wanted is not None:
        return wanted if wanted in names else None
    for c in candidates:
        if c in names:
            return c
    return None


def _json_default(v: Any):
    if isinstance(v, (bytes, bytearray, memoryview)):
        return {"base64": base64.b64encode(bytes(v)).decode("ascii")}
    return str(v)


def _finite(v: Any):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_finite(x) for x in v]
    return v


def extra_json(row: dict) -> str | None:
    """JSON text of a row's extra columns (bytes as base64, NaN/inf as null); None if empty."""
    if not row:
        return None
    try:
        return json.dumps(row, ensure_ascii=False, allow_nan=False, default=_json_default)
    except ValueError:
        return json.dumps(_finite(row), ensure_ascii=False, allow_nan=False, default=_json_default)


def clip_raw(value: Any) -> str | None:
    """A bounded, printable rendering of a raw value for the rejects table."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        s = bytes(value[: RAW_MAX_CHARS * 4]).decode("utf-8", errors="backslashreplace")
    elif isinstance(value, str):
        s = value[: RAW_MAX_CHARS * 2].encode("utf-8", errors="backslashreplace").decode("utf-8")
    else:
        s = repr(value)
    return s[:RAW_MAX_CHARS]


class RawBuilder:
    """Accumulates raw rows column-wise and emits RAW_SCHEMA batches."""

    __slots__ = ("batch_size", "cols")

    def __init__(self, batch_size: int = 65536):
        self.batch_size = batch_size
        self.cols: dict[str, list] = {n: [] for n in RAW_SCHEMA.names}

    def __len__(self) -> int:
        return len(self.cols["source_row"])

    def add(self, source_row: int, url=None, text=None, uid=None, width=None, height=None,
            extra=None) -> None:
        c = self.cols
        c["source_row"].append(source_row)
        c["url"].append(url)
        c["text"].append(text)
        c["uid"].append(uid)
        c["original_width"].append(width)
        c["original_height"].append(height)
        c["extra"].append(extra)
        c["reason"].append(None)
        c["detail"].append(None)
        c["raw"].append(None)

    def reject(self, source_row: int, reason: str, detail: str, raw: Any = None) -> None:
        assert reason in REJECT_REASONS, f"unregistered reject reason {reason!r}"
        c = self.cols
        c["source_row"].append(source_row)
        for n in ("url", "text", "uid", "original_width", "original_height", "extra"):
            c[n].append(None)
        c["reason"].append(reason)
        c["detail"].append(detail)
        c["raw"].append(clip_raw(raw))

    def full(self) -> bool:
        return len(self) >= self.batch_size

    def flush(self) -> pa.RecordBatch | None:
        if not len(self):
            return None
        try:
            batch = pa.RecordBatch.from_pydict(self.cols, schema=RAW_SCHEMA)
        except UnicodeEncodeError:  # a lone surrogate somewhere (JSON escapes, tar names): rare
            _reject_unencodable(self.cols)
            batch = pa.RecordBatch.from_pydict(self.cols, schema=RAW_SCHEMA)
        self.cols = {n: [] for n in RAW_SCHEMA.names}
        return batch


def encodable(s: str) -> bool:
    """Whether ``s`` is valid Unicode text (no lone surrogates), i.e. can be stored as UTF-8."""
    if s.isascii():
        return True
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def first_surrogate(s: str) -> str:
    return next((f"U+{ord(ch):04X}" for ch in s if 0xD800 <= ord(ch) <= 0xDFFF), "?")


def _reject_unencodable(cols: dict[str, list]) -> None:
    """Turn rows whose url/caption/uid/extra text holds a lone surrogate into
    ``text_not_utf8`` rejects (in place); escape such characters in details."""
    for i in range(len(cols["source_row"])):
        bad = next((n for n in ("url", "text", "uid", "extra")
                    if isinstance(cols[n][i], str) and not encodable(cols[n][i])), None)
        if bad is not None:
            value = cols[bad][i]
            for n in ("url", "text", "uid", "original_width", "original_height", "extra"):
                cols[n][i] = None
            cols["reason"][i] = "text_not_utf8"
            column = {"text": "caption", "extra": "an extra column"}.get(bad, bad)
            cols["detail"][i] = (f"{column} holds a lone surrogate {first_surrogate(value)} "
                                 "(not valid Unicode text)")
            cols["raw"][i] = clip_raw(value)
        for n in ("detail", "raw"):
            v = cols[n][i]
            if isinstance(v, str) and not encodable(v):
                cols[n][i] = v.encode("utf-8", "backslashreplace").decode("utf-8")


_INT64_MIN, _INT64_MAX = -(1 << 63), (1 << 63) - 1
_SIGNED_DIGITS = re.compile(r"[+-]?[0-9]+")  # ASCII only: str.isdigit() also takes '²' and '①'
# a decimal number as pandas and spreadsheets write an integer column with gaps ("200.0", "2e2")
_SIGNED_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_PAST_INT64 = 1 << 64  # what a size too large for any image stands for (judged invalid_size)


def as_int(v: Any) -> tuple[int | None, bool]:
    """(value, ok) for a width/height field: ints, integral floats and decimals, and (signed)
    ASCII decimal strings of an integer ("200", "200.0", "2e2") pass; NaN and empty are unknown
    (None, ok). The value may be past int64."""
    if v is None or v == "":
        return None, True
    if isinstance(v, bool):
        return None, False
    if isinstance(v, float):
        if math.isnan(v):
            return None, True  # pandas' missing value
        if not (math.isfinite(v) and v.is_integer()):
            return None, False  # inf or a fraction
        return int(v), True
    if isinstance(v, str):
        s = v.strip()
        if s == "":
            return None, True
        if _SIGNED_DIGITS.fullmatch(s):
            return int(s), True
        if not _SIGNED_DECIMAL.fullmatch(s):
            return None, False
        v = Decimal(s)
    if isinstance(v, Decimal):
        if v.is_nan():
            return None, True
        if not v.is_finite() or v != v.to_integral_value():
            return None, False
        # exact, without building an integer of the exponent's digits ("1e999999999")
        return (int(v) if v.adjusted() < 30 else _PAST_INT64 * (-1 if v < 0 else 1)), True
    return (v, True) if isinstance(v, int) else (None, False)


def stated_size(width: Any, height: Any) -> tuple[int | None, int | None, tuple[str, str] | None]:
    """(width, height, problem) of a record's stated size fields. ``problem`` is a reject's
    (reason, detail) when either is not an integer (``wrong_type``) or is past int64
    (``invalid_size``: no image is that large, and the table's column could not hold it); the
    ingest stage judges the rest (positive, within --max-size)."""
    (w, okw), (h, okh) = as_int(width), as_int(height)
    if not (okw and okh):
        return None, None, ("wrong_type", "width/height is not an integer")
    if any(v is not None and not _INT64_MIN <= v <= _INT64_MAX for v in (w, h)):
        return None, None, ("invalid_size", "stated width/height is not a positive image size")
    return w, h, None


def shown_columns(names: list[str], most: int = 20, width: int = 40) -> str:
    """A file's column names for a one-line error: at most ``most`` of them, each cut to
    ``width`` characters (a header that swallowed the file must not print the file)."""
    shown = [n if len(n) <= width else n[:width] + "..." for n in names[:most]]
    more = f" and {len(names) - most:,} more" if len(names) > most else ""
    return f"{shown!r}{more}"


def iter_flush(builder: RawBuilder) -> Iterator[pa.RecordBatch]:
    b = builder.flush()
    if b is not None:
        yield b
