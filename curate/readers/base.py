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
        batch = pa.RecordBatch.from_pydict(self.cols, schema=RAW_SCHEMA)
        self.cols = {n: [] for n in RAW_SCHEMA.names}
        return batch


def as_int(v: Any) -> tuple[int | None, bool]:
    """(value, ok) for a width/height field: ints, integral floats and digit strings pass."""
    if v is None or v == "":
        return None, True
    if isinstance(v, bool):
        return None, False
    if isinstance(v, int):
        return v, True
    if isinstance(v, float):
        if math.isfinite(v) and v.is_integer():
            return int(v), True
        return None, not math.isfinite(v) and math.isnan(v)  # NaN = unknown, inf = bad
    if isinstance(v, str):
        s = v.strip()
        if s.isdigit():
            return int(s), True
        if s == "":
            return None, True
    return None, False


def iter_flush(builder: RawBuilder) -> Iterator[pa.RecordBatch]:
    b = builder.flush()
    if b is not None:
        yield b
